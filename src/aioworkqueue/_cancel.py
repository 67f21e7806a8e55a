"""Cancelling and disabling: ``cancel_*``, ``cancel_*_sync``, ``disable_work*``, ``enable_work``.

``cancel_work`` takes a pending instance back from wherever it sits (timer, worklist, inactive
list, or deferred behind its own run) in one section (R10). The ``_sync`` forms follow the kernel
since 6.10: raise the disable count (so every ``queue_*`` returns False and a self-requeueing
item stops, R11), take the pending instance back, wait for the running one, lower the count.
"""

from __future__ import annotations

import functools
import sys
from types import FrameType

from . import _lock, _state
from ._barrier import WAIT_RUNNING, add_waiter
from ._errors import WorkqueueDeadlockError, WorkqueueError, describe
from ._lean import TABLE, freed, pool_of, serves
from ._lock import INTR, LOCK, after_section, hold, record, replay, run_redo
from ._pool import Pool, current_worker_work, untake
from ._queueing import steal
from ._work import (
    ARMED,
    DISABLE_MASK,
    DISABLE_UNIT,
    FORMS,
    PENDING,
    REDO,
    RUNNING,
    WAITED,
    DelayedWork,
    Work,
    check_delayed,
    check_initialised,
    check_work,
)

_is_owned = LOCK._is_owned  # type: ignore[attr-defined]
_acquire = LOCK.acquire
_release = LOCK.release
# Armed, and none of: running (its waiters move on), waited on, a replay attached.
_FAST_CANCEL = ARMED | RUNNING | WAITED | REDO
_NOT_PENDING_ARMED = _state.CANCEL_ARMED_KEEP  # disarm + clear_pending

__all__ = (
    "cancel_delayed_work",
    "cancel_delayed_work_sync",
    "cancel_work",
    "cancel_work_sync",
    "disable_work",
    "disable_work_sync",
    "enable_work",
)


def _nested(call: str, work: Work, *, disable: int) -> bool:
    """cancel / disable (``disable=1``) / enable (``disable=-1``) from interrupt context that
    interrupted our own section (see ``_lock.py``): answered as if run right after that section
    and the calls recorded before it, replayed there under a hold on the lock (no other thread
    sees the state in between). Returns: what the call returns anywhere else."""
    frame = sys._getframe(2)  # the caller of the public entry point
    key = id(work)
    st = after_section(work, frame, strict=disable != 0)
    if disable < 0:
        if not st & DISABLE_MASK:
            raise WorkqueueError(f"{call}: {describe(work)} is not disabled")
        st -= DISABLE_UNIT
        ans = not st & DISABLE_MASK
    else:
        ans = bool(st & PENDING)
        st = (st + DISABLE_UNIT if disable else st) & ~PENDING
        if not ans and not disable:
            return False  # nothing pending: changes nothing, wherever it is placed
        if ans:
            _lock.claim(work)  # a shutdown taking it back in this section: not reported twice
    INTR.pred[key] = st
    INTR.shadow.pop(key, None)  # a recorded queue's instance is what this took back
    hold()
    record(functools.partial(_settle_op, call, work, disable, ans))
    return ans


def _settle_op(call: str, work: Work, disable: int, ans: bool) -> None:
    """Apply an interrupt-context call where it was linearized. Context: under LOCK."""
    if disable < 0:
        if work._state & DISABLE_MASK:
            _state.enable(work)
        else:  # pragma: no cover - the prediction and the replay disagree
            _lock._log.error("%s: %r: replay found it not disabled", call, work)
        return
    if disable:
        _state.disable(work)
    if work._state & PENDING:
        was = _grab(work)
    elif INTR.claims.get(id(work)):
        # A shutdown in the interrupted section took it back and left it out of its report
        # (``_lock.claimed``): this call is placed before that section, and took it back.
        was = True
    else:
        # Taken to run by a worker of this thread in the interrupted section, not started
        # yet: the call is placed before that take, so the instance is taken back.
        frame = _lock.settle_frame()
        was = ans and frame is not None and untake(work, frame)
    if was != ans:  # pragma: no cover - the prediction and the replay disagree
        _lock._log.error("%s: %r: answered %s, replay found %s", call, work, ans, was)


def _grab(work: Work) -> bool:
    """Take back a pending instance; True if there was one. Context: under LOCK."""
    st = work._state
    if not st & PENDING:
        return False
    pwq = work._pwq
    assert pwq is not None
    steal(work)
    _state.clear_pending(work)
    pwq.nr_cancelled += 1
    if work._state & REDO:
        _state.clear_redo(work)
        run_redo(work)
    return True


