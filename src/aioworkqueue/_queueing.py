"""Queueing: ``queue_work*``, ``queue_delayed_work*``, ``mod_delayed_work*`` and ``submit``.

All of them are synchronous, O(1) and callable from any thread and any synchronous callback.
Each is one short section under ``_lock.LOCK``: test the pending bit (R1), set it, and either put
the item on its queue or arm its timer.

From interrupt context that interrupted our own section (see ``_lock.py``) a queue call cannot
touch state. It answers from what it sees — False if the item is pending or disabled, or was
queued by an earlier interrupt-context call — and records a replay that runs when the section
releases the lock. The replay is a normal queue, except in one race::

    interrupted section                       signal handler
    ───────────────────                       ──────────────
    queue_work(wq, w): sees w idle
                       ◀── signal ──▶         queue_work(wq, w): sees w idle → True, recorded
    sets PENDING, queues w → True
    releases; replay finds w PENDING

Both calls returned True, so both must lead to a run (R4): the replay attaches itself to the
pending instance (bit REDO) and queues w again the moment that instance starts (or is cancelled),
so w runs twice, never concurrently (R2, R3).
"""

from __future__ import annotations

import asyncio
import dis
import heapq
import math
from collections.abc import Callable
from types import FrameType
from typing import Any

from . import _lock, _state
from ._barrier import on_unqueue
from ._errors import (
    WorkqueueDeadlockError,
    WorkqueueDestroyedError,
    WorkqueueError,
    WorkqueueFullError,
    describe,
)
from ._hooks import HOOKS, emit
from ._lean import LeanLink
from ._lock import INTR, LOCK, replay
from ._pending import _RUN
from ._pool import current_worker_work
from ._room import Room, RoomWaiter
from ._state import (
    ARMED,
    ASYNC_FN,
    CALL,
    DISABLE_MASK,
    PENDING,
    QUEUE_ACTIVE,
    QUEUE_ARMED,
    QUEUE_INACTIVE,
    RUNNING,
    check_mark_pending,
)
from ._timer import arm, disarm, next_gen, retime
from ._work import (
    MAX_DELAY,
    DelayedWork,
    Work,
    check_delay,
    check_delayed,
    check_initialised,
    check_work,
    is_async_callable,
)
from ._workqueue import _DESTROYED, WQ_FORMS, Workqueue, check_workqueue, revive

_get_running_loop = asyncio._get_running_loop
_is_owned = LOCK._is_owned  # type: ignore[attr-defined]
_acquire = LOCK.acquire
_release = LOCK.release
_PENDING_RUNNING = PENDING | RUNNING
_PENDING_DISABLED = PENDING | DISABLE_MASK
_current_task = asyncio.current_task
_heappush = heapq.heappush
_ceil = math.ceil

__all__ = (
    "CallWork",
    "mod_delayed_work",
    "mod_delayed_work_on",
    "queue_delayed_work",
    "queue_delayed_work_on",
    "queue_work",
    "queue_work_on",
    "queue_work_wait",
    "submit",
)


def _check_cpu(call: str, cpu: object) -> int:
    if isinstance(cpu, bool) or not isinstance(cpu, int):
        raise TypeError(f"{call}: cpu must be an int, got {describe(cpu)}")
    if cpu < 0:
        raise ValueError(f"{call}: cpu must be >= 0, got {cpu}")
    return cpu


def _check_bh(call: str, wq: Workqueue, work: Work) -> None:
    if work._state & ASYNC_FN and wq._bh:
        raise TypeError(
            f"{call}: workqueue {wq.name!r} is WQ.BH and runs plain functions only; "
            f"{describe(work)} has a coroutine function"
        )


def _full(call: str, wq: Workqueue, work: Work, room: Room) -> WorkqueueFullError:
    """The error of a ``queue_*`` at the bound (R21), to raise before anything changed."""
    return WorkqueueFullError(
        f"{call}: workqueue {wq.name!r} is full ({room.nr} items queued and not started, "
        f"max_pending {room.limit}); await queue_work_wait() to wait for room; {describe(work)}"
    )


