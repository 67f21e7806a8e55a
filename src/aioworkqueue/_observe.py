"""Statistics of pools and runtimes, and ``show_state()``: what is busy, as the kernel dumps it.

Everything here reads the counters that the core keeps anyway, under the state lock, when asked;
nothing is measured on the hot path for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._barrier import _WAITERS
from ._lock import LOCK
from ._pool import Pool
from ._runtime import ACTIVE, Runtime
from ._workqueue import _POOLS, Workqueue, WorkqueueStats

__all__ = ("PoolStats", "RuntimeStats", "runtime_stats", "show_state")


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of one worker pool."""

    #: The pool's cpu (0 in the embedded mode).
    cpu: int
    #: Worker tasks alive (rescuers not included).
    workers: int
    #: Workers parked, waiting for items.
    idle: int
    #: Workers running an item right now (rescuers included).
    running: int
    #: Items on the pool's own worklists, waiting for a worker.
    waiting: int
    #: Rescuers running (R19).
    rescuers: int


@dataclass(frozen=True, slots=True)
class RuntimeStats:
    """A snapshot of a runtime: its pools and the workqueues bound to it."""

    #: Pools, by cpu.
    pools: tuple[PoolStats, ...]
    #: Items on the shared WQ.UNBOUND lists.
    unbound_waiting: int
    #: Each workqueue bound to the runtime.
    workqueues: tuple[WorkqueueStats, ...]


def _pool_stats(pool: Pool) -> PoolStats:
    # Context: under LOCK.
    return PoolStats(
        cpu=pool.cpu,
        workers=pool.nr_workers,
        idle=len(pool.idle),
        running=sum(1 for w in pool.workers if w.current is not None),
        waiting=len(pool.hi) + len(pool.worklist) + len(pool.bh),
        rescuers=len(pool.rescuers),
    )


def runtime_stats(rt: Runtime) -> RuntimeStats:
    """Implementation of ``Runtime.stats()``. Context: any."""
    with LOCK:
        pools = tuple(_pool_stats(p) for p in rt.pools if p is not None)
        unbound = len(rt.unbound.hi) + len(rt.unbound.worklist)
        wqs = sorted(rt._wqs, key=lambda q: q.name)
    return RuntimeStats(
        pools=pools, unbound_waiting=unbound, workqueues=tuple(q.stats() for q in wqs)
    )


def _pools_now() -> list[Pool]:
    rt = ACTIVE.rt
    if rt is not None:
        return [p for p in rt.pools if p is not None]
    return [p for loop, p in _POOLS.items() if not loop.is_closed()]


def show_state() -> str:
    """Return a text dump of busy pools and workqueues, as the kernel prints on a lockup.

    For each pool: its workers and each item running (with its queue); for each workqueue with
    work in flight: what waits, what is armed, and how many flushes wait on it.
    Context: any thread; a snapshot, taken under the state lock.
    """
    lines: list[str] = []
    with LOCK:
        pools = _pools_now()
        queues: dict[int, Workqueue] = {}
        for pool in pools:
            st = _pool_stats(pool)
            lines.append(
                f"pool cpu={st.cpu}: workers={st.workers} idle={st.idle} running={st.running} "
                f"waiting={st.waiting} rescuers={st.rescuers}"
            )
            for worker in sorted(pool.workers, key=id):
                if worker.current is not None and worker.pwq is not None:
                    lines.append(
                        f"  running {worker.current!r} on workqueue {worker.pwq.wq.name!r}"
                    )
            for pwq in pool.pwqs:
                queues[id(pwq.wq)] = pwq.wq
        rt = ACTIVE.rt
        if rt is not None:
            for wq in rt._wqs:
                queues[id(wq)] = wq
        flushers = {key: len(wq._epochs.flushers) for key, wq in queues.items()}
        waiters = len(_WAITERS)
    for key, wq in sorted(queues.items(), key=lambda kv: kv[1].name):
        s = wq.stats()
        if s.in_flight or s.armed or flushers[key]:
            lines.append(
                f"workqueue {wq.name!r}: in_flight={s.in_flight} pending={s.pending} "
                f"running={s.running} armed={s.armed} flushers={flushers[key]}"
            )
    if waiters:
        lines.append(f"work items waited on by flush_work/cancel_*_sync: {waiters}")
    return "\n".join(lines) if lines else "aioworkqueue: no pool"