def _cancel(call: str, work: Work) -> bool:
    if serves(work):  # Core v2: the table's cancel, one step; the loop skips the entry later
        tok = TABLE.cancel(work)
        freed(work, tok)
        return tok is not None
    if _is_owned():
        return _nested(call, work, disable=0)
    with LOCK:
        was = _grab(work)
    if INTR.pending:
        replay()
    return was


def cancel_work(work: Work) -> bool:
    """Cancel a pending ``work`` (queued, or armed if it is a DelayedWork) (R10).

    Does not wait for a running instance.
    Context: any thread or callback, a signal handler included (also one that interrupted
    aioworkqueue itself on the same thread: see ``_lock.py``).
    Returns: True if it was pending and will not run; False if it was not pending.
    """
    return _cancel("cancel_work", check_work("cancel_work", work))


def cancel_delayed_work(dwork: Work) -> bool:
    """Cancel a pending DelayedWork, armed or queued (R10). Context, Returns: as cancel_work."""
    if not isinstance(dwork, DelayedWork):
        return _cancel("cancel_delayed_work", check_delayed("cancel_delayed_work", dwork))
    if serves(dwork):
        return _cancel("cancel_delayed_work", dwork)
    if not _is_owned():
        # An armed item nobody waits on, from any thread: _grab + disarm inline (its timer
        # heap entry just turns into garbage); anything else takes _cancel.
        res = None
        try:
            _acquire()  # in the try: an exception right after it still releases
            st = dwork._state
            if not st & PENDING:
                res = False
            elif st & _FAST_CANCEL == ARMED:
                if _state.DEBUG:  # _state.disarm + clear_pending, inline
                    _state.check_disarm(dwork, st)
                    _state.shadow_clear("cancel_delayed_work", dwork, st)
                dwork._state = st & _NOT_PENDING_ARMED
                dwork._tgen = 0
                pwq = dwork._pwq
                del pwq.wq._armed[id(dwork)]  # type: ignore[union-attr]
                pwq.nr_cancelled += 1  # type: ignore[union-attr]
                pool: Pool = dwork._tpool  # type: ignore[assignment]  # set while ARMED
                timers = pool.timers
                n = timers.dead = timers.dead + 1
                if n > len(timers.heap) >> 1:
                    timers.compact()
                res = True
        except AttributeError:  # a subclass that skipped Work.__init__ (no _state): say so
            check_initialised("cancel_delayed_work", dwork)
            raise
        finally:
            if _is_owned():  # not held on entry
                _release()
        if res is not None:
            if INTR.pending:
                replay()
            return res
        return _cancel("cancel_delayed_work", dwork)
    return _nested("cancel_delayed_work", dwork, disable=0)


async def _disable_and_wait(call: str, work: Work, *, keep_disabled: bool) -> bool:
    cur = current_worker_work()
    if cur is not None and cur[0] is work:
        raise WorkqueueDeadlockError(
            f"{call}: {describe(work)} would wait for itself to finish "
            "(called from its own function)"
        )
    if serves(work):
        pool = pool_of(work)
        tok = TABLE.disable(work)
        freed(work, tok)
        was = tok is not None
        try:
            if pool is not None:
                await pool.wait_item(work, None)
        finally:
            if not keep_disabled:
                TABLE.enable(work)
        return was
    if _is_owned():
        raise WorkqueueError(
            f"{call}: called from a signal handler that interrupted aioworkqueue on the same "
            f"thread; a coroutine cannot run there; {describe(work)}"
        )
    with LOCK:
        st = work._state  # noqa: F841 - read from this frame by the interrupt-context predictor (_cancel)
        _state.disable(work)
        was = _grab(work)
        fut = add_waiter(work, WAIT_RUNNING) if work._state & RUNNING else None
    if INTR.pending:
        replay()
    try:
        if fut is not None:
            await fut
    finally:
        if not keep_disabled:
            est = 0  # bound before the section: the interrupt-context prediction tells them apart
            with LOCK:
                est = work._state  # noqa: F841 - read from this frame by the interrupt-context predictor (_cancel)
                _state.enable(work)
            if INTR.pending:
                replay()
    return was


async def cancel_work_sync(work: Work) -> bool:
    """Cancel ``work`` and wait for a running instance to finish (R11).

    While it runs, ``queue_*`` of ``work`` returns False, so self-requeueing work stops. On return
    the work is neither pending nor running and may be queued again.
    Context: a coroutine, on any event loop; not from the work's own function.
    Returns: True if it was pending; False otherwise.
    Raises: WorkqueueDeadlockError when called from ``work`` itself (R15).
    """
    return await _disable_and_wait(
        "cancel_work_sync", check_work("cancel_work_sync", work), keep_disabled=False
    )