def _queue(call: str, wq: Workqueue, work: Work, cpu: int | None, *, over: bool = False) -> bool:
    """Queue ``work`` now; ``over``: even past the bound (R21), for a caller that holds room or
    already answered True. Context: any; not nested."""
    with LOCK:
        if wq._status:
            wq._check_queueable(call, work)
        pwq = wq._pwq
        if cpu is not None or wq._routed or pwq is None or _get_running_loop() is not pwq.loop:
            pwq = wq._link(call, work, cpu)  # first: a rebind resets items stranded on a dead loop
        st = work._state
        if st & _PENDING_RUNNING and work._pwq is not pwq:
            revive(work)  # stranded on a dead loop by another queue? then it is free again
            st = work._state
        if st & _PENDING_DISABLED:
            ok = False
        else:
            if st & ASYNC_FN and wq._bh:
                _check_bh(call, wq, work)
            room = pwq.room
            if room and not over and room.nr >= room.limit:
                raise _full(call, wq, work, room)
            _state.mark_pending(work)
            if HOOKS.on:
                emit("workqueue_queue_work", work, wq, cpu, pwq.pool.cpu)
            pwq.insert(work)
            pwq.nr_queued += 1
            ok = True
    if INTR.pending:
        replay()
    return ok


def _queue_delayed(
    call: str,
    wq: Workqueue,
    dwork: DelayedWork,
    delay: float,
    cpu: int | None,
    *,
    over: bool = False,
) -> bool:
    """Arm ``dwork`` (or queue it now when ``delay`` is 0; ``over``: as in :func:`_queue`).

    Context: any; not nested."""
    with LOCK:
        if wq._status:
            wq._check_queueable(call, dwork)
        pwq = wq._link(call, dwork, cpu)
        st = dwork._state
        if st & _PENDING_RUNNING and dwork._pwq is not pwq:
            revive(dwork)
            st = dwork._state
        if st & _PENDING_DISABLED:
            ok = False
        else:
            _check_bh(call, wq, dwork)
            room = pwq.room
            # Arming adds nothing to what the bound counts: only a queue now is refused (R21).
            if room and not delay and not over and room.nr >= room.limit:
                raise _full(call, wq, dwork, room)
            _state.mark_pending(dwork)
            if HOOKS.on:
                emit("workqueue_queue_work", dwork, wq, cpu, pwq.pool.cpu)
            if delay:
                arm(dwork, pwq, delay)
            else:
                pwq.insert(dwork)
            pwq.nr_queued += 1
            ok = True
    if INTR.pending:
        replay()
    return ok


def _queue_nested(
    call: str, wq: Workqueue, work: Work, cpu: int | None, delay: float | None
) -> bool:
    """Queue from interrupt context that interrupted our own section (see module docstring)."""
    if wq._status & _DESTROYED:
        raise WorkqueueDestroyedError(
            f"{call}: workqueue {wq.name!r} was destroyed; {describe(work)}"
        )
    _check_bh(call, wq, work)
    shadow = INTR.shadow
    key = id(work)
    pred = INTR.pred.get(key)  # set by an interrupt-context cancel / disable / enable before us
    if (work._state if pred is None else pred) & _PENDING_DISABLED or key in shadow:
        return False
    room = wq._room
    if room is not None and not delay:
        # R21, the same test as anywhere, on the count as it is plus the queues this
        # interruption already answered True for (kept in the shadow under the room's negated
        # id, which no work's id can be). The replay queues even if the section we interrupted
        # took the last room: it answered True, so it may exceed the bound by that one.
        rkey = -id(room)
        n = shadow.get(rkey, 0)
        if room.nr + n >= room.limit:
            raise _full(call, wq, work, room)
        shadow[rkey] = n + 1
    shadow[key] = 1
    if pred is not None:
        INTR.pred[key] = pred | PENDING

    def again() -> None:
        if work._state & DISABLE_MASK:
            # Disabled by the very section we interrupted, after we looked: report, never drop.
            with LOCK:
                pwq = wq._pwq
                if pwq is not None:
                    pwq.nr_cancelled += 1
            _lock._log.error("%s: %r was disabled before it could be queued; cancelled", call, work)
        elif work._state & PENDING:
            _lock.add_redo(work, again)
        elif delay is None:
            _queue(call, wq, work, cpu, over=True)
        else:
            _queue_delayed(call, wq, work, delay, cpu, over=True)  # type: ignore[arg-type]

    _lock.record(again)
    return True


