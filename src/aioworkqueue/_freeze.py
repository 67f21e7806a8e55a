"""Freezing: ``freeze_workqueues`` and ``thaw_workqueues`` (R18).

As in the kernel, a frozen ``WQ.FREEZABLE`` queue link has an effective ``max_active`` of 0: items
queued meanwhile wait on its inactive list, in order, and none is lost; ``freeze_workqueues``
returns once the items that were already active (running, or on a worklist) have finished. Thawing
restores the limit and activates what waited.

Freezing applies to the active runtime's pools, or to the embedded pools when none runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._barrier import new_waiter, wake
from ._errors import WorkqueueDeadlockError, describe
from ._lock import INTR, LOCK, replay
from ._pool import current_worker_work
from ._pwq import FROZEN, FreezeGate, Pwq
from ._runtime import ACTIVE
from ._workqueue import _LEAN_POOLS, _POOLS

if TYPE_CHECKING:
    from ._lean import LeanLink, LeanPool

__all__ = ("freeze_workqueues", "thaw_workqueues")


def _freezable_links() -> list[Pwq]:
    # Context: under LOCK.
    rt = ACTIVE.rt
    pools: list[object] = [*rt.pools, rt.unbound] if rt is not None else list(_POOLS.values())
    return [p for pool in pools for p in pool.pwqs if p.freezable]  # type: ignore[attr-defined]


def _lean_links() -> list[tuple[LeanPool, list[LeanLink]]]:
    # Context: under LOCK (links are added under it). Core v2's pools: the embedded mode only.
    if ACTIVE.rt is not None:
        return []
    out = []
    for pool in list(_LEAN_POOLS.values()):
        links = [lk for lk in list(pool.links) if lk.freezable]
        if links and not pool.dead:
            out.append((pool, links))
    return out


async def freeze_workqueues() -> None:
    """Stop ``WQ.FREEZABLE`` queues from starting new items; wait for their running ones.

    Queued items wait and none is lost; :func:`thaw_workqueues` resumes them.
    Context: a coroutine, not from a work item of a freezable queue.
    """
    cur = current_worker_work()
    if cur is not None and cur[1].freezable:
        raise WorkqueueDeadlockError(
            f"freeze_workqueues: called from {describe(cur[0])} on freezable workqueue "
            f"{cur[1].wq.name!r}, which would wait for itself to finish"
        )
    with LOCK:
        FROZEN.on = True
        links = _freezable_links()
        busy = [p for p in links if p.nr_active]
        for p in links:
            p.max_active = 0
        fut = new_waiter() if busy else None
        if fut is not None:
            gate = FreezeGate(len(busy), fut)
            for p in busy:
                p.freeze_gates.append(gate)
        lean = _lean_links()
    if fut is not None:
        await fut
    for pool, lks in lean:  # Core v2: each pool's loop freezes its links
        await pool.freeze(lks)


def thaw_workqueues() -> None:
    """Let frozen ``WQ.FREEZABLE`` queues start items again, in the order they were queued.

    Context: any (a plain function, as docs/spec.md says).
    """
    with LOCK:
        FROZEN.on = False
        for p in _freezable_links():
            for gate in p.freeze_gates:  # a freeze still waits: it is over, release it
                wake(gate.fut)  # type: ignore[arg-type]
            p.freeze_gates = []
            p.set_max_active(p.limit)
        for pool, lks in _lean_links():
            pool.thaw(lks)
    if INTR.pending:
        replay()
