"""The link between a workqueue and a pool (the kernel's ``pool_workqueue``).

It enforces ``max_active`` (R7): an item queued while the queue already has ``max_active`` items
active in this pool waits on ``inactive`` (FIFO) and is activated when a slot frees. Ordered
queues are ``max_active == 1`` over a single link, so they are strict FIFO (R6).

Owner (tags as in docs/design.md §1): I where set once at construction, else L (changed under
``_lock.LOCK``); each attribute says which.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from . import _state
from ._barrier import wake
from ._errors import describe
from ._flags import WQ
from ._hooks import HOOKS, emit
from ._pool import _remove, may_activate, may_activate_inactive
from ._room import Room
from ._state import DEFERRED, INACTIVE, QUEUED, state_name
from ._work import Work

if TYPE_CHECKING:
    from ._barrier import Epochs
    from ._pool import Pool

__all__ = ("FROZEN", "FreezeGate", "Pwq")


class Workqueue(Protocol):
    """A workqueue (``_workqueue.Workqueue``) as its link sees it: a forward declaration. The
    class sits in the layer above (it makes links, so it imports this module); a link reads
    only these when it is made. Past that, ``Pwq.wq`` is opaque (``Any``) to the layers between:
    each layer that owns a workqueue knows its type."""

    name: str
    flags: WQ
    _room: Room | None


class _Frozen:
    """Whether WQ.FREEZABLE queues are frozen (R18). Owner: LOCK."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = False  # L


FROZEN = _Frozen()


class FreezeGate:
    """What ``freeze_workqueues`` waits on: frozen links that still have active items."""

    __slots__ = ("busy", "fut")

    def __init__(self, busy: int, fut: object) -> None:
        self.busy = busy  # L: links whose nr_active has not reached 0 yet
        self.fut = fut  # I: woken (from any thread, barrier.wake) when busy reaches 0