def queue_work(wq: Workqueue, work: Work) -> bool:
    """Queue ``work`` on ``wq``.

    Context: any — a coroutine, a loop callback, a signal handler or another thread; never blocks.
    Returns: True if it was queued; False if it was already pending (R1) or is disabled.
    Raises: TypeError for wrong types; WorkqueueError if ``wq`` was destroyed, is draining (and
    the caller is not its own work) or has no event loop to run on.
    """
    if type(wq) is not Workqueue:
        check_workqueue("queue_work", wq)
    if not isinstance(work, Work):
        check_work("queue_work", work)
    if wq._v2:
        # Core v2 (_lean.py): the common case inline, as LeanPool.queue does it: a bound, live,
        # unbounded queue, on its loop's thread, an item whose last instance ran. On the loop's
        # own thread its end (which sets lp.dead) cannot come between the test and the append.
        link = wq._lean
        if link is not None and not (wq._status or link.limit):
            lp = link.pool
            t = work._tok
            if (
                _get_running_loop() is lp.loop
                and not lp.dead
                and t is not None
                and len(t) == 2
                and t[1] is _RUN
            ):
                n: list[Any] = [work]
                t.append(n)  # the step that decides (_pending.PendingTable._link)
                if t[2] is n:
                    work._tok = n
                    next(link.queued)
                    work._pwq = link  # W: before the append makes the token visible
                    link.q.append((n, link))
                    if lp.sleeping:
                        lp.wake()
                    return True
                n[0] = None  # lost: the general path walks on from the winner
        return _lean_queue("queue_work", wq, work, False)
    if _is_owned():
        return _queue_nested("queue_work", wq, work, None, None)
    try:  # free on 3.11+ unless raised
        pwq = wq._pwq
        running = _get_running_loop()
        if pwq is not None and (running is pwq.loop or running is None):
            # The common cases inline, doing what _queue + Pwq.insert do in the same order: the
            # queue is bound to the caller's loop, or (embedded mode) the caller is a thread
            # with no loop, which hands off to the bound loop. Anything else takes _queue.
            res = None  # None: not decided here, take _queue
            try:
                _acquire()  # in the try: an exception right after it still releases
                remote = running is None  # the caller is not on the pool's loop thread
                st = work._state
                if (
                    not (wq._status or wq._routed or pwq.bh or HOOKS.on)
                    and (work._pwq is pwq or not st & _PENDING_RUNNING)  # no revive
                    # R20: a thread may hand off only to a loop that turns (stopped: _link raises)
                    and (not remote or pwq.loop.is_running())  # type: ignore[union-attr]
                ):
                    pool = pwq.pool
                    if st & _PENDING_DISABLED:  # R1
                        res = False
                    else:
                        res = True
                        # The transitions inline (_state.py): mark_pending, then activate or
                        # park_inactive; one check, of the state they start from.
                        if _state.DEBUG:
                            check_mark_pending(work, st)
                            room = pwq.room
                            if not (room and room.nr >= room.limit):  # not refused just below
                                _state.shadow_pend("queue_work", work, st)
                        if pwq.room:  # R21 (Pwq.insert, inline): unbounded, this test only
                            room = pwq.room
                            if room.nr >= room.limit:
                                raise _full("queue_work", wq, work, room)
                            room.nr += 1
                        work._pwq = pwq
                        ep = pwq.epochs
                        work._epoch = ep.cur
                        ep.nr_cur += 1
                        pwq.nr_queued += 1
                        if pwq.nr_active < pwq.max_active:  # _pool.may_activate, inline (R7)
                            work._state = st | QUEUE_ACTIVE
                            pwq.nr_active += 1
                            pwq.target.append(work)
                            if pool.nr_waking:
                                pass  # a worker is on its way
                            elif remote:
                                # Another thread: one coalesced call_soon_threadsafe(_kick)
                                # per burst (design §6, cross-thread hand-off).
                                if not pool.kick_armed:
                                    pool.wake(False)
                            else:
                                idle = pool.idle
                                if (  # may_start_working, from a task on the loop
                                    idle
                                    and not (pool.stopping or pool.dying)
                                    and _current_task(pwq.loop) is not None
                                ):
                                    # Pool._wake_local, inline: from a task the loop is awake;
                                    # the parked worker's future is completed now, so it runs
                                    # in the very turn a call_soon made here would.
                                    worker = idle.pop()
                                    fut = worker.fut
                                    worker.fut = None
                                    if fut is not None and not fut.done():
                                        worker.counted = True
                                        pool.nr_waking += 1
                                        fut.set_result(None)
                                    else:  # cancelled while parked: the general path
                                        pool.wake()
                                else:
                                    pool.wake()
                        else:
                            work._state = st | QUEUE_INACTIVE
                            pwq.nr_max_active_hits += 1
                            pwq.inactive.append(work)
            finally:
                if _is_owned():  # not held on entry (nested calls returned above)
                    _release()
            if res is not None:
                if INTR.pending:
                    replay()
                return res
        return _queue("queue_work", wq, work, None)
    except AttributeError:  # a subclass that skipped Work.__init__: say so
        check_initialised("queue_work", work)
        raise


