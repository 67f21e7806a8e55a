"""Flushing: ``flush_work``, ``flush_delayed_work``, ``flush_workqueue``, ``drain_workqueue``,
``destroy_workqueue``.

Each waits on a barrier from ``_barrier.py`` and checks first that it is not waiting for its own
caller (R15): a work item that flushes its own queue, itself, or an item queued behind it in an
ordered queue would wait forever, so those raise :class:`WorkqueueDeadlockError` at once.
"""

from __future__ import annotations

from typing import Any

from ._barrier import WAIT_PENDING, WAIT_RUNNING, add_waiter
from ._errors import WorkqueueDeadlockError, WorkqueueError, describe
from ._lean import TABLE, pool_of, serves
from ._lock import INTR, LOCK, replay
from ._pool import current_worker_work
from ._timer import fire_now
from ._work import ARMED, FORMS, PENDING, RUNNING, DelayedWork, Work, check_delayed, check_work
from ._workqueue import (
    _DESTROYED,
    _DESTROYING,
    _DRAIN_UNIT,
    WQ_FORMS,
    Workqueue,
    check_workqueue,
    revive,
)

__all__ = (
    "destroy_workqueue",
    "drain_workqueue",
    "flush_delayed_work",
    "flush_work",
    "flush_workqueue",
)


def _not_from_own_queue(call: str, wq: Workqueue) -> None:
    cur = current_worker_work()
    if cur is not None and cur[1].wq is wq:
        raise WorkqueueDeadlockError(
            f"{call}: {describe(cur[0])} runs on workqueue {wq.name!r} and would wait for itself"
        )


async def flush_work(work: Work) -> bool:
    """Wait until the instance of ``work`` that is pending or running now has finished (R12).

    If it is running and pending, waits for the pending instance too. An armed DelayedWork
    that is not running is not waited for (the timer is not fired): use flush_delayed_work.
    Context: a coroutine, on any event loop.
    Returns: True if it waited; False if the work was idle (or only armed).
    Raises: WorkqueueDeadlockError if only the caller's own end could satisfy it (R15).
    """
    check_work("flush_work", work)
    cur = current_worker_work()
    if serves(work):
        return await _lean_flush_work(work, cur)
    with LOCK:
        st = work._state
        if st & PENDING and not st & ARMED:
            mode = WAIT_PENDING
        elif st & RUNNING:
            mode = WAIT_RUNNING
        else:
            return False
        if cur is not None:
            own, own_pwq = cur
            if own is work:
                raise WorkqueueDeadlockError(f"flush_work: {describe(work)} would wait for itself")
            if mode == WAIT_PENDING and work._pwq is own_pwq and own_pwq.max_active == 1:
                raise WorkqueueDeadlockError(
                    f"flush_work: {describe(work)} is queued behind the caller {describe(own)} "
                    "on workqueue "
                    f"{own_pwq.wq.name!r} (max_active 1) and cannot start before it ends"
                )
        fut = add_waiter(work, mode)
    await fut
    return True


async def _lean_flush_work(work: Work, cur: tuple[Work, Any] | None, fire: bool = False) -> bool:
    """flush_work (or, ``fire``, flush_delayed_work) on Core v2's lean pool: wait for the
    pending instance's token, or else the running one's (a pending instance of a running item
    starts after that run, R3). From any loop: the pool's loop registers the wait."""
    pool = pool_of(work)
    if pool is None:
        return False
    link: Any = work._pwq
    tok = TABLE.pending(work)
    armed = tok is not None and id(tok) in link.armed
    if armed and not fire:
        tok = None  # only armed: not waited for (docs/spec.md), its timer is not fired
    if cur is not None:
        own, own_link = cur
        if own is work:
            raise WorkqueueDeadlockError(f"flush_work: {describe(work)} would wait for itself")
        if tok is not None and own_link is not None and own_link.max_active == 1:
            name = own_link.wq.name
            if work._pwq is own_link:
                raise WorkqueueDeadlockError(
                    f"flush_work: {describe(work)} is queued behind the caller {describe(own)} "
                    f"on workqueue {name!r} (max_active 1) and cannot start before it ends"
                )
    if armed and tok is not None:
        await pool.fire_now(link, tok)  # queued now (if its timer did not come first)
    # The instance pending at the call (True, even if it ran already) and the run in progress.
    return await pool.wait_item(work, tok)