class Pwq:
    """One workqueue's share of one pool."""

    lean = False  # I: not Core v2's lean link (``_lean.LeanLink``; Work.pending asks)

    __slots__ = (
        "__weakref__",
        "bh",
        "cpu_thread",
        "epochs",
        "freezable",
        "freeze_gates",
        "inactive",
        "limit",
        "loop",
        "max_active",
        "nr_active",
        "nr_cancelled",
        "nr_completed",
        "nr_cpu_hogs",
        "nr_failed",
        "nr_max_active_hits",
        "nr_mayday",
        "nr_queued",
        "nr_rescued",
        "pool",
        "reclaim",
        "room",
        "target",
        "wq",
    )

    def __init__(self, wq: Workqueue, pool: Pool, max_active: int, epochs: Epochs) -> None:
        self.wq: Any = wq  # I
        self.pool = pool  # I
        # I: the pool's event loop (None for a runtime's shared unbound lists).
        self.loop: asyncio.AbstractEventLoop | None = getattr(pool, "loop", None)
        self.epochs = epochs  # I: the workqueue's flush epochs
        self.bh = bool(wq.flags & WQ.BH)  # I
        self.cpu_thread = bool(wq.flags & WQ.CPU_INTENSIVE)  # I
        # I: where active items wait (the list itself: L).
        self.target = pool.bh if self.bh else pool.hi if wq.flags & WQ.HIGHPRI else pool.worklist
        self.limit = max_active  # I: the configured max_active
        self.freezable = bool(wq.flags & WQ.FREEZABLE)  # I
        self.reclaim = bool(wq.flags & WQ.MEM_RECLAIM)  # I: has a rescuer (R19)
        # I: the workqueue's bound (R21), shared by all its links; None: unbounded.
        self.room = wq._room
        if self.reclaim:
            for served_by in getattr(pool, "pools", None) or [pool]:
                served_by.has_reclaim = True
        # L: the effective limit: 0 while frozen (R18), so nothing new becomes active.
        self.max_active = 0 if self.freezable and FROZEN.on else max_active
        # L: freezes waiting for nr_active to reach 0 (several may overlap).
        self.freeze_gates: list[FreezeGate] = []
        self.nr_active = 0  # L: items holding a slot: on the worklist, deferred, or running
        self.inactive: deque[Work] = deque()  # L: items waiting for a slot
        # The counters, all L (stats() reads them under the lock).
        self.nr_queued = 0  # successful queue_* calls that landed here
        self.nr_completed = 0
        self.nr_failed = 0
        self.nr_cancelled = 0
        self.nr_max_active_hits = 0  # items that had to wait for a slot (R7)
        self.nr_mayday = 0  # times a rescuer was started for this link (R19)
        self.nr_rescued = 0  # items a rescuer ran
        self.nr_cpu_hogs = 0  # runs the watchdog saw hold the loop past cpu_intensive_thresh

    def __repr__(self) -> str:
        return f"<Pwq {self.wq.name!r} cpu={self.pool.cpu} active={self.nr_active}>"

    def insert(self, work: Work, direct: bool | None = None) -> None:
        """Queue a pending instance: active if a slot is free, else inactive.

        Context: under LOCK; ``work`` has PENDING set and sits nowhere yet.
        """
        if self.room:  # R21: counted from now until it starts; the callers checked the bound
            self.room.nr += 1
        work._pwq = self
        ep = self.epochs
        work._epoch = ep.cur
        ep.nr_cur += 1
        if may_activate(self):  # R7
            self.nr_active += 1
            _state.activate(work)
            if HOOKS.on:
                emit("workqueue_activate_work", work, self.wq)
            self.target.append(work)
            if self.bh:
                self.pool.arm_bh(direct)
            else:
                self.pool.wake(direct)
        else:
            _state.park_inactive(work)
            self.nr_max_active_hits += 1
            self.inactive.append(work)

    def _release_slot(self) -> None:
        inactive = self.inactive
        if may_activate_inactive(self):  # R7: the slot goes on to the first waiting item
            work = inactive.popleft()
            _state.activate(work)
            if HOOKS.on:
                emit("workqueue_activate_work", work, self.wq)
            self.target.append(work)
            if self.bh:
                self.pool.arm_bh()
            else:
                self.pool.wake()
        else:
            self.nr_active -= 1
            if self.freeze_gates and not self.nr_active:
                gates = self.freeze_gates
                self.freeze_gates = []
                for gate in gates:
                    gate.busy -= 1
                    if not gate.busy:
                        wake(gate.fut)  # type: ignore[arg-type]

    def set_max_active(self, limit: int) -> None:
        """Change the effective limit, activating waiting items up to it. Context: under LOCK."""
        self.max_active = limit
        inactive = self.inactive
        while inactive and may_activate(self):  # R7
            work = inactive.popleft()
            _state.activate(work)
            if HOOKS.on:
                emit("workqueue_activate_work", work, self.wq)
            self.nr_active += 1
            self.target.append(work)
            if self.bh:
                self.pool.arm_bh()
            else:
                self.pool.wake()

    def finish(self, epoch: int, outcome: int) -> None:
        """An instance that held a slot ended: completed (0), failed (1) or cut by a runtime
        shutdown (2). Context: under LOCK."""
        if not outcome:
            self.nr_completed += 1
        elif outcome == 1:
            self.nr_failed += 1
        else:
            self.nr_cancelled += 1
        self._release_slot()
        self.epochs.done(epoch)

    def unqueue(self, work: Work, keep_pending: bool = False) -> None:
        """Take a queued (not armed) pending instance back: it stays PENDING, sitting nowhere,
        with ``keep_pending`` (``steal``: re-armed, R9, or about to be cancelled, R10), else it
        will not run (a stopping pool's deferred instance, R20). Context: under LOCK."""
        st = work._state
        if st & QUEUED:
            _remove(self.target, work)
            self._release_slot()
        elif st & INACTIVE:
            _remove(self.inactive, work)
        elif st & DEFERRED:
            self._release_slot()
        else:
            raise AssertionError(
                f"unqueue: {describe(work)} is not queued (state {state_name(st)})"
            )
        if self.room:  # R21: room frees, for the first waiter if there is one
            self.room.put()
        # Before the epoch's end, which may release a flush on another thread (as in _finish).
        if keep_pending:
            _state.dequeue(work)
        else:
            _state.unqueue(work)
        self.epochs.done(work._epoch)