def _not_shared(call: str, work: Work) -> None:
    """Raise NotImplementedError if the locked core holds ``work`` pending or running: the two
    cores do not share items (docs/design.md §9, Stage A). A lean item never has these bits."""
    if work._state & _PENDING_RUNNING:
        raise NotImplementedError(
            f"{call}: {describe(work)} is pending or running on a queue of the locked core; "
            f"Core v2 (AIOWORKQUEUE_CORE=v2) does not share items with it"
        )


def _lean_queue(call: str, wq: Workqueue, work: Work, fresh: bool) -> bool:
    """queue_work (or, ``fresh``, submit) on a queue of the lean pool (Core v2, ``_lean.py``).

    Context: any, as :func:`queue_work`. The common case takes no lock: the queue is bound,
    live, and the caller is on its loop or hands off to it while it runs.
    """
    # First: a lean item never has these bits. An item the locked core holds pending comes
    # here (its newest token, if any, is a pending shadow one), where it would be queued a
    # second time; the two cores do not share items (docs/design.md §9, Stage A).
    if work._state & _PENDING_RUNNING:  # the test inline: this is the path from a thread
        _not_shared(call, work)
    link = wq._lean
    if link is not None and not wq._status:
        pool = link.pool
        if not pool.dead and (_get_running_loop() is pool.loop or pool.loop.is_running()):
            if fresh:
                pool.submit(link, work)
                return True
            return pool.queue(link, work)
    with LOCK:
        if wq._status:
            wq._check_queueable(call, work)
        link = wq._lean_link(call, work)
    if fresh:
        link.pool.submit(link, work)
        return True
    return link.pool.queue(link, work)


def _lean_bound(call: str, wq: Workqueue, work: Work) -> LeanLink:
    """The lean link to queue ``work`` on: the bound one when it is live and usable from here
    (no lock), else checked and bound under LOCK (as :func:`_lean_queue` inlines it).
    Context: any. Raises: as :meth:`Workqueue._check_queueable` and ``_lean_link``."""
    link = wq._lean
    if link is not None and not wq._status:
        pool = link.pool
        if not pool.dead and (_get_running_loop() is pool.loop or pool.loop.is_running()):
            return link
    with LOCK:
        if wq._status:
            wq._check_queueable(call, work)
        return wq._lean_link(call, work)


async def _lean_queue_wait(call: str, wq: Workqueue, work: Work) -> bool:
    """queue_work_wait on a queue of the lean pool. Context: a coroutine on any loop."""
    if not wq.max_pending:
        return _lean_queue(call, wq, work, False)
    _not_shared(call, work)
    link = _lean_bound(call, wq, work)  # refused anyway: say so now, not after the wait
    cur = current_worker_work()
    own = cur is not None and cur[1] is link and link.max_active == 1  # type: ignore[comparison-overlap]  # a lean worker's link
    return await link.pool.queue_wait(link, work, own)


def _lean_delayed(call: str, wq: Workqueue, dwork: DelayedWork, delay: float, mod: bool) -> bool:
    """queue_delayed_work (or, ``mod``, mod_delayed_work) on a queue of the lean pool.

    Context: any, as :func:`queue_delayed_work`; binding as in :func:`_lean_queue`.
    """
    if not (mod or delay):
        return _lean_queue(call, wq, dwork, False)
    _not_shared(call, dwork)
    link = _lean_bound(call, wq, dwork)
    if mod:
        return link.pool.mod(link, dwork, delay)
    return link.pool.arm(link, dwork, delay)