async def cancel_delayed_work_sync(dwork: Work) -> bool:
    """:func:`cancel_work_sync` for a DelayedWork, armed or queued. Returns, Raises: the same."""
    call = "cancel_delayed_work_sync"
    return await _disable_and_wait(call, check_delayed(call, dwork), keep_disabled=False)


def disable_work(work: Work) -> bool:
    """Cancel a pending ``work`` and raise its disable count: ``queue_*`` returns False until
    :func:`enable_work` brings the count back to 0.

    Context: as :func:`cancel_work`. Returns: True if it was pending.
    """
    call = "disable_work"
    check_work(call, work)
    if serves(work):
        tok = TABLE.disable(work)
        freed(work, tok)
        return tok is not None
    if _is_owned():
        return _nested(call, work, disable=1)
    with LOCK:
        st = work._state  # noqa: F841 - read from this frame by the interrupt-context predictor (_cancel)
        _state.disable(work)
        was = _grab(work)
    if INTR.pending:
        replay()
    return was


async def disable_work_sync(work: Work) -> bool:
    """:func:`disable_work`, then wait for a running instance to finish.

    Context: a coroutine; not from the work's own function. Returns: True if it was pending.
    Raises: WorkqueueDeadlockError when called from ``work`` itself (R15).
    """
    call = "disable_work_sync"
    return await _disable_and_wait(call, check_work(call, work), keep_disabled=True)


def enable_work(work: Work) -> bool:
    """Lower the disable count of ``work``.

    Context: as :func:`cancel_work`.
    Returns: True when the count reached 0 (the work can be queued again).
    Raises: WorkqueueError if ``work`` is not disabled.
    """
    call = "enable_work"
    check_work(call, work)
    if serves(work):
        ok = TABLE.enable(work)
        if ok is None:
            raise WorkqueueError(f"{call}: {describe(work)} is not disabled")
        return ok
    if _is_owned():
        return _nested(call, work, disable=-1)
    with LOCK:
        st = work._state
        if not st & DISABLE_MASK:
            raise WorkqueueError(f"{call}: {describe(work)} is not disabled")
        _state.enable(work)
        ok = not work._state & DISABLE_MASK
    if INTR.pending:
        replay()
    return ok


# The method forms ``work.cancel()`` and ``await work.cancel_sync()`` (``_work.py``) call these.
FORMS.cancel_work = cancel_work
FORMS.cancel_work_sync = cancel_work_sync


# What the rest of an interrupted section of this module does to an item (``_lock.after_section``).
def _pred_grab(f: FrameType, work: Work, now: int, st: int, strict: bool) -> int:
    loc = f.f_locals
    if loc.get("work") is not work and loc.get("dwork") is not work:
        return st
    return st & ~PENDING  # taken back (or it was not pending)


def _pred_disable(f: FrameType, work: Work, now: int, st: int, strict: bool) -> int:
    loc = f.f_locals
    if loc.get("work") is not work:
        return st
    if "est" in loc:  # _disable_and_wait's second section: the count comes down
        end: int = loc["est"] or now
        return (st & (DISABLE_UNIT - 1)) | ((end & DISABLE_MASK) - DISABLE_UNIT)
    pre: int = loc.get("st", now)  # the count as the section found it, whether or not it wrote yet
    return (st & (DISABLE_UNIT - 1) & ~PENDING) | ((pre & DISABLE_MASK) + DISABLE_UNIT)


def _pred_enable(f: FrameType, work: Work, now: int, st: int, strict: bool) -> int:
    loc = f.f_locals
    if loc.get("work") is not work:
        return st
    pre: int = loc.get("st", now)
    if not pre & DISABLE_MASK:
        return st  # it raises: nothing changes
    return (st & (DISABLE_UNIT - 1)) | ((pre & DISABLE_MASK) - DISABLE_UNIT)


for _fn in (_grab, _cancel, cancel_delayed_work):
    _lock.SECTIONS[_fn.__code__] = _pred_grab
_lock.SECTIONS[disable_work.__code__] = _pred_disable
_lock.SECTIONS[_disable_and_wait.__code__] = _pred_disable
_lock.SECTIONS[enable_work.__code__] = _pred_enable
_lock.NESTED.add(_nested.__code__)
