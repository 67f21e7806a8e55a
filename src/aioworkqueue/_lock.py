"""The state lock, and what a call does when it interrupts the lock's own holder.

Every state transition of a work item, a queue link or a pool happens under ``LOCK``. Sections
are short, straight-line and never await, so a ``threading`` lock costs little and makes every
call safe from any thread.

Interrupt context is the hard part. A ``signal.signal`` handler (or a finalizer) runs on the main
thread *between two bytecodes of whatever that thread was doing*, possibly in the middle of one of
our sections. It must not take the lock (the interrupted code holds it: deadlock) and must not
touch state (the interrupted code is half-way through changing it)::

    main thread                               signal handler (same thread)
    ───────────                               ────────────────────────────
    LOCK.acquire()
    worklist.append(w1) ... ◀── SIGUSR1 ──▶  queue_work(wq, w2)
                                                LOCK._is_owned() → nested
                                                record the call, answer from a snapshot
    pwq.nr_active += 1                          return True
    LOCK.release()
    INTR.pending → replay(): queue w2 for real, under the lock

``LOCK`` is an ``RLock`` only so that ``_is_owned()`` answers "does *this* thread hold it" from C,
atomically: a plain lock plus an owner field leaves a one-bytecode window where a handler would
see the lock taken by nobody it knows, block on it, and deadlock.

A nested queue call answers from the state it sees (consistent: the interrupted section has not
committed, or has) plus the calls recorded before it, and is replayed the moment the outermost
section releases the lock (every section ends with ``if INTR.pending: replay()``), before this
thread runs anything else. See ``_queueing.py`` for how a replayed queue keeps R1 and R4.

A nested cancel, disable or enable (``_cancel._nested``) is linearized *right after the
interrupted section* (and after the calls recorded before it): it answers from the state the item
will have then, ``after_section``, and its replay runs there. Two things make that exact:

* *What the rest of the section does to the item.* The interrupted frames are walked (from the
  handler's caller down to the innermost replay); each function with a section registers in
  ``SECTIONS`` a predictor that reads its locals (the item, ``st``: the item's state as the
  section read it) and says what its rest does to the item. Sections that do not name the item
  leave it as it is: the calls commute.
* *Nobody sees the state in between.* The call takes the lock once more (``hold``: this thread
  owns it, so that never blocks) and sets a profile function; at the section's last release the
  recursion count is back to that one hold, and ``_settle`` replays there, then lets go. Another
  thread blocked on the lock gets it only after the replay, even for a section that does not end
  with a replay of its own.

The timelines, one per kind of section (H: the handler on this thread; the answer and the
order that explains it)::

    the item's queue (queue_*, mod_delayed_work)
        LOCK; st = w._state ... ◀── H: cancel_work(w)
          committed (w._state != st) or pending already: → True; replay takes it back (after)
          not committed: cancel → False, changes nothing (placed before the queue)
                         disable → predicted from the section's own tests (st, the bound, the
                         fast path's test): True if it will queue w, replay takes it back
        the mod steals and re-arms a pending item, its PENDING bit off for a moment: still
        predicted pending (st had it)

    the interrupted thread's own cancel / disable / enable of w
        LOCK; st = w._state; w._state = st ± DISABLE_UNIT ... ◀── H: cancel / disable / enable
          after it: not pending (its cancel gets the True), the count is st's ± 1 whether or
          not the store ran yet: the handler's enable answers from that count

    a worker's take of w (or the end of its run, which starts a deferred next instance, R3)
        LOCK; w = worklist.popleft(); w._state = ... | RUNNING ◀── H: cancel_work(w) → True
        release → _settle: w RUNNING and not pending, the worker's frame holds it:
          untake (_pool.untake): ends as cancelled, the worker skips it (placed before the take)
        the end of a run (w RUNNING, not pending): False, either order

    timer fire, a slot freeing (INACTIVE → QUEUED), destroy firing: w stays pending → True,
    the replay takes it back from wherever it sits then

    another item's section: w as it is; the replay runs after that section

    a shutdown taking w back (a loop's end, a rebind, a runtime's collect, a cut run's next
    instance): not predicted; pending now → True and ``claim(w)``, placed before it: the
    take-back asks ``claimed(w)`` after taking it back and leaves it out of its report; taken
    back already → False, the shutdown reports it
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Callable
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from . import _state
from ._state import DISABLE_MASK, PENDING

if TYPE_CHECKING:
    from ._work import Work

_R = TypeVar("_R", bound=tuple[Any, Any, str])

__all__ = (
    "INTR",
    "LOCK",
    "SECTIONS",
    "add_redo",
    "after_section",
    "claim",
    "claimed",
    "unclaimed",
    "hold",
    "record",
    "replay",
    "run_redo",
    "settle_frame",
)

LOCK = threading.RLock()

_log = logging.getLogger("aioworkqueue")


class _Interrupts:
    """Calls recorded by nested (interrupt-context) callers, waiting for replay."""

    __slots__ = (
        "claims",
        "held",
        "ops",
        "pending",
        "pred",
        "prev_profile",
        "settling",
        "shadow",
        "untaken",
    )

    def __init__(self) -> None:
        #: A (appended by nested callers, one deque.append), emptied under L by replay():
        #: replays, in the order the interrupt-context calls were made.
        self.ops: deque[Callable[[], None]] = deque()
        #: A: read on the hot path after every section: a replay is due.
        self.pending = False
        #: L (only the thread that holds LOCK: nested callers run on it): id(work) → number of
        #: recorded, not yet replayed, successful queues of that work.
        self.shadow: dict[int, int] = {}
        #: L: id(work) → the state the work will have once the interrupted section and every
        #: call recorded so far are applied, as the interrupt-context cancel / disable / enable
        #: calls predicted it (``after_section``); emptied by the replay that applies them.
        self.pred: dict[int, int] = {}
        #: L: an interrupt-context cancel / disable / enable holds LOCK once more (``hold``), so
        #: that no other thread can take it between the interrupted section and the replay.
        self.held = False
        #: T (this thread): the profile function that was set when ``hold`` set ours.
        self.prev_profile: Any = None
        #: L: the frame that released the interrupted section, while its replay runs (settle).
        self.settling: FrameType | None = None
        #: L: id(work) → True for an instance a replay took back just after a worker of this
        #: thread took it to run (``_pool.untake``): that worker must skip it.
        self.untaken: dict[int, bool] = {}
        #: L: id(work) → whether a shutdown's take-back left it out of its report: an
        #: interrupt-context cancel / disable answered True for it, placed before the
        #: interrupted section (``claimed``); emptied by the replay that applies the call.
        self.claims: dict[int, bool] = {}


INTR = _Interrupts()


def record(op: Callable[[], None]) -> None:
    """Record a replay. Context: nested only (``deque.append`` and a bool store are atomic)."""
    INTR.ops.append(op)
    INTR.pending = True


def replay() -> None:
    """Run the recorded replays under the lock.

    Context: any thread, not under ``LOCK`` (when nested, the outermost section replays; when
    ``hold`` keeps the lock past it, ``_settle`` replays the moment that section releases).
    """
    # A replay is a section too: a signal that lands in it after its last op is recorded, and
    # must be replayed before this returns (the caller has looked at INTR.pending already).
    while INTR.pending:
        if LOCK._is_owned():  # type: ignore[attr-defined]
            return
        with LOCK:
            _drain()


def _drain() -> None:
    # Context: under LOCK.
    INTR.pending = False
    ops = INTR.ops
    while ops:
        op = ops.popleft()
        try:
            op()
        except Exception:  # a replay must never take the others down with it
            _log.exception("aioworkqueue: replaying an interrupt-context call failed")
    INTR.shadow.clear()
    INTR.pred.clear()
    INTR.claims.clear()


def hold() -> None:
    """Keep LOCK held past the interrupted section until its replays have run (``_settle``).

    An interrupt-context cancel, disable or enable has answered as if it ran right after the
    interrupted section: no other thread may take the lock in between. This thread owns the
    lock, so taking it once more never blocks; a profile function on this thread watches for
    the section's last release (the recursion count back to our one) and replays there.
    Context: nested only.
    """
    if INTR.held:
        return
    INTR.held = True  # first: a signal that lands below must not take a second hold
    LOCK.acquire()
    prev = sys.getprofile()
    if prev is not _settle_hook:
        INTR.prev_profile = prev
        sys.setprofile(_settle_hook)


def _settle_hook(frame: FrameType, event: str, arg: object) -> None:
    if _count() == 1 and INTR.held:
        _settle(frame)
        return
    prev = INTR.prev_profile
    if prev is not None:
        prev(frame, event, arg)


def _settle(frame: FrameType) -> None:
    """The interrupted section released the lock down to our hold: replay, then let go."""
    prev = INTR.prev_profile
    INTR.prev_profile = None
    sys.setprofile(prev)
    # Before the replays: a signal that lands in them takes a hold of its own (and with it
    # this hook again), which the next event after our release settles.
    INTR.held = False
    INTR.settling = frame
    try:
        _drain()
    finally:
        INTR.settling = None
        LOCK.release()
    if INTR.untaken:
        INTR.pending = True  # the worker looks at its untaken item in its replay branch


def claim(work: Work) -> None:
    """An interrupt-context cancel or disable answered True for ``work``: if the interrupted
    section is a shutdown taking it back, that take-back must not report it too. Context:
    nested only."""
    INTR.claims[id(work)] = False


def claimed(work: Work) -> bool:
    """Asked by a shutdown's take-back before it reports ``work`` as unfinished (R20), after
    it has taken it back: True if an interrupt-context cancel or disable that interrupted this
    section answered True for it. That call is placed before the section: it took the item
    back (the same accounting the take-back did) and reported it by its answer, so the
    shutdown leaves it out of its report. Context: under LOCK, after the take-back."""
    c = INTR.claims
    if c and id(work) in c:
        c[id(work)] = True
        return True
    return False


def unclaimed(report: list[_R]) -> list[_R]:
    """``report`` (``(work, queue, state)`` items of a shutdown) without the pending instances
    an interrupt-context cancel claimed (``claimed``); a cut run (state ``"running"``) stays:
    the True was for the pending instance. Context: under LOCK, after every take-back."""
    if not INTR.claims:
        return report
    return [u for u in report if u[2] == "running" or not claimed(u[0])]


def settle_frame() -> FrameType | None:
    """The frame whose release ended the interrupted section, while its replays run (or None)."""
    return INTR.settling


#: code object of a function with a section → what the rest of that section does to an item:
#: ``predict(frame, work, now, st, strict) → st``, where ``now`` is ``work._state`` as the
#: interrupted section left it and ``st`` the state predicted so far. Filled by the modules
#: that own the sections (``_queueing``, ``_cancel``), as ``_work.FORMS`` is.
SECTIONS: dict[CodeType, Callable[[FrameType, Work, int, int, bool], int]] = {}
#: code objects of the interrupt-context entry points themselves (skipped with their caller).
NESTED: set[CodeType] = set()
_STOP = {replay.__code__, _drain.__code__, _settle.__code__, _settle_hook.__code__}


def after_section(work: Work, frame: FrameType | None, *, strict: bool) -> int:
    """The state ``work`` will have once the interrupted section ends and every call recorded
    so far in this interruption is replayed.

    ``frame``: where the interrupted code starts (the caller of the entry point). Only the
    frames above the innermost replay count: a replay's own ops are the section then. With
    ``strict``, a queue of ``work`` that the section has not committed yet is predicted from
    its own tests (disable needs that); without, it is left out (the caller then linearizes
    before that queue: a cancel that finds nothing pending changes nothing).
    Context: nested only.
    """
    key = id(work)
    st = INTR.pred.get(key)
    if st is not None:
        return st
    st = now = work._state
    found = []
    f = frame
    skip = False
    while f is not None:
        code = f.f_code
        if code in _STOP:
            break
        if skip:
            skip = False  # the public call that an (outer) interrupt-context call went through
        elif code in NESTED:
            skip = True
        else:
            p = SECTIONS.get(code)
            if p is not None:
                found.append((p, f))
        f = f.f_back
    for p, f in found:  # innermost first
        st = p(f, work, now, st, strict)
    if INTR.shadow.get(key) and not st & DISABLE_MASK:
        st |= PENDING  # queued by a recorded call
    return st


def _count() -> int:
    return LOCK._recursion_count()  # type: ignore[attr-defined, no-any-return]


# id(work) → queue calls to replay when the pending instance of that work starts (bit REDO).
_REDO: dict[int, list[Callable[[], None]]] = {}


def add_redo(work: Work, op: Callable[[], None]) -> None:
    """Replay ``op`` when the pending instance of ``work`` starts or is cancelled.

    Used when a replayed interrupt-context queue finds the work pending again: both queues
    returned True, so both must lead to a run (R4). Context: under LOCK.
    """
    _REDO.setdefault(id(work), []).append(op)
    _state.mark_redo(work)


def run_redo(work: Work) -> None:
    """Run the replays waiting on ``work``. Context: under LOCK, ``REDO`` already cleared."""
    for op in _REDO.pop(id(work), ()):
        op()