def _lean_cpu(call: str, wq: Workqueue, work: Work, cpu: int) -> None:
    """Core v2 serves embedded queues only: the one pool is cpu 0 (docs/spec.md)."""
    if cpu != 0:
        raise ValueError(
            f"{call}: no cpu {cpu} in embedded mode (only cpu 0); workqueue {wq.name!r}; "
            f"{describe(work)}"
        )


def queue_work_on(cpu: int, wq: Workqueue, work: Work) -> bool:
    """Queue ``work`` on ``wq`` to run on the pool of ``cpu``.

    Context: any, as :func:`queue_work`. Returns: as :func:`queue_work`.
    Raises: as :func:`queue_work`; ValueError for a cpu with no pool.
    """
    call = "queue_work_on"
    cpu = _check_cpu(call, cpu)
    check_workqueue(call, wq)
    check_work(call, work)
    if wq._v2:
        _lean_cpu(call, wq, work, cpu)
        return _lean_queue(call, wq, work, False)
    if LOCK._is_owned():  # type: ignore[attr-defined]
        return _queue_nested(call, wq, work, cpu, None)
    return _queue(call, wq, work, cpu)


async def queue_work_wait(wq: Workqueue, work: Work) -> bool:
    """Queue ``work`` on ``wq``, first waiting for room if ``wq`` is at its ``max_pending`` bound.

    R1 first: a pending (or disabled) work gives False at once, without waiting. Waiters are
    served in the order they began to wait, and room that frees goes to the first of them, not
    to a ``queue_*`` that does not wait (R21). Cancelled while it waits, it queues nothing; room
    already handed to it goes to the next waiter. On an unbounded queue it is :func:`queue_work`.
    Context: a coroutine, on any event loop (the host's, or a ``Runtime``'s pool loop); the wake
    comes from whichever thread freed the room.
    Returns: True if it queued the work; False if the work was pending or disabled, at the call
    or when room came (the room then goes to the next waiter).
    Raises: as :func:`queue_work` (never WorkqueueFullError); WorkqueueDeadlockError when
    called from an item of ``wq`` whose single link runs one item at a time (an ordered queue):
    nothing queued there could start to make room before the caller ends (R15).
    """
    call = "queue_work_wait"
    check_workqueue(call, wq)
    check_work(call, work)
    if wq._v2:
        return await _lean_queue_wait(call, wq, work)
    room = wq._room
    if room is None:
        return _queue(call, wq, work, None)
    loop = asyncio.get_running_loop()
    waiter: RoomWaiter | None = None
    ok = False
    with LOCK:
        if wq._status:
            wq._check_queueable(call, work)  # refused anyway: say so now, not after the wait
        if room.nr < room.limit:
            ok = _queue(call, wq, work, None)  # in this section: the room cannot go meanwhile
        elif not work._state & _PENDING_DISABLED:
            cur = current_worker_work()
            if (
                cur is not None
                and cur[1].wq is wq
                and wq.max_active == 1
                and wq._links() == [cur[1]]
            ):
                raise WorkqueueDeadlockError(
                    f"{call}: workqueue {wq.name!r} is full and runs one item at a time; waiting "
                    f"from its own item {describe(cur[0])} would never end; {describe(work)}"
                )
            waiter = RoomWaiter(loop.create_future())
            room.waiters.append(waiter)
    if INTR.pending:
        replay()
    if waiter is None:
        return ok
    try:
        await waiter.fut
    except BaseException:
        with LOCK:
            if waiter.granted:
                room.put()  # handed room after all: it goes to the next waiter, never lost
            else:
                try:
                    room.waiters.remove(waiter)
                except ValueError:  # pragma: no cover - skipped by a put() on a closed loop
                    pass
        if INTR.pending:
            replay()
        raise
    with LOCK:
        try:
            ok = _queue(call, wq, work, None, over=True)  # on the room it was handed
        finally:
            # Give the grant back: if it queued, the insert counted the item and nr > limit
            # or no one waits, so this only takes the grant off; if not, the next waiter gets it.
            room.put()
    if INTR.pending:
        replay()
    return ok


