"""The work-item state machine: the bits of ``Work._state``, and one named transition per change.

A work item's whole life is one integer, ``_state`` (the item itself is in ``_work.py``). It
changes only under the state lock (``_lock.py``) and only through the transitions below; each
says from which state(s) it is legal, what it leads to, and the rule it serves (docs/design.md
§2 has the same table)::

    transition      legal source                        target                        rule
    mark_pending    not PENDING, sits nowhere, enabled  |PENDING (sits nowhere yet)   R1
    activate        PENDING, nowhere or INACTIVE        PENDING|QUEUED                R7
    park_inactive   PENDING, nowhere                    PENDING|INACTIVE              R7
    arm             PENDING, nowhere                    PENDING|ARMED                 R8
    disarm          PENDING|ARMED                       PENDING (nowhere)             R8 R9 R10
    take            PENDING|QUEUED, not RUNNING         RUNNING (PENDING clears)      R2
    defer           PENDING|QUEUED|RUNNING              PENDING|DEFERRED|RUNNING      R3
    end_run         RUNNING                             not RUNNING                   R2 R3
    untake          RUNNING, not PENDING                not RUNNING                   R10
    run_deferred    PENDING|DEFERRED|RUNNING            RUNNING (the next instance)   R3
    dequeue         PENDING, QUEUED/INACTIVE/DEFERRED   PENDING (nowhere)             R9 R10
    unqueue         PENDING, QUEUED/INACTIVE/DEFERRED   not PENDING                   R20
    clear_pending   PENDING, nowhere                    not PENDING                   R10
    take_back       PENDING                             not PENDING, nowhere          R20
    strand          any                                 not PENDING, nowhere, idle    R20
    disable         any                                 disable count + 1             R11
    enable          disabled                            disable count - 1             R11
    mark_waited     PENDING or RUNNING                  |WAITED                       R11 R12
    clear_waited    any                                 WAITED clears                 R12
    mark_redo       PENDING                             |REDO                         R4
    clear_redo      REDO                                REDO clears                   R4

*Debug mode.* ``DEBUG`` is read once, when this module is imported: on when the environment
variable ``AIOWORKQUEUE_DEBUG`` is set to anything but ``""`` or ``"0"``, or when Python runs in
its development mode (``python -X dev``, ``sys.flags.dev_mode``; it turns on asyncio's debug
mode too). In debug mode every transition checks the state it starts from and raises
:class:`IllegalTransition` (an AssertionError) naming the transition, the item and its state.
Off, a transition costs one test of ``DEBUG`` more than the bit operation itself. The test suite
runs with it on (``tests/conftest.py``, through :func:`set_debug`: the package's pytest plugin
imports it before a conftest could set the variable).

*The hot paths inline.* ``queue_work`` and ``queue_delayed_work`` (``_queueing.py``),
``cancel_delayed_work`` (``_cancel.py``) and the worker loop's common start and end of a run and
hand-on of a slot (``_pool.py``) do not call the transitions: a Python call costs 11 opcodes
more than the inlined write and its test (benchmarks/anatomy.py: the worker's take as a call,
207.6 opcodes per item against 196.6), over issue 12's budget of 3 per item and path. They
write the bits with the masks below (``QUEUE_ACTIVE``, ``TAKE_KEEP``, ...) and run
the transition's own check on the state they read, ``if DEBUG: check_take(work, st)`` (the worker
reads ``DEBUG`` once, when it starts), so the suite checks those transitions too.

*The pending table's shadow.* In debug mode each transition that sets or clears PENDING, and
each hot path that inlines one, does the same to ``TABLE``, the lock-free pending table of
``_pending.py``, and raises :class:`IllegalTransition` where the two disagree: step 1 of Core
v2 (docs/design.md §9), which checks the mapping onto the table under the whole suite before the
table becomes the truth. ``disable`` and ``enable`` keep the table's disable count as well.

Owner: ``DEBUG`` and ``SHADOW`` are set once, at import (or by :func:`set_debug` before any pool
runs); ``TABLE`` is atomic (``_pending.py``) and, while it is a shadow, used under LOCK only.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Protocol

from ._errors import describe
from ._pending import PendingTable, _Disabled

__all__ = (
    "untake",
    "ARMED",
    "ASYNC_FN",
    "CALL",
    "DEBUG",
    "DEFERRED",
    "DISABLE_MASK",
    "DISABLE_UNIT",
    "INACTIVE",
    "PENDING",
    "QUEUED",
    "REDO",
    "RUNNING",
    "WAITED",
    "WHERE",
    "IllegalTransition",
    "Item",
)


def _debug_from_env() -> bool:
    return os.environ.get("AIOWORKQUEUE_DEBUG", "") not in ("", "0") or sys.flags.dev_mode


#: Debug mode: every transition checks its source state (see the module docstring).
DEBUG: bool = _debug_from_env()


def set_debug(on: bool) -> None:
    """Turn debug mode on or off for this process.

    For a test suite: the package is imported (by its pytest plugin) before a conftest can set
    ``AIOWORKQUEUE_DEBUG``. A worker reads the mode when it starts, so call this before any
    pool runs. Context: any thread, before work is queued.
    """
    global DEBUG, SHADOW
    DEBUG = SHADOW = bool(on)


# State bits. The bits of the common life (idle, queued, running; async or not; made by submit or
# not) stay below 256: CPython caches small ints, so those transitions allocate nothing. Rarer
# bits (armed, waiting for a slot, deferred, waited on) sit above.
PENDING = 1 << 0  # a successful queue_* has not started running yet (or was not cancelled)
QUEUED = 1 << 1  # on a pool worklist, holding one of its queue's active slots (R7)
RUNNING = 1 << 2
ASYNC_FN = 1 << 3  # func is a coroutine function (set once, at construction)
CALL = 1 << 4  # made by wq.submit: call func(*args, **kwargs), not func(work) (set once)
ARMED = 1 << 5  # DelayedWork whose timer is armed
INACTIVE = 1 << 6  # on a queue's inactive list, waiting for an active slot (R7)
DEFERRED = 1 << 7  # taken by a worker while still running elsewhere: runs when that run ends (R3)
WAITED = 1 << 8  # someone waits in flush_work / cancel_*_sync / disable_work_sync
REDO = 1 << 9  # a queue_* made from an interrupted context replays when this instance starts
DISABLE_UNIT = 1 << 12  # the disable count lives above this bit
DISABLE_MASK = ~(DISABLE_UNIT - 1)
WHERE = ARMED | QUEUED | INACTIVE | DEFERRED  # where a pending instance sits

# The masks of the inlined hot paths (see the module docstring): the bits a transition sets, or
# (``*_KEEP``) the bits it keeps.
QUEUE_ACTIVE = PENDING | QUEUED  # mark_pending + activate
QUEUE_INACTIVE = PENDING | INACTIVE  # mark_pending + park_inactive
QUEUE_ARMED = PENDING | ARMED  # mark_pending + arm
TAKE_KEEP = ~(PENDING | QUEUED | REDO)  # take: | RUNNING
END_KEEP = ~RUNNING  # end_run
ACTIVATE_KEEP = ~INACTIVE  # activate: | QUEUED
CANCEL_ARMED_KEEP = ~(PENDING | ARMED)  # disarm + clear_pending


class Item(Protocol):
    """What a transition touches of a work item (``_work.Work``, a layer above)."""

    _state: int
    _tok: Any  # the pending table's hint (``_pending.py``)


class IllegalTransition(AssertionError):
    """A transition was asked of a work item in a state it is not legal from: a bug in
    aioworkqueue (or a hand that wrote ``_state``). Raised in debug mode only."""


_NAMES = (
    (PENDING, "PENDING"),
    (QUEUED, "QUEUED"),
    (INACTIVE, "INACTIVE"),
    (ARMED, "ARMED"),
    (DEFERRED, "DEFERRED"),
    (RUNNING, "RUNNING"),
    (WAITED, "WAITED"),
    (REDO, "REDO"),
)


def state_name(st: int) -> str:
    """Return a readable form of the state ``st``: ``"PENDING|QUEUED (0x3)"``, ``"IDLE (0x0)"``.

    The set-once bits (ASYNC_FN, CALL) are left out; a disable count is shown. Context: any.
    """
    names = [name for bit, name in _NAMES if st & bit]
    count = st >> 12
    if count:
        names.append(f"disabled x{count}")
    return f"{'|'.join(names) or 'IDLE'} ({st:#x})"


def _illegal(transition: str, work: Item, st: int, legal: str) -> IllegalTransition:
    return IllegalTransition(
        f"aioworkqueue: illegal state transition {transition} of {describe(work)} in state "
        f"{state_name(st)}; legal from: {legal}"
    )


# -- the checks: each raises IllegalTransition unless ``st`` is a legal source ----------------
# Called by the transitions below and, under ``if DEBUG``, by the hot paths that inline them.


def check_mark_pending(work: Item, st: int) -> None:
    """Legal source of :func:`mark_pending` (and of the hot paths' ``QUEUE_*`` writes)."""
    if st & (PENDING | WHERE | DISABLE_MASK):
        raise _illegal("mark_pending", work, st, "not PENDING, sitting nowhere, not disabled")


def check_activate(work: Item, st: int) -> None:
    """Legal source of :func:`activate`."""
    if st & (PENDING | WHERE) not in (PENDING, PENDING | INACTIVE):
        raise _illegal("activate", work, st, "PENDING, sitting nowhere or INACTIVE")


def _check_nowhere(transition: str, work: Item, st: int) -> None:
    if st & (PENDING | WHERE) != PENDING:
        raise _illegal(transition, work, st, "PENDING, sitting nowhere")


def check_disarm(work: Item, st: int) -> None:
    """Legal source of :func:`disarm` (and of ``cancel_delayed_work``'s inline cancel)."""
    if st & (PENDING | WHERE) != PENDING | ARMED:
        raise _illegal("disarm", work, st, "PENDING|ARMED")


def check_take(work: Item, st: int) -> None:
    """Legal source of :func:`take` (and of the worker's inline take)."""
    if st & (PENDING | WHERE | RUNNING) != PENDING | QUEUED:
        raise _illegal("take", work, st, "PENDING|QUEUED, not RUNNING")


def check_defer(work: Item, st: int) -> None:
    """Legal source of :func:`defer`."""
    if st & (PENDING | WHERE | RUNNING) != PENDING | QUEUED | RUNNING:
        raise _illegal("defer", work, st, "PENDING|QUEUED|RUNNING")


def check_end_run(work: Item, st: int) -> None:
    """Legal source of :func:`end_run` (and of the worker's inline end of a run)."""
    if not st & RUNNING:
        raise _illegal("end_run", work, st, "RUNNING")


def check_run_deferred(work: Item, st: int) -> None:
    """Legal source of :func:`run_deferred`."""
    if st & (PENDING | WHERE | RUNNING) != PENDING | DEFERRED | RUNNING:
        raise _illegal("run_deferred", work, st, "PENDING|DEFERRED|RUNNING")


def _check_listed(transition: str, work: Item, st: int) -> None:
    if st & (PENDING | WHERE) not in (PENDING | QUEUED, PENDING | INACTIVE, PENDING | DEFERRED):
        raise _illegal(transition, work, st, "PENDING and QUEUED, INACTIVE or DEFERRED")


# -- the pending table as a shadow of the PENDING bit ------------------------------------------
# Core v2, step 1 (docs/design.md §9): every transition that sets or clears PENDING does the
# same to the lock-free pending table, and says so when the two disagree. In debug mode only, so
# that the whole suite checks the mapping before the table becomes the truth; off, nothing here
# runs. All of it is under LOCK, so the table's ops are serialized and the hint (``work._tok``)
# is always the newest token: a take starts that one.

#: The table the shadow keeps (one per process, as Core v2's will be).
TABLE = PendingTable()
#: The shadow runs in debug mode; off for a test that sets ``_state`` by hand (no table op made
#: that state).
SHADOW: bool = DEBUG


def _mismatch(transition: str, work: Item, st: int, what: str) -> IllegalTransition:
    return IllegalTransition(
        f"aioworkqueue: the pending table disagrees with {transition} of {describe(work)} in "
        f"state {state_name(st)}: {what}"
    )


def shadow_pend(transition: str, work: Item, st: int) -> None:
    """The core makes ``work`` PENDING (from state ``st``): so does the table (R1)."""
    if SHADOW and TABLE.acquire(work) is None:
        raise _mismatch(transition, work, st, "the table has it pending or disabled")


def shadow_take(transition: str, work: Item, st: int) -> None:
    """The core starts the pending instance of ``work`` (R2): so does the table."""
    if SHADOW:
        t = work._tok
        if t is None or not TABLE.current(t) or TABLE.take(t) is not work:
            raise _mismatch(transition, work, st, "the table has no pending instance to start")


def shadow_clear(transition: str, work: Item, st: int) -> None:
    """The core ends the pending instance of ``work`` without a run (R10, R20): so does the
    table. It may have ended it already: a disable in the same section cancels it there."""
    if SHADOW and TABLE.cancel(work) is None:
        t = work._tok
        if t is None or len(t) < 2 or type(t[1]) is not _Disabled:
            raise _mismatch(transition, work, st, "the table has no pending instance to end")


def shadow_disable(work: Item) -> None:
    """The core raises the disable count (R11): so does the table, which also cancels a
    pending instance (the core does that in the same section)."""
    if SHADOW:
        TABLE.disable(work)


def shadow_enable(work: Item, st: int) -> None:
    """The core lowers the disable count from state ``st`` (R11): so does the table, and both
    must agree whether it reached 0."""
    if SHADOW:
        zero = not (st - DISABLE_UNIT) & DISABLE_MASK
        got = TABLE.enable(work)
        if got is None or got is not zero:
            raise _mismatch(
                "enable", work, st, f"the table answers {got!r} (None: it was not disabled)"
            )


# -- the transitions ----------------------------------------------------------------------------
# None returns a value; every one runs under ``_lock.LOCK``.


def mark_pending(work: Item) -> None:
    """A ``queue_*`` succeeds: the item becomes PENDING, sitting nowhere yet; the caller puts it
    on its queue or arms it next, in the same section (R1: PENDING tests and sets in one section).

    Legal from: not PENDING, sitting nowhere, not disabled (RUNNING or WAITED may be set: R2).
    Context: under LOCK.
    """
    st = work._state
    if DEBUG:
        check_mark_pending(work, st)
        shadow_pend("mark_pending", work, st)
    work._state = st | PENDING


def activate(work: Item) -> None:
    """A pending instance takes one of its queue's active slots and goes on a worklist (R7).

    Legal from: PENDING, sitting nowhere (a queue with a free slot) or INACTIVE (a slot freed).
    Target: PENDING|QUEUED.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG:
        check_activate(work, st)
    work._state = (st & ACTIVATE_KEEP) | QUEUED


def park_inactive(work: Item) -> None:
    """A pending instance finds its queue at ``max_active``: it waits on the inactive list (R7).

    Legal from: PENDING, sitting nowhere. Target: PENDING|INACTIVE.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG:
        _check_nowhere("park_inactive", work, st)
    work._state = st | INACTIVE


def arm(work: Item) -> None:
    """A pending DelayedWork waits for its timer (R8).

    Legal from: PENDING, sitting nowhere. Target: PENDING|ARMED.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG:
        _check_nowhere("arm", work, st)
    work._state = st | ARMED


def disarm(work: Item) -> None:
    """An armed instance leaves its timer: it fired (R8), is re-armed (R9), or is cancelled
    (R10); it stays PENDING, sitting nowhere, until the caller places or cancels it.

    Legal from: PENDING|ARMED. Target: PENDING.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG:
        check_disarm(work, st)
    work._state = st & ~ARMED


def take(work: Item) -> None:
    """A worker takes a queued instance and is about to call its function: PENDING clears now,
    before the call, so the function may queue its own item again (R2); a replay attached to
    this instance (REDO, R4) is the caller's to run.

    Legal from: PENDING|QUEUED, not RUNNING. Target: RUNNING.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG:
        check_take(work, st)
        shadow_take("take", work, st)
    work._state = (st & TAKE_KEEP) | RUNNING


def defer(work: Item) -> None:
    """A worker takes a queued instance whose previous one still runs elsewhere: it does not run
    it, the worker running the previous one runs it when that ends (R3). The slot stays taken.

    Legal from: PENDING|QUEUED|RUNNING. Target: PENDING|DEFERRED|RUNNING.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG:
        check_defer(work, st)
    work._state = (st & ~QUEUED) | DEFERRED


def end_run(work: Item) -> None:
    """A run ends: the item is idle, or pending elsewhere if it was queued again meanwhile (R2).
    With a deferred next instance (R3) only a stopping pool ends the run so, then unqueues it.

    Legal from: RUNNING. Target: RUNNING clears.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG:
        check_end_run(work, st)
    work._state = st & END_KEEP


def untake(work: Item) -> None:
    """A signal handler's cancel undoes the take of the section it interrupted: the item was
    taken to run and had not started, so it ends as cancelled (R10, interrupt context).

    Legal from: RUNNING, not PENDING. Target: RUNNING clears.
    Context: under LOCK, in that section's replay.
    """
    st = work._state
    if DEBUG and (not st & RUNNING or st & PENDING):
        raise _illegal("untake", work, st, "RUNNING, not PENDING")
    work._state = st & ~RUNNING


def run_deferred(work: Item) -> None:
    """A run ends and its deferred next instance starts at once, on the same worker (R3):
    RUNNING stays, PENDING clears as in :func:`take` (R2).

    Legal from: PENDING|DEFERRED|RUNNING. Target: RUNNING.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG:
        check_run_deferred(work, st)
        shadow_take("run_deferred", work, st)
    work._state = st & ~(PENDING | DEFERRED | REDO)


def dequeue(work: Item) -> None:
    """A queued pending instance is taken back off its list (or from behind its own run) and
    stays PENDING, sitting nowhere: re-armed by ``mod_delayed_work`` (R9) or about to be
    cancelled (R10, then :func:`clear_pending`).

    Legal from: PENDING with QUEUED, INACTIVE or DEFERRED. Target: PENDING.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG:
        _check_listed("dequeue", work, st)
    work._state = st & ~WHERE


def unqueue(work: Item) -> None:
    """A queued pending instance is taken back and will not run: a stopping pool reports the
    deferred next instance of a run as unfinished (R20).

    Legal from: PENDING with QUEUED, INACTIVE or DEFERRED. Target: PENDING and WHERE clear.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG:
        _check_listed("unqueue", work, st)
        shadow_clear("unqueue", work, st)
    work._state = st & ~(PENDING | WHERE)


def clear_pending(work: Item) -> None:
    """``cancel_*`` took the pending instance back (:func:`disarm` / :func:`dequeue` first): it
    will not run (R10).

    Legal from: PENDING, sitting nowhere. Target: not PENDING.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG:
        _check_nowhere("clear_pending", work, st)
        shadow_clear("clear_pending", work, st)
    work._state = st & ~PENDING


def take_back(work: Item) -> None:
    """A runtime takes back a pending instance stranded on a pool that will not run it (R20).

    Legal from: PENDING (its timer already disarmed if it was armed). Target: not PENDING,
    sitting nowhere.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG and not st & PENDING:
        raise _illegal("take_back", work, st, "PENDING")
    if DEBUG:
        shadow_clear("take_back", work, st)
    work._state = st & ~(PENDING | WHERE)


def strand(work: Item) -> None:
    """A queue's loop ends: whatever it left of the item, pending or running, is reset (R20).

    Legal from: any (an item both running and queued again is met twice). Target: not PENDING,
    sitting nowhere, not RUNNING.
    Context: under LOCK.
    """
    if DEBUG and work._state & PENDING:
        shadow_clear("strand", work, work._state)
    work._state &= ~(PENDING | WHERE | RUNNING)


def disable(work: Item) -> None:
    """``disable_work*`` or ``cancel_*_sync`` raise the disable count: every ``queue_*`` returns
    False until it is back at 0 (R11).

    Legal from: any. Target: the count + 1.
    Context: under LOCK.
    """
    if DEBUG:
        shadow_disable(work)
    work._state += DISABLE_UNIT


def enable(work: Item) -> None:
    """``enable_work`` or the end of ``cancel_*_sync`` lower the disable count (R11).

    Legal from: disabled (count > 0). Target: the count - 1.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG and not st & DISABLE_MASK:
        raise _illegal("enable", work, st, "disabled")
    if DEBUG:
        shadow_enable(work, st)
    work._state = st - DISABLE_UNIT


def mark_waited(work: Item) -> None:
    """Someone waits for the pending or running instance (``flush_work`` R12, ``cancel_*_sync``
    R11): its start and end consult the waiter table (``_barrier.py``).

    Legal from: PENDING or RUNNING. Target: |WAITED.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG and not st & (PENDING | RUNNING):
        raise _illegal("mark_waited", work, st, "PENDING or RUNNING")
    work._state = st | WAITED


def clear_waited(work: Item) -> None:
    """The last waiter of the item is woken (R12).

    Legal from: any (the barrier clears it whether or not anyone waited). Target: WAITED clears.
    Context: under LOCK.
    """
    work._state &= ~WAITED


def mark_redo(work: Item) -> None:
    """A replayed interrupt-context ``queue_*`` found the item pending: it attaches to the
    pending instance and queues the item again when that starts or is cancelled (R4).

    Legal from: PENDING. Target: |REDO.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG and not st & PENDING:
        raise _illegal("mark_redo", work, st, "PENDING")
    work._state = st | REDO


def clear_redo(work: Item) -> None:
    """The replays attached to a cancelled pending instance are about to run (R4).

    Legal from: REDO. Target: REDO clears.
    Context: under LOCK.
    """
    st = work._state
    if DEBUG and not st & REDO:
        raise _illegal("clear_redo", work, st, "REDO")
    work._state = st & ~REDO
