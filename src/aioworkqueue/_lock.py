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

A nested call answers from the state it sees (consistent: the interrupted section has not
committed, or has) plus the calls recorded before it, and is replayed the moment the outermost
section releases the lock (every section ends with ``if INTR.pending: replay()``), before this
thread runs anything else. Only queueing calls may be made from there: that is what interrupt
context is for (docs/spec.md); see ``_queueing.py`` for how a replayed queue keeps R1 and R4.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _state

if TYPE_CHECKING:
    from ._work import Work

__all__ = ("INTR", "LOCK", "add_redo", "record", "replay", "run_redo")

LOCK = threading.RLock()

_log = logging.getLogger("aioworkqueue")


class _Interrupts:
    """Calls recorded by nested (interrupt-context) callers, waiting for replay."""

    __slots__ = ("ops", "pending", "shadow")

    def __init__(self) -> None:
        #: A (appended by nested callers, one deque.append), emptied under L by replay():
        #: replays, in the order the interrupt-context calls were made.
        self.ops: deque[Callable[[], None]] = deque()
        #: A: read on the hot path after every section: a replay is due.
        self.pending = False
        #: L (only the thread that holds LOCK: nested callers run on it): id(work) → number of
        #: recorded, not yet replayed, successful queues of that work.
        self.shadow: dict[int, int] = {}


INTR = _Interrupts()


def record(op: Callable[[], None]) -> None:
    """Record a replay. Context: nested only (``deque.append`` and a bool store are atomic)."""
    INTR.ops.append(op)
    INTR.pending = True


def replay() -> None:
    """Run the recorded replays under the lock.

    Context: any thread, not under ``LOCK`` (when nested, the outermost section replays).
    """
    # A replay is a section too: a signal that lands in it after its last op is recorded, and
    # must be replayed before this returns (the caller has looked at INTR.pending already).
    while INTR.pending:
        if LOCK._is_owned():  # type: ignore[attr-defined]
            return
        with LOCK:
            INTR.pending = False
            ops = INTR.ops
            while ops:
                op = ops.popleft()
                try:
                    op()
                except Exception:  # a replay must never take the others down with it
                    _log.exception("aioworkqueue: replaying an interrupt-context call failed")
            INTR.shadow.clear()


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