def queue_delayed_work(wq: Workqueue, dwork: DelayedWork, delay: float) -> bool:
    """Queue ``dwork`` on ``wq`` after ``delay`` seconds (at once if 0).

    The item never starts earlier than ``delay`` after the call (R8).
    Context: any, as :func:`queue_work`.
    Returns: True if armed (or queued); False if it was already pending or is disabled.
    Raises: as :func:`queue_work`; TypeError / ValueError for a bad delay.
    """
    call = "queue_delayed_work"
    if type(wq) is not Workqueue:
        check_workqueue(call, wq)
    if not isinstance(dwork, DelayedWork):
        check_delayed(call, dwork)
    # An ordinary positive float is what check_delay would return as it is.
    d = (
        delay
        if type(delay) is float and 0.0 < delay <= MAX_DELAY
        else check_delay(call, delay, dwork)
    )
    if wq._v2:
        return _lean_delayed(call, wq, dwork, d, False)
    if _is_owned():
        return _queue_nested(call, wq, dwork, None, d)
    pwq = wq._pwq
    if d and pwq is not None:
        pool = pwq.pool
        loop = pwq.loop
        if _get_running_loop() is loop:
            # The queue's own loop, as in queue_work: arm() inline.
            res = None
            try:
                _acquire()
                st = dwork._state
                if (
                    not (wq._status or wq._routed or pwq.bh or HOOKS.on)
                    and (dwork._pwq is pwq or not st & _PENDING_RUNNING)  # no revive
                ):
                    if st & _PENDING_DISABLED:  # R1
                        res = False
                    else:
                        res = True
                        # _timer.arm, inline: push on the pool's timer heap (the transitions
                        # mark_pending and arm inline, _state.py)
                        if _state.DEBUG:
                            check_mark_pending(dwork, st)
                            _state.shadow_pend("queue_delayed_work", dwork, st)
                        dwork._state = st | QUEUE_ARMED
                        dwork._tpool = pool
                        dwork._pwq = pwq
                        timers = pool.timers
                        t = timers.clock() + d
                        if timers.ms:
                            t = _ceil(t * 1000.0) / 1000.0
                        dwork._deadline = t
                        gen = dwork._tgen = next_gen()
                        wq._armed[id(dwork)] = dwork
                        _heappush(timers.heap, (t, gen, dwork))
                        if t < timers.when:  # the new earliest: the loop timer moves
                            # directly only from a task: the loop is awake (Pool.direct)
                            retime(pool, t, _current_task(loop) is not None)
                        pwq.nr_queued += 1
            except AttributeError:  # a subclass that skipped Work.__init__ (no _state): say so
                check_initialised(call, dwork)
                raise
            finally:
                if _is_owned():  # not held on entry (nested calls returned above)
                    _release()
            if res is not None:
                if INTR.pending:
                    replay()
                return res
    try:
        return _queue_delayed(call, wq, dwork, d, None)
    except AttributeError:  # as above; _state is the first thing it reads of the item
        check_initialised(call, dwork)
        raise


def queue_delayed_work_on(cpu: int, wq: Workqueue, dwork: DelayedWork, delay: float) -> bool:
    """:func:`queue_delayed_work` aimed at the pool of ``cpu``. Context, Returns, Raises: same."""
    call = "queue_delayed_work_on"
    cpu = _check_cpu(call, cpu)
    check_workqueue(call, wq)
    check_delayed(call, dwork)
    d = check_delay(call, delay, dwork)
    if wq._v2:
        _lean_cpu(call, wq, dwork, cpu)
        return _lean_delayed(call, wq, dwork, d, False)
    if LOCK._is_owned():  # type: ignore[attr-defined]
        return _queue_nested(call, wq, dwork, cpu, d)
    return _queue_delayed(call, wq, dwork, d, cpu)


