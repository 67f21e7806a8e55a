"""Questions about a work item: ``work_pending``, ``work_busy``, ``current_work``."""

from __future__ import annotations

from ._flags import WorkBusy
from ._lean import TABLE, LeanLink
from ._pool import current_worker_work
from ._work import PENDING, RUNNING, DelayedWork, Work, check_delayed, check_work

__all__ = ("current_work", "delayed_work_pending", "work_busy", "work_pending")


def work_pending(work: Work) -> bool:
    """Context: any. Returns: True if ``work`` is pending (queued, armed or deferred)."""
    if type(check_work("work_pending", work)._pwq) is LeanLink:
        return TABLE.is_pending(work)
    return bool(work._state & PENDING)


def delayed_work_pending(dwork: DelayedWork) -> bool:
    """Context: any. Returns: True if ``dwork`` is pending (armed or queued)."""
    if type(check_delayed("delayed_work_pending", dwork)._pwq) is LeanLink:
        return TABLE.is_pending(dwork)
    return bool(dwork._state & PENDING)


def work_busy(work: Work) -> WorkBusy:
    """Context: any. Returns: ``WorkBusy.PENDING`` and/or ``WorkBusy.RUNNING``; a snapshot only."""
    if type(check_work("work_busy", work)._pwq) is LeanLink:
        return work.busy
    st = work._state
    busy = WorkBusy(0)
    if st & PENDING:
        busy |= WorkBusy.PENDING
    if st & RUNNING:
        busy |= WorkBusy.RUNNING
    return busy


def current_work() -> Work | None:
    """Return the work item whose function the caller is running in, or None.

    Works in ``async`` and plain functions, in ``WQ.CPU_INTENSIVE`` worker threads and in
    ``WQ.BH`` callbacks. A task spawned by a work function is not the work item.
    Context: any.
    """
    cur = current_worker_work()
    return None if cur is None else cur[0]