async def flush_delayed_work(dwork: DelayedWork) -> bool:
    """Queue an armed ``dwork`` at once, then :func:`flush_work` it (R12).

    Context: a coroutine. Returns: True if it waited. Raises: as :func:`flush_work`.
    """
    check_delayed("flush_delayed_work", dwork)
    if serves(dwork):
        return await _lean_flush_work(dwork, current_worker_work(), fire=True)
    with LOCK:
        revive(dwork)
        if dwork._state & ARMED:
            fire_now(dwork)
    if INTR.pending:
        replay()
    return await flush_work(dwork)


async def flush_workqueue(wq: Workqueue) -> None:
    """Wait for every item queued on ``wq`` before the call (R13).

    Items queued afterwards and armed timers are not waited for, so it returns even while other
    code keeps queueing.
    Context: a coroutine, on any event loop; not from a work item of ``wq``.
    Raises: WorkqueueDeadlockError when called from a work item of ``wq`` (R15).
    """
    call = "flush_workqueue"
    check_workqueue(call, wq)
    _not_from_own_queue(call, wq)
    if wq._v2:
        link = wq._lean
        if link is not None and not link.pool.dead:
            await link.pool.flush(link)
        return
    with LOCK:
        fut = wq._epochs.start_flush()
    if fut is not None:
        await fut


async def _drain(call: str, wq: Workqueue, fire_timers: bool) -> None:
    with LOCK:
        wq._status += _DRAIN_UNIT
    if wq._v2:
        try:
            link = wq._lean
            if fire_timers and link is not None and not link.pool.dead:
                await link.pool.fire_now(link, None)
            while link is not None and not link.pool.dead and link.in_flight() > 0:
                await link.pool.flush(link)
        finally:
            with LOCK:
                wq._status -= _DRAIN_UNIT
        return
    try:
        while True:
            with LOCK:
                if fire_timers:
                    for dwork in list(wq._armed.values()):
                        fire_now(dwork)
                fut = wq._epochs.start_flush() if wq._epochs.total else None
            if INTR.pending:
                replay()
            if fut is None:
                return
            await fut
    finally:
        with LOCK:
            wq._status -= _DRAIN_UNIT


async def drain_workqueue(wq: Workqueue) -> None:
    """Wait until ``wq`` is empty (R14). Armed timers are not waited for.

    Meanwhile only work running on ``wq`` may queue onto it (chained work); anyone else gets
    WorkqueueDrainingError, so nothing is dropped silently. A timer that fires meanwhile is
    queued normally.
    Context: a coroutine; not from a work item of ``wq``.
    Raises: WorkqueueDeadlockError when called from a work item of ``wq`` (R15).
    """
    call = "drain_workqueue"
    check_workqueue(call, wq)
    _not_from_own_queue(call, wq)
    await _drain(call, wq, fire_timers=False)


async def destroy_workqueue(wq: Workqueue) -> None:
    """Fire armed delayed items at once, drain ``wq``, then reject all queueing on it (R14).

    A second call (or one made while the first runs) returns at once.
    Context: a coroutine; not from a work item of ``wq``.
    Raises: WorkqueueDeadlockError when called from a work item of ``wq`` (R15);
    WorkqueueError for a system workqueue.
    """
    call = "destroy_workqueue"
    check_workqueue(call, wq)
    if wq._system:
        raise WorkqueueError(f"{call}: workqueue {wq.name!r} is a system workqueue")
    _not_from_own_queue(call, wq)
    with LOCK:
        if wq._status & (_DESTROYED | _DESTROYING):
            return
        wq._status |= _DESTROYING
    try:
        await _drain(call, wq, fire_timers=True)
    except BaseException:
        with LOCK:
            wq._status &= ~_DESTROYING
        raise
    with LOCK:
        wq._status = (wq._status & ~_DESTROYING) | _DESTROYED
        for pwq in wq._links():
            if pwq in pwq.pool.pwqs:
                pwq.pool.pwqs.discard(pwq)
        if wq._lean is not None:
            wq._lean.pool.links.discard(wq._lean)
        executor = wq._executor
        wq._executor = None
    if executor is not None:
        executor.shutdown(wait=False)


# The method forms ``await work.flush()`` (``_work.py``) and ``await wq.flush()``, ``drain()``,
# ``destroy()`` (``_workqueue.py``) call these.
FORMS.flush_work = flush_work
FORMS.flush_delayed_work = flush_delayed_work
WQ_FORMS.flush_workqueue = flush_workqueue
WQ_FORMS.drain_workqueue = drain_workqueue
WQ_FORMS.destroy_workqueue = destroy_workqueue