def _mod(call: str, wq: Workqueue, dwork: DelayedWork, delay: object, cpu: int | None) -> bool:
    check_workqueue(call, wq)
    check_delayed(call, dwork)
    d = check_delay(call, delay, dwork)
    if wq._v2:
        if cpu is not None:
            _lean_cpu(call, wq, dwork, cpu)
        return _lean_delayed(call, wq, dwork, d, True)
    if LOCK._is_owned():  # type: ignore[attr-defined]
        raise WorkqueueError(
            f"{call}: called from a signal handler that interrupted aioworkqueue on the same "
            f"thread; queue_*, cancel_*, disable_work and enable_work may be called there, "
            f"not mod_delayed_work; {describe(dwork)}"
        )
    with LOCK:
        if wq._status:
            wq._check_queueable(call, dwork)
        pwq = wq._link(call, dwork, cpu)
        st = dwork._state
        if st & DISABLE_MASK:
            was = False
        else:
            _check_bh(call, wq, dwork)
            was = bool(st & PENDING)
            room = pwq.room
            held = False
            if room is not None and not d:  # R21: it is to be queued now
                if was and not st & ARMED and dwork._pwq is not None and dwork._pwq.room is room:
                    # Queued already, it moves to the tail and keeps its room: hold one more for
                    # the moment, so that the room the steal frees cannot go to a waiter (put()
                    # grants only at nr <= limit); insert counts it again, then the hold goes.
                    room.nr += 1
                    held = True
                elif room.nr >= room.limit:
                    raise _full(call, wq, dwork, room)
            if was:
                steal(dwork)  # it stays PENDING
            else:
                pwq.nr_queued += 1
                if HOOKS.on:
                    emit("workqueue_queue_work", dwork, wq, cpu, pwq.pool.cpu)
                _state.mark_pending(dwork)
            if d:
                arm(dwork, pwq, d)
            else:
                pwq.insert(dwork)
                if room is not None and held:
                    room.nr -= 1
    if INTR.pending:
        replay()
    return was


def steal(work: Work) -> None:
    """Take a pending instance back from its timer or queue; it stays PENDING and sits nowhere.

    Flushers of that instance are released (the kernel's barrier stays in place and is reached).
    Context: under LOCK; ``work`` is pending.
    """
    if work._state & ARMED:
        disarm(work)  # type: ignore[arg-type]
    else:
        pwq = work._pwq
        assert pwq is not None
        pwq.unqueue(work, keep_pending=True)
    on_unqueue(work)


def mod_delayed_work(wq: Workqueue, dwork: DelayedWork, delay: float) -> bool:
    """Re-arm ``dwork`` to ``now + delay`` whether or not it is pending (R9).

    Context: any thread or callback, as :func:`queue_work`, except a signal handler that
    interrupted aioworkqueue itself on the same thread (WorkqueueError; queue_* and cancel_* work
    there).
    Returns: True if it was pending (armed, or queued and not started) and was re-armed;
    False if it was idle (or only running) and is now armed; False if disabled (nothing armed).
    Raises: as :func:`queue_delayed_work`.
    """
    return _mod("mod_delayed_work", wq, dwork, delay, None)


def mod_delayed_work_on(cpu: int, wq: Workqueue, dwork: DelayedWork, delay: float) -> bool:
    """:func:`mod_delayed_work` aimed at the pool of ``cpu``. Context, Returns, Raises: same."""
    call = "mod_delayed_work_on"
    return _mod(call, wq, dwork, delay, _check_cpu(call, cpu))


