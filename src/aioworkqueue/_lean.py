"""Core v2, stage A: the lean pool, the core's pool without the state lock (docs/design.md §9).

This is the step-4 design of the design doc's wiring plan, built as the core's own pool and
reached through the public API, beside the locked core it is to replace. It serves a queue only
while the switch is on (``AIOWORKQUEUE_CORE=v2`` in the environment, or :func:`use`), and only
the queues and calls it covers so far: embedded queues on their loop's pool, with or without
``max_active``, ``max_pending`` and ordering, and their delayed work (``_lean_timer.py``: an
armed instance is a claim in ``LeanLink.armed`` plus a heap entry; whoever pops the claim
places it). A queue or call it does not cover yet raises
``NotImplementedError`` that names it, so a test run under the switch tells what is left.

The shape (one writer per field; O is the pool's loop, A any thread through one atomic step,
W the winner of an item's pending decision, who alone writes ``work._pwq`` until its token is
taken or skipped):

* the pending bit is ``_state.TABLE`` (``_pending.py``): a queue is the table's decision, one
  ``list.append``, and the instance's token is its entry on the pool's inbox;
* a producer (any thread) checks, decides, stores the link (W), appends ``(token, link)`` to
  the inbox (A) and wakes the loop only if no worker is on its way there; it counts nothing
  but the queued count and R21's room, with ``itertools.count`` (one C call each);
* the pool's workers do all the accounting on the loop: R7 when they take a token (a token over
  ``max_active`` waits on its link, still pending), R3 by handing the token to the worker that
  runs the item (it takes it next), the link's counts, and the statistics;
* a flush is a barrier on the inbox: FIFO, so when the loop pops it, everything queued before
  it has been popped, and what is unfinished is running, waiting for a slot or handed to a
  worker. The barrier snapshots those tokens; each, when it ends or is skipped, looks whether
  a barrier waits (one attribute test per item);
* a cancel is the table's cancel; whoever holds the token skips it later.

Waking. ``sleeping`` (A) is True while no worker is on its way to the inbox. A producer reads it
after its append; the loop sets it before its last look at the inbox (see ``_no_one_coming``).
A producer that read False appended before the loop set it, so that last look sees the entry;
one that read True wakes a parked worker (on the loop's own thread: a ``list.pop`` and
``set_result``, each one step that allows for a handler having gone first) or posts
``_kick``, one at a time (``kick_armed``, which ``_kick`` clears before it looks). Only
workers and ``_kick``, never a producer, change the counts (``waking``, ``nr_workers``): a
handler that interrupts a worker's step therefore never races a read-modify-write.

Signal handlers: the steps are designed for a ``signal.signal`` handler that queues on the
loop's own thread (each one list operation or store, as in ``benchmarks/lean_pool.py``, whose
interleaving tests land a handler at every step), but Stage A has no such test of its own yet:
until it has, treat a handler on the loop's thread as untested here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from types import CoroutineType
from typing import Any

from . import _state
from ._barrier import wake as complete
from ._config import CONFIG
from ._errors import WorkqueueDeadlockError, WorkqueueFullError, WorkqueueLoopError, describe
from ._flags import WQ
from ._lean_timer import LeanTimers
from ._lean_timer import peek as _peek
from ._pending import _RUN, PendingTable, _Moved
from ._pool import _WORKER, _call, _call_in_thread, _tearing_down
from ._pwq import FROZEN
from ._state import ASYNC_FN, CALL
from ._work import Work

__all__ = (
    "ENABLED",
    "TABLE",
    "LeanLink",
    "LeanPool",
    "covers",
    "freed",
    "pool_of",
    "serves",
    "use",
)

_log = logging.getLogger("aioworkqueue")
_isawaitable = __import__("inspect").isawaitable
_get_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task
_BATCH = 256  # items a worker runs before it yields to the loop (the kernel's cond_resched)
_ELSEWHERE_POLL = 0.001  # seconds: how soon an item running on another loop is looked at again

TABLE: PendingTable = _state.TABLE

_ASYNC_OR_CALL = ASYNC_FN | CALL


class _Switch:
    __slots__ = ("on",)

    def __init__(self) -> None:
        # A: read when a queue is allocated; set at import or by use().
        self.on = os.environ.get("AIOWORKQUEUE_CORE", "") == "v2"


ENABLED = _Switch()


@contextmanager
def use(on: bool = True) -> Iterator[None]:
    """Allocate queues on the lean pool (``on``) or the locked core while inside.

    Context: any; queues keep the core they were allocated on.
    """
    before = ENABLED.on
    ENABLED.on = on
    try:
        yield
    finally:
        ENABLED.on = before


def covers(flags: int, runtime: object) -> str | None:
    """Returns: None if the lean pool can serve a queue with these flags, else what it lacks."""
    if runtime is not None:
        return "queues of a Runtime"
    flags &= ~(WQ.HIGHPRI | WQ.FREEZABLE | WQ.CPU_INTENSIVE)
    if flags:
        return f"flags {flags!r}"
    return None


class LeanLink:
    """One workqueue on one lean pool (the kernel's ``pool_workqueue``)."""

    lean = True  # I: its items' pending state is the table's (Work.pending asks)

    __slots__ = (
        "__weakref__",
        "active_limit",
        "armed",
        "barriers",
        "cancelled_armed",
        "cpu_thread",
        "fired",
        "freed",
        "freezable",
        "held",
        "inactive",
        "limit",
        "max_active",
        "moved_in",
        "moved_out",
        "nr_active",
        "nr_cancelled",
        "nr_completed",
        "nr_failed",
        "nr_max_active_hits",
        "pool",
        "q",
        "queued",
        "refunded",
        "room_waiters",
        "started",
        "taken",
        "wq",
    )

    def __init__(
        self,
        pool: LeanPool,
        wq: Any,
        max_active: int,
        limit: int,
        *,
        highpri: bool = False,
        freezable: bool = False,
    ) -> None:
        self.pool = pool  # I
        self.wq = wq  # I
        self.freezable = freezable  # I: WQ.FREEZABLE (R18)
        # I: WQ.CPU_INTENSIVE: plain functions run in the queue's threads (R17)
        self.cpu_thread = bool(wq.flags & WQ.CPU_INTENSIVE)
        self.active_limit = max_active  # I: max_active when not frozen
        # I: the pool's deque its entries go on: ``hi`` for a WQ.HIGHPRI queue, which the
        # workers look at first (R5), else ``inbox``.
        self.q: deque[Any] = pool.hi if highpri else pool.inbox
        # O: the effective max_active, 0 while frozen (R18; set at allocation while frozen).
        self.max_active = 0 if freezable and FROZEN.on else max_active
        self.limit = limit  # I: R21's bound, 0: unbounded
        self.nr_active = 0  # O: started and not ended (R7)
        self.inactive: deque[list[Any]] = deque()  # O: still-pending tokens over max_active
        self.barriers: list[_Barrier] = []  # O: flushes whose snapshot is not empty
        self.queued = itertools.count()  # A: successful queues (and refunded tries, R21)
        self.refunded = itertools.count()  # A: tries that R1 or R21 refused
        # R21, where limit is set. The room used is
        # queued - refunded + taken - started - freed + fired.
        self.started = 0  # O: instances started, or met stale with their room still held
        # A: rooms given back: by the cancel that won, by an arm (an armed instance holds
        # none), by a move that took its instance off the inbox.
        self.freed = itertools.count()
        self.taken = itertools.count()  # A: rooms taken by a move onto the inbox
        self.fired = 0  # O: armed instances placed on the inbox, which hold a room from then
        # A: queue_work_wait calls waiting for room, in the order they began to wait. While
        # one waits, a queue that does not wait is refused: room that frees is theirs.
        self.room_waiters: deque[_RoomWaiter] = deque()
        # A: id(token) -> token of each pending instance whose room is held; whoever pops it
        # (the cancel that won, or the loop when it meets the token) frees that room, once.
        self.held: dict[int, list[Any]] = {}
        # A: id(token) -> token of each armed instance: the claim to place it (_lean_timer.py).
        self.armed: dict[int, list[Any]] = {}
        self.cancelled_armed = itertools.count()  # A: armed instances a cancel took the claim of
        # A: pending instances mod_delayed_work moved here from another link, and away from
        # here to another: the instance is in flight where it is now (a move is not a queue).
        self.moved_in = itertools.count()
        self.moved_out = itertools.count()
        self.nr_completed = 0  # O
        self.nr_failed = 0  # O
        self.nr_cancelled = 0  # O: stale tokens met (their cancel answered True)
        self.nr_max_active_hits = 0  # O

    def __repr__(self) -> str:
        return f"<LeanLink {self.wq.name!r} active={self.nr_active}>"

    def room_used(self) -> int:
        """R21: instances that hold a place (queued, not started nor cancelled). Context: any
        (a snapshot; a producer reads it after taking its own place with ``next(queued)``)."""
        return (
            _peek(self.queued)
            - _peek(self.refunded)
            + _peek(self.taken)
            - self.started
            - _peek(self.freed)
            + self.fired
        )

    def nr_queued(self) -> int:
        """Successful queues so far (an arm is one). Context: any (a snapshot)."""
        return _peek(self.queued) - _peek(self.refunded)

    def cancelled(self) -> int:
        """Instances cancelled so far, counted as the cancel returned True: those the loop has
        met, those armed, and the stale entries the loop has yet to meet (looked for here, so
        that neither a cancel nor the hot path counts anything). Context: any (a snapshot; on
        the pool's loop, exact)."""
        return self.nr_cancelled + _peek(self.cancelled_armed) + self._stale()

    def _stale(self) -> int:
        # Cold (statistics, drain). Another thread's copy of the inbox may be one entry apart
        # from the loop's count.
        n = 0
        for e in self.q.copy():
            if type(e) is tuple:
                if e[1] is self and _is_stale(e[0]):
                    n += 1
            elif type(e) is _Handed and e.link is self and _is_stale(e.tok):
                n += 1
        for t in self.inactive.copy():
            if _is_stale(t):
                n += 1
        for w in list(self.pool.workers):
            r = w.redo
            if r is not None and w.rlink is self and _is_stale(r):
                n += 1
        return n

    def in_flight(self) -> int:
        """Instances queued, not armed, and not ended or skipped yet: what a flush or a drain
        waits for (R13, R14). Context: any (a snapshot)."""
        return (
            self.nr_queued()
            + _peek(self.moved_in)
            - _peek(self.moved_out)
            - self.nr_completed
            - self.nr_failed
            - self.cancelled()
            - len(self.armed)
        )


def _is_stale(tok: list[Any]) -> bool:
    """True if the instance ``tok`` was cancelled (not moved: its successor is the instance)."""
    try:
        return type(tok[1]) is not _Moved
    except IndexError:
        return False  # still pending


class _Barrier:
    """A flush of one link (R13): the tokens still unfinished when the loop popped it."""

    __slots__ = ("fut", "left", "link")

    def __init__(self, link: LeanLink, fut: asyncio.Future[None]) -> None:
        self.link = link  # I
        self.fut = fut  # I: completed on its own loop
        self.left: dict[int, list[Any]] = {}  # O: id -> token, of the tokens waited for


class _FreezeBarrier(_Barrier):
    """A freeze of one link (R18): the items active when it froze. A thaw releases it."""

    __slots__ = ()


class _LeanWorker:
    """One worker task. Owner: the pool's loop."""

    __slots__ = ("counted", "current", "fut", "pwq", "redo", "rlink", "task", "tok")

    def __init__(self) -> None:
        self.counted = False  # O: woken or spawned by the loop and not yet looking (waking)
        # O, read as a snapshot by current_work(): the item being run, and its link.
        self.current: Work | None = None
        self.pwq: LeanLink | None = None
        self.tok: list[Any] | None = None  # O: the token of the run in progress
        # O: the next instance of the item this worker runs (R3), which it takes next; it holds
        # a max_active slot of its link (``rlink``) already.
        self.redo: list[Any] | None = None
        self.rlink: LeanLink | None = None
        # O: set before the worker parks on the idle list; a waker (a handler too) completes it.
        self.fut: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None  # I


class _Claim:
    """Who decided a room waiter's fate: the first of these appended to its ``claim``."""

    __slots__ = ()


_GRANT = _Claim()  # the loop handed it a room
_LEAVE = _Claim()  # it was cancelled (or failed) while it waited


class _RoomWaiter:
    """One ``queue_work_wait`` waiting for room on a bounded link (R21)."""

    __slots__ = ("claim", "fut")

    def __init__(self, fut: asyncio.Future[None]) -> None:
        self.fut = fut  # I: on the waiter's own loop
        # A: _GRANT or _LEAVE, appended; the first decides (as the table's fates do), so a
        # room is handed to a waiter that leaves at the same moment exactly once, or not at all.
        self.claim: list[_Claim] = []


class _Handed:
    """An inbox entry: a token that waited for a max_active slot and holds one now (R7)."""

    __slots__ = ("link", "tok")

    def __init__(self, tok: list[Any], link: LeanLink) -> None:
        self.tok = tok  # I
        self.link = link  # I


class LeanPool:
    """The worker tasks of one event loop and the inbox they take from.

    Context: :meth:`queue`, :meth:`submit` and :meth:`flush` from any thread (and a signal
    handler); the rest on the pool's loop.
    """

    __slots__ = (
        "dead",
        "dying",
        "granting",
        "hi",
        "idle",
        "inbox",
        "kick_armed",
        "links",
        "loop",
        "max_workers",
        "nr_workers",
        "sleeping",
        "tid",
        "timers",
        "waiters",
        "waking",
        "workers",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop  # I
        self.tid = threading.get_ident()  # I: made on its loop's thread
        self.max_workers = CONFIG.max_workers  # I
        # A: (token, link) entries and barriers, FIFO. The link rides with the token: a stale
        # token (its cancel won) must be counted on the link it was queued to, and the item's
        # ``_pwq`` may name a newer instance's link by the time the loop meets it.
        self.inbox: deque[Any] = deque()
        self.hi: deque[Any] = deque()  # A: the same, for WQ.HIGHPRI queues: looked at first
        self.idle: list[_LeanWorker] = []  # A: parked workers
        self.sleeping = True  # A: no worker is on its way to the inbox
        self.kick_armed = False  # A: a call_soon_threadsafe(_kick) is on its way
        self.waking = 0  # O: workers woken or spawned by the loop, not yet looking
        self.nr_workers = 0  # O
        self.workers: set[_LeanWorker] = set()  # O
        # O (added on the loop's thread, at allocation), weakly: a queue dropped without
        # destroy_workqueue must not live as long as the pool (its pending items keep it).
        self.links: weakref.WeakSet[LeanLink] = weakref.WeakSet()
        self.dead = False  # O: the loop ended; set once
        # O: every task of the loop is being cancelled (asyncio.run's end): no worker starts
        # now, asyncio would never cancel it; what waits is taken back at the end.
        self.dying = False
        # O: id(token) → futures of flush_work / cancel_work_sync calls that wait for that
        # instance to end or be skipped (R11, R12).
        self.waiters: dict[int, list[asyncio.Future[None]]] = {}
        self.timers = LeanTimers(loop, self._fire)  # I: its armed instances (R8)
        self.granting = threading.Lock()  # O: held while rooms are handed out; only tried

    def __repr__(self) -> str:
        return f"<LeanPool workers={self.nr_workers} inbox={len(self.inbox)}>"

    # -- any thread -------------------------------------------------------------------------

    def queue(self, link: LeanLink, work: Work) -> bool:
        """R1: True if a new instance of ``work`` is pending now.

        Context: any thread (a signal handler: see the module docstring).
        Raises: WorkqueueFullError at R21's bound (nothing changed).
        """
        if link.limit:
            if TABLE.is_pending(work):
                return False  # R1 before R21: a pending item is not refused for room
            next(link.queued)
            if link.room_used() > link.limit or link.room_waiters:
                next(link.refunded)
                if link.room_waiters:
                    self._poke(link)  # the room it held a moment may be a waiter's
                raise WorkqueueFullError(
                    f"queue_work: workqueue {link.wq.name!r} is full "
                    f"(max_pending {link.limit}); {describe(work)} was not queued"
                )
            n = TABLE.acquire(work)
            if n is None:
                next(link.refunded)
                if link.room_waiters:
                    self._poke(link)
                return False
            link.held[id(n)] = n  # before the append: the loop pops it when it meets n
        else:
            t = work._tok
            if t is not None and len(t) == 2 and t[1] is _RUN:  # ran before: the common case
                n = [work]
                t.append(n)  # the step that decides (PendingTable._link, inline)
                if t[2] is not n:
                    n[0] = None
                    n = TABLE.acquire(work)
                    if n is None:
                        return False
                else:
                    work._tok = n
            else:
                n = TABLE.acquire(work)
                if n is None:
                    return False
            next(link.queued)
        work._pwq = link  # W: before the append makes the token visible
        link.q.append((n, link))
        if self.sleeping:
            self.wake()
        if self.dead:
            self._late(link, work, n)
        return True

    def submit(self, link: LeanLink, work: Work) -> None:
        """Queue a new item nobody else can see yet: it is born with its token (no decision).

        Context: any thread. Raises: WorkqueueFullError at R21's bound (nothing queued).
        """
        next(link.queued)
        if link.limit and (link.room_used() > link.limit or link.room_waiters):
            next(link.refunded)
            if link.room_waiters:
                self._poke(link)
            raise WorkqueueFullError(
                f"submit: workqueue {link.wq.name!r} is full (max_pending {link.limit}); "
                f"{describe(work)} was not queued"
            )
        n = [work]
        work._tok = n
        if link.limit:
            link.held[id(n)] = n
        work._pwq = link
        link.q.append((n, link))
        if self.sleeping:
            self.wake()
        if self.dead:
            self._late(link, work, n)

    def _late(self, link: LeanLink, work: Work, n: list[Any]) -> None:
        # The loop's end swept the inbox (dead is set before each sweep) while we appended: a
        # sweep that came after the append took the entry back and reported it, and True
        # stands (R20). Else the entry is ours to take back, and nothing was queued.
        if TABLE.cancel(work) is n:
            raise WorkqueueLoopError(
                f"queue_work: the event loop of workqueue {link.wq.name!r} has shut down; "
                f"nothing would run {describe(work)}"
            )

    # -- delayed work (any thread) -----------------------------------------------------------

    def arm(self, link: LeanLink, work: Work, delay: float) -> bool:
        """R8: True if ``work`` was idle and is armed now, to be queued on ``link`` once
        ``delay`` (> 0) seconds have passed; False if it was pending (R1) or is disabled.
        Arming takes no R21 room: the instance takes one when its timer fires.

        Context: any thread (a signal handler: see the module docstring).
        """
        n = TABLE.acquire(work)
        if n is None:
            return False
        next(link.queued)
        if link.limit:
            next(link.freed)  # counted as queued, and holding no room while armed
        self._arm(link, work, n, delay, True)
        return True

    def _arm(self, link: LeanLink, work: Work, n: list[Any], delay: float, new: bool) -> None:
        # ``new``: a new instance, counted as queued (not a moved one).
        link.armed[id(n)] = n  # the claim, before the entry can be seen
        work._pwq = link  # W
        timers = self.timers
        try:
            timers.arm(timers.deadline(delay), n, link)
        except RuntimeError:
            if not self.dead:
                raise
        # As _late: the loop's end swept the claims; if it swept ours, it reported it.
        if self.dead and link.armed.pop(id(n), None) is not None and TABLE.cancel(work) is n:
            if new:
                next(link.refunded)  # nothing was queued
                if link.limit:
                    next(link.taken)  # and the room the arm gave back was never taken
            raise WorkqueueLoopError(
                f"queue_delayed_work: the event loop of workqueue {link.wq.name!r} has "
                f"shut down; nothing would run {describe(work)}"
            )

    def mod(self, link: LeanLink, work: Work, delay: float) -> bool:
        """R9: move the pending instance of ``work`` to ``link``, armed for ``delay`` seconds
        (or at the inbox's tail for 0), or make one if none is pending.

        Context: any thread.
        Returns: True if an instance was pending (armed, or queued and not started); False if
        none was (one is now), or if ``work`` is disabled (nothing changed).
        Raises: WorkqueueFullError for ``delay`` 0 at R21's bound (nothing changed), unless the
        instance was queued on ``link`` already: it keeps its room as it moves.
        """
        before = work._pwq
        reserved = False
        if link.limit and not delay:
            t = TABLE.pending(work)
            if not (t is not None and before is link and id(t) in link.held):
                next(link.taken)
                reserved = True
                if link.room_used() > link.limit or link.room_waiters:
                    self._room_back(link)
                    raise WorkqueueFullError(
                        f"mod_delayed_work: workqueue {link.wq.name!r} is full (max_pending "
                        f"{link.limit}); {describe(work)} was not queued"
                    )
        old, n = TABLE.move(work)
        if n is None:  # disabled: nothing moved, nothing made
            if reserved:
                next(link.freed)
            return False
        # Where the old instance was: armed (its claim comes off), or queued with its room
        # (which comes off with it: the stale entry left behind frees nothing).
        old_room: LeanLink | None = None
        if old is not None:
            if type(before) is LeanLink:
                before.pool.gone(before, old, work)  # moved: a new instance, no flush waits for it
            if type(before) is LeanLink and before is not link:
                next(before.moved_out)  # the instance is in flight on link from now
                next(link.moved_in)
            if type(before) is LeanLink and before.armed.pop(id(old), None) is not None:
                before.pool.timers.garbage()  # its entry: the move took the claim
            elif (
                type(before) is LeanLink
                and before.limit
                and before.held.pop(id(old), None) is not None
            ):
                old_room = before
        else:
            next(link.queued)  # idle: a new instance, as a queue makes
        if delay:
            if old_room is not None:
                self._room_back(old_room)
            if link.limit and old is None:
                next(link.freed)  # as arm(): counted as queued, holding no room while armed
            self._arm(link, work, n, delay, old is None)
            return old is not None
        if link.limit:
            if old_room is link:
                if reserved:
                    next(link.freed)  # its own room moves with it
            else:
                if old_room is not None:
                    next(old_room.freed)
                if old is None:
                    if reserved:
                        next(link.freed)  # counted as queued already
                elif not reserved:
                    next(link.taken)  # it was held here when we looked, and is not now
            link.held[id(n)] = n
        elif old_room is not None:
            next(old_room.freed)
        self._publish(link, work, n)
        if old_room is not None and old_room.room_waiters:
            self._poke(old_room)
        return old is not None

    # -- R18: freezing ---------------------------------------------------------------------------

    async def freeze(self, links: list[LeanLink]) -> None:
        """Freeze ``links`` (max_active 0: new items wait, in order) and wait for the items
        that were active (running, handed a slot, or a worker's next) to end (R18).

        Context: a coroutine on any loop; the freezing is the pool loop's.
        """
        running = asyncio.get_running_loop()
        futs: list[asyncio.Future[None]] = []
        if running is self.loop:
            self._freeze(links, futs, running, None)
        else:
            done = running.create_future()
            try:
                self.loop.call_soon_threadsafe(self._freeze, links, futs, running, done)
            except RuntimeError:
                return  # closed: nothing of it runs any more
            await done
        for fut in futs:
            await fut

    def _freeze(
        self,
        links: list[LeanLink],
        futs: list[asyncio.Future[None]],
        loop: asyncio.AbstractEventLoop,
        done: asyncio.Future[None] | None,
    ) -> None:
        try:
            for link in links:
                link.max_active = 0
                b = _FreezeBarrier(link, loop.create_future())
                left = b.left
                for w in self.workers:
                    if w.tok is not None and w.pwq is link:
                        left[id(w.tok)] = w.tok
                    r = w.redo
                    if r is not None and w.rlink is link and len(r) == 1:
                        left[id(r)] = r  # a stale one (cancelled) only waits to be skipped
                for e in link.q.copy():
                    if type(e) is _Handed and e.link is link and len(e.tok) == 1:
                        left[id(e.tok)] = e.tok
                if left:
                    link.barriers.append(b)
                    futs.append(b.fut)
                    self._recheck(b)
        finally:
            if done is not None:
                complete(done)

    def thaw(self, links: list[LeanLink]) -> None:
        """Give ``links`` their max_active back and start what waited, in order (R18).

        Context: any thread; the thawing is the pool loop's."""
        if threading.get_ident() == self.tid:
            self._thaw(links)
            return
        try:
            self.loop.call_soon_threadsafe(self._thaw, links)
        except RuntimeError:
            pass  # closed

    def _thaw(self, links: list[LeanLink]) -> None:
        for link in links:
            link.max_active = link.active_limit
            for b in [b for b in link.barriers if type(b) is _FreezeBarrier]:
                link.barriers.remove(b)  # a freeze that still waits: it is over
                self._resolve(b)
            if link.inactive:
                self._hand_on(link)

    # -- R21: waiting for room (queue_work_wait) ---------------------------------------------

    async def queue_wait(self, link: LeanLink, work: Work, own: bool) -> bool:
        """R21: queue ``work`` on the bounded ``link``, first waiting for room, in line.

        ``own``: the caller is an item of ``link``, which runs one at a time: waiting could not
        end (R15). Context: a coroutine on any loop.
        Returns: as :func:`queue_work_wait`. Raises: WorkqueueDeadlockError (see ``own``).
        """
        if not link.room_waiters:
            try:
                return self.queue(link, work)
            except WorkqueueFullError:
                pass
        if TABLE.is_pending(work) or TABLE.disabled(work):
            return False  # R1 first, without waiting
        if own:
            raise WorkqueueDeadlockError(
                f"queue_work_wait: workqueue {link.wq.name!r} is full and runs one item at a "
                f"time; waiting from its own item would never end; {describe(work)}"
            )
        w = _RoomWaiter(asyncio.get_running_loop().create_future())
        link.room_waiters.append(w)
        self._poke(link)  # room that freed before the append is handed out now
        try:
            await w.fut
        except BaseException:
            w.claim.append(_LEAVE)
            if w.claim[0] is _GRANT:
                self._room_back(link)  # handed one after all: it goes to the next waiter
            else:
                try:
                    link.room_waiters.remove(w)
                except ValueError:
                    pass  # the loop popped it, and its grant lost to this leave
            raise
        if self.dead:
            raise WorkqueueLoopError(
                f"queue_work_wait: the event loop of workqueue {link.wq.name!r} has shut "
                f"down; nothing would run {describe(work)}"
            )
        n = TABLE.acquire(work)
        if n is None:
            self._room_back(link)  # pending or disabled meanwhile: the room goes on
            return False
        next(link.queued)
        next(link.freed)  # the handed room is the one this queue counts from now
        link.held[id(n)] = n
        self._publish(link, work, n)
        return True

    def _publish(self, link: LeanLink, work: Work, n: list[Any]) -> None:
        """Put the new pending instance ``n`` on the inbox (what :meth:`queue` and
        :meth:`submit` do inline, for the calls off the hot path). Context: any thread."""
        work._pwq = link  # W: before the append makes the token visible
        link.q.append((n, link))
        if self.sleeping:
            self.wake()
        if self.dead:
            self._late(link, work, n)

    def _room_back(self, link: LeanLink) -> None:
        """A room of ``link`` is free again; a waiter gets it. Context: any thread."""
        next(link.freed)
        if link.room_waiters:
            self._poke(link)

    def _poke(self, link: LeanLink) -> None:
        # Context: any thread. The loop hands rooms out (_grant), in line: at once from a task
        # of its own (as the locked core does in the freeing section), else posted.
        if threading.get_ident() == self.tid and _current_task(self.loop) is not None:
            self._grant(link)
            return
        try:
            self.loop.call_soon_threadsafe(self._grant, link)
        except RuntimeError:
            pass  # closed: its end woke every waiter

    def _grant(self, link: LeanLink) -> None:
        """Hand the rooms free now to the first waiters. Context: the pool's loop thread.

        ``granting`` keeps a signal handler that interrupted a grant from granting inside it
        (two could hand out the same last room): it posts instead."""
        if not self.granting.acquire(False):
            self.loop.call_soon_threadsafe(self._grant, link)
            return
        try:
            self._grant_locked(link)
        finally:
            self.granting.release()

    def _grant_locked(self, link: LeanLink) -> None:
        dq = link.room_waiters
        while dq and link.room_used() < link.limit:
            next(link.taken)  # first: a queue that does not wait sees the room gone
            try:
                w = dq.popleft()
            except IndexError:
                next(link.freed)  # the last one left meanwhile
                return
            w.claim.append(_GRANT)
            if w.claim[0] is _GRANT:
                complete(w.fut)
            else:
                next(link.freed)  # it left: the room stays for the next

    # -- delayed work (the loop) -------------------------------------------------------------

    def _fire(self, tok: list[Any], link: LeanLink) -> None:
        """``tok``'s timer is due: queue it, if the claim is still there to take."""
        if link.armed.pop(id(tok), None) is not None:
            self._placed(tok, link)
        # else a cancel, a move or a fire at once took the claim: garbage

    def _placed(self, tok: list[Any], link: LeanLink) -> None:
        """The claim of the armed ``tok`` was taken here: queue it on the inbox's tail, where
        it takes its place (R6). Context: the pool's loop."""
        if len(tok) != 1:  # decided since: a cancel whose freed() looked at another link
            if type(tok[1]) is not _Moved:
                link.nr_cancelled += 1
            return
        if link.limit:
            link.fired += 1  # R21: it holds a room from now, even over the bound
            link.held[id(tok)] = tok
        link.q.append((tok, link))
        if self.sleeping:
            self.wake()

    async def fire_now(self, link: LeanLink, tok: list[Any] | None) -> None:
        """flush_delayed_work (``tok``, if it is armed) or destroy_workqueue (None: every armed
        instance of ``link``, R14): queue them now. Returns once they are on the inbox.

        Context: a coroutine on any loop; the firing is the pool loop's (``fired`` is its).
        """
        running = asyncio.get_running_loop()
        if running is self.loop:
            self._fire_now(link, tok, None)
            return
        fut = running.create_future()
        try:
            self.loop.call_soon_threadsafe(self._fire_now, link, tok, fut)
        except RuntimeError:
            return  # closed: its end took every claim back and reported it
        await fut

    def _fire_now(
        self, link: LeanLink, tok: list[Any] | None, fut: asyncio.Future[None] | None
    ) -> None:
        try:
            toks = list(link.armed.values()) if tok is None else [tok]
            for t in toks:
                if link.armed.pop(id(t), None) is not None:
                    self.timers.garbage()  # its entry stays behind in the heap
                    self._placed(t, link)
        finally:
            if fut is not None:
                complete(fut)

    def wake(self) -> None:
        """A producer found nobody on its way to the inbox (``sleeping``): wake or call one.

        Context: any thread (a signal handler: see the module docstring); right after the
        producer's append.
        """
        # On the loop's thread a signal handler may land
        # anywhere in here, or in a worker's park: each step is one list operation or store,
        # and each allows for the other having gone first.
        self.sleeping = False
        if threading.get_ident() == self.tid:
            try:
                w = self.idle.pop()
            except IndexError:  # every worker busy, or none yet: the loop starts one
                self.loop.call_soon(self._kick)
                return
            fut = w.fut
            if fut is not None and not fut.done():
                fut.set_result(None)
            else:  # cancelled while parked (the loop is ending): the loop decides
                self.loop.call_soon(self._kick)
        else:
            if self.kick_armed:
                return  # one is on its way, and clears this before it looks at the inbox
            self.kick_armed = True
            try:
                self.loop.call_soon_threadsafe(self._kick)
            except RuntimeError:
                if not self.dead:
                    raise
                # Closed just now: the entry stays in the inbox, where the loop's end took or
                # takes it back and reports it (R20).

    async def flush(self, link: LeanLink) -> None:
        """R13: wait for what was queued on ``link`` before the call.

        Context: a coroutine on any loop; the barrier is one append, and its end is posted to
        the caller's loop.
        """
        b = _Barrier(link, asyncio.get_running_loop().create_future())
        link.q.append(b)
        if self.sleeping:
            self.wake()
        await b.fut

    # -- the loop ---------------------------------------------------------------------------

    def _kick(self) -> None:
        # A loop callback: never inside a worker's step, so it may change the counts. A
        # producer that saw kick_armed set appended before this store, so the look below
        # sees its entry.
        self.kick_armed = False
        if self.inbox or self.hi:
            if not self.waking:
                self._call_worker()
        elif not self.waking:
            self._no_one_coming()

    def _call_worker(self) -> None:
        """Wake a parked worker, or start one: it is on its way to the inbox (``waking``).
        Context: the loop, in a worker's step or a loop callback."""
        if self.dead or self.dying:
            return
        idle = self.idle
        while True:
            try:
                w = idle.pop()
            except IndexError:
                break  # none parked, or a handler took the last one (and woke it)
            fut = w.fut
            if fut is not None and not fut.done():
                w.counted = True
                self.waking += 1
                fut.set_result(None)
                return
        if self.nr_workers < self.max_workers:
            self.nr_workers += 1
            self.waking += 1
            w = _LeanWorker()
            w.counted = True
            self.workers.add(w)
            w.task = self.loop.create_task(self._worker(w), name=f"aiowq-v2:{self.nr_workers}")
        # else every worker is busy: the next one whose run ends looks at the inbox

    def _no_one_coming(self) -> None:
        """Nobody is on the way to the inbox: tell producers, then look once more."""
        self.sleeping = True
        if self.inbox or self.hi:
            self.sleeping = False
            if not self.waking:
                self._call_worker()

    def _resolve(self, b: _Barrier) -> None:
        complete(b.fut)  # on its own loop, which may be another thread's

    def _snapshot(self, b: _Barrier) -> None:
        # Everything queued on the link before the barrier has been popped: what is unfinished
        # waits for a slot, holds one on the inbox's front (ahead of this barrier), is some
        # worker's next instance, or runs.
        # A token decided since (cancelled, or moved: its successor, queued before the barrier
        # too, is met on its own) is not waited for: it only waits to be met and skipped.
        link = b.link
        left = b.left
        for t in link.inactive:
            if len(t) == 1:
                left[id(t)] = t
        for w in self.workers:
            if w.tok is not None and w.pwq is link:
                left[id(w.tok)] = w.tok
            r = w.redo
            if r is not None and w.rlink is link and len(r) == 1:
                left[id(r)] = r
        if left:
            link.barriers.append(b)
            self._recheck(b)
        else:
            self._resolve(b)

    def _recheck(self, b: _Barrier) -> None:
        # After the barrier is on link.barriers: a pending token that a cancel or a move on
        # another thread decided before it could see the barrier (gone()) is dropped here.
        left = b.left
        for k, t in list(left.items()):
            if len(t) != 1 and t[1] is not _RUN:
                del left[k]
        if not left:
            b.link.barriers.remove(b)
            self._resolve(b)

    def _settled(self, link: LeanLink, tok: list[Any]) -> None:
        # Cold: only while a barrier waits on the link.
        k = id(tok)
        for b in list(link.barriers):
            left = b.left
            left.pop(k, None)
            if not left:
                link.barriers.remove(b)
                self._resolve(b)

    def _skip(self, tok: list[Any], link: LeanLink, slot: bool) -> None:
        """A stale token met (its cancel answered True): counted once, since only the loop
        meets a token, and only once. ``slot``: it held a max_active slot, which frees. A
        token moved by ``mod_delayed_work`` is not a cancel: its successor is the instance."""
        if type(tok[1]) is not _Moved:
            link.nr_cancelled += 1
        if link.limit and link.held.pop(id(tok), None) is not None:
            link.started += 1  # R21: its place is free (else its cancel freed it)
            if link.room_waiters:
                self._grant(link)
        if link.barriers:
            self._settled(link, tok)
        if self.waiters:
            self._release(tok)
        if slot:
            link.nr_active -= 1
            if link.inactive:
                self._hand_on(link)

    def _elsewhere(self, tok: list[Any], link: LeanLink) -> None:
        """R3 across pools: ``tok``'s item runs on another loop's worker, which this loop may
        not hand it to (that worker's fields are its own loop's). The token gives its slot
        back and waits first in line, still pending and seen by barriers, and the line is
        looked at again shortly: a poll, for the rare item queued on two loops' queues."""
        link.nr_active -= 1
        link.inactive.appendleft(tok)
        self.loop.call_later(_ELSEWHERE_POLL, self._hand_on, link)

    def _hand_on(self, link: LeanLink) -> None:
        """Slots of ``link`` are free: its first waiting tokens take them, in order (R7), and go
        on the inbox's front for the next worker that looks."""
        inactive = link.inactive
        handed: list[_Handed] = []
        while inactive and link.nr_active < link.max_active:
            tok = inactive.popleft()
            if len(tok) != 1:
                self._skip(tok, link, False)  # cancelled while it waited
                continue
            link.nr_active += 1
            handed.append(_Handed(tok, link))
        if handed:
            handed.reverse()
            link.q.extendleft(handed)  # which reverses again: in line order, at the front
            if not self.waking:
                self._call_worker()

    async def _worker(self, me: _LeanWorker) -> None:
        _WORKER.set(me)  # type: ignore[arg-type]  # current_work() reads current and pwq
        inbox, hi, loop = self.inbox, self.hi, self.loop
        popleft = inbox.popleft
        batch = 0
        try:
            while True:
                if me.counted:
                    me.counted = False
                    self.waking -= 1
                link: LeanLink
                # Every path below ends with a token that holds a max_active slot of its
                # link, or continues. A token whose slot 0 is None was decided by a cancel
                # (or a disable); one decided but not cleared yet is caught by the take's
                # append further down.
                if me.redo is not None:  # R3: the next instance of the item it ran
                    tok, link = me.redo, me.rlink  # type: ignore[assignment]  # set together
                    me.redo = me.rlink = None
                    work = tok[0]
                    if work is None:
                        self._skip(tok, link, True)
                        continue
                elif inbox or hi:
                    if batch >= _BATCH:  # cond_resched, before taking: nothing is in hand
                        batch = 0
                        await asyncio.sleep(0)
                        continue
                    e = hi.popleft() if hi else popleft()  # R5: WQ.HIGHPRI first
                    if type(e) is tuple:
                        tok, link = e
                        work = tok[0]
                        if work is None:
                            self._skip(tok, link, False)  # cancelled in flight
                            continue
                        if link.nr_active >= link.max_active or link.inactive:
                            # R7: it waits, still pending, in order.
                            link.nr_max_active_hits += 1
                            link.inactive.append(tok)
                            continue
                        link.nr_active += 1  # its slot, from now on
                    elif type(e) is _Handed:  # given a slot as it left the waiting list
                        tok, link = e.tok, e.link
                        work = tok[0]
                        if work is None:
                            self._skip(tok, link, True)
                            continue
                    else:
                        self._snapshot(e)
                        continue
                else:
                    batch = 0
                    me.current = me.pwq = None  # left set after a run: cleared before a park
                    # So are this frame's references to the last entry: a parked worker must
                    # not keep a dropped queue (or its items) alive.
                    e = tok = work = link = None  # type: ignore[assignment]
                    fut = me.fut = loop.create_future()
                    idle = self.idle
                    idle.append(me)
                    if not self.waking:
                        self._no_one_coming()
                    if inbox or hi:  # entries came meanwhile: look again
                        try:
                            idle.remove(me)
                        except ValueError:
                            pass  # a waker took us meanwhile: its wake-up is dropped
                        me.fut = None
                        continue
                    await fut
                    me.fut = None
                    continue
                by = work._by
                if by is not None:  # R3: it runs on that worker, which takes it next
                    if by not in self.workers:
                        self._elsewhere(tok, link)
                        continue
                    old = by.redo
                    if old is not None:  # R1: only a stale one can be there
                        self._skip(old, by.rlink, True)
                    by.redo, by.rlink = tok, link
                    continue
                tok.append(_RUN)  # R2: the pending bit clears here
                if tok[1] is not _RUN:
                    self._skip(tok, link, True)  # a cancel won just now
                    continue
                tok[0] = None
                if link.limit and link.held.pop(id(tok), None) is not None:
                    link.started += 1  # R21: its place frees
                    if link.room_waiters:
                        self._grant(link)
                work._by = me
                me.tok, me.current, me.pwq = tok, work, link
                if not self.waking:  # nobody else on the way to the inbox
                    if inbox or hi:
                        self._call_worker()  # a successor, for items that await
                    else:
                        self._no_one_coming()  # a producer must wake one now
                batch += 1
                try:
                    if work._state & _ASYNC_OR_CALL == ASYNC_FN:
                        await work.func(work)
                    elif link.cpu_thread and not work._state & ASYNC_FN:  # R17: in a thread
                        r = await loop.run_in_executor(
                            link.wq._cpu_executor(), _call_in_thread, work
                        )
                        if r is not None and (type(r) is CoroutineType or _isawaitable(r)):
                            await r
                    else:
                        r = _call(work)  # R17: a plain function runs inline on the loop
                        if r is not None and (type(r) is CoroutineType or _isawaitable(r)):
                            await r
                except asyncio.CancelledError as exc:
                    task = me.task
                    if task is not None and task.cancelling():  # the worker itself: the end
                        if _tearing_down(loop):
                            self.dying = True  # before _end: its slot must not start a worker
                        self._end(me, work, link, failed=True)
                        self._report_now(link, work, exc)
                        raise
                    self._end(me, work, link, failed=True)
                    await self._report(link, work, exc)
                    continue
                except Exception as exc:  # R16: never reaches the producer, never stops us
                    self._end(me, work, link, failed=True)
                    await self._report(link, work, exc)
                    continue
                # _end, inline: the common end of a run.
                work._by = None
                me.tok = None
                link.nr_completed += 1
                link.nr_active -= 1
                if link.inactive:
                    self._hand_on(link)
                if link.barriers:
                    self._settled(link, tok)
                if self.waiters:
                    self._release(tok)
        finally:
            if me.fut is not None:  # cancelled while parked
                try:
                    self.idle.remove(me)
                except ValueError:
                    pass  # a waker took it
                me.fut = None
                if _tearing_down(loop):
                    self.dying = True  # the same rule as for a worker cancelled mid-run
            self.nr_workers -= 1
            self.workers.discard(me)
            if me.counted:
                self.waking -= 1
            me.current = me.pwq = me.tok = None
            if me.redo is not None and me.rlink is not None:  # for another worker, or the end
                me.rlink.q.appendleft(_Handed(me.redo, me.rlink))
                me.redo = me.rlink = None

    def _end(self, me: _LeanWorker, work: Work, link: LeanLink, *, failed: bool) -> None:
        """A run ended (the worker loop inlines the common case, a normal return)."""
        tok = me.tok
        work._by = None
        me.tok = me.current = me.pwq = None  # the handler that runs next is not the item
        if failed:
            link.nr_failed += 1
        else:
            link.nr_completed += 1
        link.nr_active -= 1
        if link.inactive:
            self._hand_on(link)
        if link.barriers:
            assert tok is not None
            self._settled(link, tok)
        if self.waiters:
            assert tok is not None
            self._release(tok)

    def _release(self, tok: list[Any]) -> None:
        for fut in self.waiters.pop(id(tok), ()):
            complete(fut)

    async def wait_item(self, work: Work, tok: list[Any] | None) -> bool:
        """Wait until the instance ``tok`` of ``work`` (pending at the call, or None) and the
        run of ``work`` in progress on this pool at the call have ended or were skipped (R11,
        R12). A pending instance that a cancel or a move decides meanwhile is not waited for
        any longer, the run still is.

        Context: a coroutine on any loop. Which run is in progress is read, and the waits are
        registered, on the pool's loop (from another thread ``work._by`` may be between a take
        and its store). Returns: True if ``tok`` was given or a run was in progress.
        """
        running = asyncio.get_running_loop()
        futs = [running.create_future(), running.create_future()]
        if running is self.loop:
            ran = self._watch(work, tok, futs)
        else:
            done = running.create_future()
            box = [False]
            try:
                self.loop.call_soon_threadsafe(self._watch_remote, work, tok, futs, box, done)
            except RuntimeError:
                return tok is not None  # closed: what it left was taken back and reported
            await done
            ran = box[0]
        for fut in futs:
            await fut
        return tok is not None or ran

    def _watch(self, work: Work, tok: list[Any] | None, futs: list[asyncio.Future[None]]) -> bool:
        # On the pool's loop: register, then look. A cancel or a move on another thread decides
        # first, then looks for waiters (gone()): one of the two sees the other's step.
        by = work._by
        run = by.tok if by is not None and by in self.workers else None
        for t, fut in ((tok, futs[0]), (run, futs[1])):
            if t is None or self.dead:
                complete(fut)
                continue
            self.waiters.setdefault(id(t), []).append(fut)
            if not (len(t) == 1 or t is run or any(w.tok is t for w in self.workers)):
                self._release(t)  # it ended, or was decided, before we looked
        return run is not None

    def _watch_remote(
        self,
        work: Work,
        tok: list[Any] | None,
        futs: list[asyncio.Future[None]],
        box: list[bool],
        done: asyncio.Future[None],
    ) -> None:
        try:
            box[0] = self._watch(work, tok, futs)
        finally:
            complete(done)

    def gone(self, link: LeanLink, tok: list[Any], work: Work) -> None:
        """A cancel, a disable or a move decided the pending ``tok`` of ``work``: the flushes
        that wait for it stop waiting now, and a max_active slot it holds as the next instance
        of a running item (a worker's ``redo``, R3) frees now, not when the loop meets it
        after that run (R7, R11-R13). Context: any thread, right after the decision; posted,
        so that a signal handler never touches what the loop owns.

        A worker stores a token as its ``redo`` only while ``work._by`` is set: read after the
        decision, either it is set (and the post finds the token) or the run ended first and
        the worker meets the token next, at once."""
        if link.barriers or self.waiters or work._by is not None:
            try:
                self.loop.call_soon_threadsafe(self._forget, link, tok)
            except RuntimeError:
                pass  # closed: its end released every wait

    def _forget(self, link: LeanLink, tok: list[Any]) -> None:
        for w in self.workers:
            if w.redo is tok:
                rlink = w.rlink
                w.redo = w.rlink = None
                assert rlink is not None  # set together
                self._skip(tok, rlink, True)  # settles and releases too
                return
        if link.barriers:
            self._settled(link, tok)
        if self.waiters:
            self._release(tok)

    async def _report(self, link: LeanLink, work: Work, exc: BaseException) -> None:
        """R16: give ``exc`` to the queue's handler; an async handler is awaited here."""
        try:
            r: Awaitable[object] | None = link.wq._handle_exception(work, exc)
            if r is not None and _isawaitable(r):
                await r
        except Exception:
            _log.exception("aioworkqueue: exception handler of %r failed on %r", link.wq, work)

    def _report_now(self, link: LeanLink, work: Work, exc: BaseException) -> None:
        try:
            r = link.wq._handle_exception(work, exc)
            if type(r) is CoroutineType:
                r.close()  # the loop is ending: nothing could await it
        except Exception:
            _log.exception("aioworkqueue: exception handler of %r failed on %r", link.wq, work)

    # -- the loop's end ---------------------------------------------------------------------

    def take_back(self) -> list[tuple[Work, Any, str]]:
        """The loop is ending: take back every instance still pending here, each by the
        table's cancel (a racing cancel's True, or this report: never both); refuse more.

        Context: the pool's loop thread, its tasks cancelled. Returns: (work, wq, state).
        """
        self.dead = True
        self.timers.close()
        toks: list[tuple[list[Any], LeanLink]] = []
        for dq in (self.hi, self.inbox):
            while dq:
                e = dq.popleft()
                if type(e) is tuple:
                    toks.append(e)
                elif type(e) is _Handed:
                    e.link.nr_active -= 1
                    toks.append((e.tok, e.link))
                else:
                    self._resolve(e)  # a flush: nothing it waits for can finish now
        for link in self.links:
            toks.extend((t, link) for t in link.inactive)
            link.inactive.clear()
            for b in link.barriers:
                self._resolve(b)
            link.barriers.clear()
        for w in self.workers:
            if w.redo is not None and w.rlink is not None:
                w.rlink.nr_active -= 1
                toks.append((w.redo, w.rlink))
                w.redo = w.rlink = None
        for link in self.links:
            while link.room_waiters:
                rw = link.room_waiters.popleft()
                rw.claim.append(_GRANT)
                if rw.claim[0] is _GRANT:
                    complete(rw.fut)  # it raises WorkqueueLoopError: nothing would run
        for futs in self.waiters.values():
            for fut in futs:
                complete(fut)  # what they wait for will never end now: it is reported
        self.waiters.clear()
        out: list[tuple[Work, Any, str]] = []
        for tok, link in toks:
            work = tok[0]
            if work is not None and len(tok) == 1 and TABLE.cancel(work) is tok:
                out.append((work, link.wq, "queued"))
            link.nr_cancelled += 1
            if link.limit and link.held.pop(id(tok), None) is not None:
                link.started += 1
        for link in self.links:
            for k, tok in list(link.armed.items()):
                if link.armed.pop(k, None) is None:
                    continue  # a cancel took it meanwhile, and counted it
                work = tok[0]
                if work is not None and len(tok) == 1 and TABLE.cancel(work) is tok:
                    out.append((work, link.wq, "armed"))
                link.nr_cancelled += 1
        return out


def serves(work: Work) -> bool:
    """True if ``work``'s pending state is the table's (Core v2): it was queued on a lean
    queue last, or the switch is on and it was never queued. Context: any."""
    try:
        link = work._pwq
    except AttributeError:  # skipped Work.__init__: the locked core's path says so clearly
        return False
    return type(link) is LeanLink or (link is None and ENABLED.on)


def pool_of(work: Work) -> LeanPool | None:
    """The lean pool of ``work``'s last instance, or None if it never was on one. Context: any."""
    link = work._pwq
    return link.pool if type(link) is LeanLink else None


def freed(work: Work, tok: list[Any] | None) -> None:
    """A cancel or disable of ``work`` won the pending instance ``tok``: take its timer's claim
    if it is armed (and count the cancel), else give its R21 room back now, if the link still
    holds it for ``tok`` (else the loop frees it when it meets the entry, and a producer that
    has not stored its link yet leaves it to the loop too).
    Context: any, right after the table's cancel or disable."""
    if tok is None:
        return
    link = work._pwq
    if type(link) is LeanLink:
        if link.armed.pop(id(tok), None) is not None:
            link.pool.timers.garbage()
            next(link.cancelled_armed)  # armed: it held no room, and its timer is garbage now
            return  # and nothing waits for an armed instance
        if link.limit and link.held.pop(id(tok), None) is not None:
            link.pool._room_back(link)
        link.pool.gone(link, tok, work)