class CallWork(Work):
    """The item :meth:`Workqueue.submit` makes: it runs ``fn(*args, **kwargs)``.

    Made by ``submit`` only. Its call is readable (``fn``, ``args``, ``kwargs``), so that items
    a shutdown reports unfinished (``running().unfinished``, ``Runtime.shutdown()``) can be
    persisted and submitted again at the next start.
    """

    # No more slots than before: the fresh item of submit() is the memory hot path (<= 100 B).
    __slots__ = ("_args", "_kwargs")

    @property
    def fn(self) -> Callable[..., Any]:
        """The callable that ``submit`` was given. Context: any."""
        return self.func

    @property
    def args(self) -> tuple[Any, ...]:
        """The positional arguments of the call. Context: any."""
        return self._args

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the call, as a new dict (changing it changes nothing).

        Context: any.
        """
        return dict(self._kwargs) if self._kwargs else {}

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None, st: int
    ) -> None:
        self.func = fn
        self._state = st
        self._pwq = None
        self._epoch = 0
        self._tok = None
        self._by = None
        self._args = args
        self._kwargs = kwargs


def submit(
    wq: Workqueue, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> CallWork:
    """Implementation of ``Workqueue.submit``. Context: any, as :func:`queue_work`.

    Returns: the new, queued :class:`CallWork`.
    """
    if not callable(fn):
        raise TypeError(f"submit: fn must be callable, got {fn!r} (workqueue {wq.name!r})")
    st = CALL
    if wq._async_check and is_async_callable(fn):
        st |= ASYNC_FN  # these queues must know before calling; others look at the result
    work = CallWork(fn, args, kwargs or None, st)
    if wq._v2:
        check_workqueue("submit", wq)
        _lean_queue("submit", wq, work, True)
        return work
    if not queue_work(wq, work):  # pragma: no cover - a fresh work is never pending
        raise AssertionError("submit: a fresh work was pending")
    return work


# The method forms ``wq.queue(work)``, ``wq.queue_on()``, ``wq.queue_delayed()``,
# ``wq.mod_delayed()`` and ``wq.submit()`` (``_workqueue.py``) call these.
WQ_FORMS.queue_work = queue_work
WQ_FORMS.queue_work_on = queue_work_on
WQ_FORMS.queue_work_wait = queue_work_wait
WQ_FORMS.queue_delayed_work = queue_delayed_work
WQ_FORMS.mod_delayed_work = mod_delayed_work
WQ_FORMS.submit = submit


# What the rest of an interrupted queueing section does to an item (``_lock.after_section``).
# ``st`` in these functions is the item's state as the section read it; once the section has
# written the item, its state differs from that (PENDING, or where it sits): committed.
def _pred_queue(f: FrameType, work: Work, now: int, st: int, strict: bool) -> int:
    loc = f.f_locals
    if loc.get("work") is not work and loc.get("dwork") is not work:
        return st
    pre = loc.get("st", now)
    if now != pre or pre & PENDING:
        return st | PENDING  # committed, or pending already (a mod steals and re-inserts it)
    if not strict or pre & DISABLE_MASK:
        return st
    code = f.f_code
    wq = loc.get("wq")
    if code is queue_work.__code__ or code is queue_delayed_work.__code__:
        if "res" in loc and loc["res"] is None and "st" in loc and not _fast(loc, work, pre):
            return st  # this section does not queue it: _queue does, after our replay
    elif pre & ASYNC_FN and wq is not None and wq._bh:
        return st  # refused (TypeError)
    elif "st" not in loc and wq is not None and wq._status:
        try:
            wq._check_queueable("", work)  # the section's first test, not made yet (or passed)
        except WorkqueueError:
            return st  # refused: destroyed, draining, ended
    pwq = loc.get("pwq") or (wq._pwq if wq is not None else None)
    room = getattr(pwq, "room", None)
    delay = loc.get("delay", loc.get("d", 0))
    if code is queue_work.__code__ and _INLINE_ROOM_TAKEN[0] <= f.f_lasti < _INLINE_ROOM_TAKEN[1]:
        return st | PENDING  # past the bound's test: the room is counted, the commit follows
    if room is not None and not loc.get("over") and not delay and room.nr >= room.limit:
        return st  # refused: full (R21)
    return st | PENDING


def _fast(loc: dict[str, Any], work: Work, pre: int) -> bool:
    """The inline fast path's test, as queue_work / queue_delayed_work make it."""
    wq, pwq = loc["wq"], loc["pwq"]
    if wq._status or wq._routed or pwq.bh or HOOKS.on:
        return False
    if not (work._pwq is pwq or not pre & _PENDING_RUNNING):
        return False
    return not loc.get("remote") or bool(pwq.loop.is_running())


# The one stretch of queue_work's inline path that its locals do not tell: from the store that
# counts the item in its bound (the first to ``.nr``) to its ``finally`` (the first test of
# ``_is_owned`` after it): tested, counted, and the commit follows.
def _inline_room_taken() -> tuple[int, int]:
    ins = list(dis.get_instructions(queue_work))
    start = next(i.offset for i in ins if i.opname == "STORE_ATTR" and i.argval == "nr")
    end = next(i.offset for i in ins if i.offset > start and i.argval == "_is_owned")
    return start, end


_INLINE_ROOM_TAKEN = _inline_room_taken()

for _fn in (queue_work, _queue, queue_delayed_work, _queue_delayed, _mod):
    _lock.SECTIONS[_fn.__code__] = _pred_queue
_lock.NESTED.add(_queue_nested.__code__)
