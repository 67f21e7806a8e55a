"""Worker pools: the worker tasks of one event loop (the kernel's ``worker_pool``).

The architecture, once::

    Workqueue ──(one _Pwq per pool it uses)──▶ Pool ──▶ worker tasks ──▶ work functions

A :class:`~aioworkqueue._pwq.Pwq` links a workqueue to a pool: it counts the queue's active items
there (``max_active``, R7) and holds the ones over the limit. Active items wait on the pool's
worklist (FIFO, ``WQ.HIGHPRI`` items on their own list that is served first, R5). Worker tasks take
items in order and run them; there is no Task per item.

Concurrency management, the asyncio way. The kernel starts another worker when a running one
sleeps. A worker task cannot see its item suspend, but it can leave a successor ready: when a worker
takes an item and more are waiting, it makes sure one more worker is woken (``need_more_worker``).
That worker only gets the loop when the first one yields, i.e. when its item awaits; it then takes
the next item and does the same. Items that never await run back to back on one worker; items
that await fan out over as many workers as ``max_active`` and ``max_workers`` allow.

Wake-ups are coalesced: ``nr_waking`` counts workers woken and not yet running, and nobody wakes a
second while one is on its way. A wake-up from a context where the loop may be asleep in
``select()`` (another thread, or a signal handler that interrupted the select) goes through
``call_soon_threadsafe`` (one per burst, ``kick_armed``); inside a task on the loop it is a plain
future completion.

Owner (tags as in docs/design.md §1): most attributes are L, changed under ``_lock.LOCK``; futures,
tasks and the loop timer are O, touched on the loop's own thread only (``tid``); each attribute
says which.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable
from types import CoroutineType, FrameType
from typing import Any, Protocol

from . import _barrier, _state
from ._awaitgraph import awaits
from ._errors import describe
from ._hooks import HOOKS, OUTCOMES, Runner, emit
from ._lock import INTR, LOCK, claimed, record, replay, run_redo
from ._room import Room
from ._state import (
    ACTIVATE_KEEP,
    ASYNC_FN,
    CALL,
    DEFERRED,
    END_KEEP,
    PENDING,
    QUEUED,
    REDO,
    RUNNING,
    TAKE_KEEP,
    WAITED,
    check_activate,
    check_end_run,
    check_take,
)
from ._theap import TimerHeap
from ._work import Work

__all__ = (
    "COMPLETED",
    "CUT",
    "FAILED",
    "Pool",
    "Pwq",
    "current_worker_work",
    "may_activate",
    "may_activate_inactive",
    "need_resched",
    "untake",
)


class Pwq(Protocol):
    """A queue link (``_pwq.Pwq``) as the pool sees it: a forward declaration. The class sits
    in the layer above (it queues onto pools, so it imports this module); this names what a pool
    reads and calls on the links it serves, and mypy checks that ``_pwq.Pwq`` provides it."""

    wq: Any  # its workqueue (``_workqueue.Workqueue``), layers above: opaque here
    pool: Pool  # the pool it queues onto (or a runtime's shared unbound lists)
    epochs: _barrier.Epochs
    target: deque[Work]
    inactive: deque[Work]
    max_active: int
    nr_active: int
    cpu_thread: bool
    reclaim: bool
    freezable: bool
    freeze_gates: list[Any]
    nr_completed: int
    nr_cancelled: int
    nr_mayday: int
    nr_rescued: int
    room: Room | None  # the workqueue's bound (R21), or None

    def finish(self, epoch: int, outcome: int) -> None: ...

    def _release_slot(self) -> None: ...

    def unqueue(self, work: Work) -> None: ...


_log = logging.getLogger("aioworkqueue")
_get_ident = threading.get_ident
_current_task = asyncio.current_task
_isawaitable = inspect.isawaitable
_is_owned = LOCK._is_owned  # type: ignore[attr-defined]
_acquire = LOCK.acquire
_release = LOCK.release


# How a run ended (Pwq.finish counts them).
COMPLETED, FAILED, CUT = 0, 1, 2  # CUT: cancelled by a runtime shutdown

# Masks of the worker's fast path (locals of the module, folded once).
_SLOW_END = WAITED | DEFERRED  # the end of a run that Pool._finish must account
_SLOW_START = RUNNING | REDO | WAITED  # a take that Pool._start must commit
_ASYNC_OR_CALL = ASYNC_FN | CALL

#: Items a worker runs back to back before it lets the rest of the loop run (cond_resched).
_BATCH = 256


# -- policy predicates ------------------------------------------------------------------------
# The decisions of a pool and its workers, named as in the kernel's kernel/workqueue.c where the
# meaning matches (need_more_worker, may_start_working, keep_working; the Pool methods below).
# The worker loop and queue_work make them inline, with the name in a comment: a call there costs
# more than the test itself (benchmarks/anatomy.py). There is no too_many_workers: a worker never
# retires while its pool lives (it parks on the idle list), so no decision has that meaning.


def need_resched(batch: int) -> bool:
    """True when a worker that ran ``batch`` items back to back must let the rest of the loop run
    before it takes the next (a loop has no preemption: the kernel's ``cond_resched``).

    Context: any (a pure function of ``batch``).
    """
    return batch >= _BATCH


def may_activate(pwq: Pwq) -> bool:
    """True when an item newly queued on ``pwq`` may take an active slot now; else it waits on
    the inactive list (R7; the kernel's ``pwq_tryinc_nr_active``). Context: under LOCK."""
    return pwq.nr_active < pwq.max_active


def may_activate_inactive(pwq: Pwq) -> bool:
    """A run on ``pwq`` ended (or a queued instance was taken back), ``nr_active`` counting it:
    True when that slot goes straight on to the first inactive item instead of being freed
    (R7; the kernel's ``pwq_dec_nr_active`` activating the first inactive item).

    Context: under LOCK.
    """
    return bool(pwq.inactive) and pwq.nr_active <= pwq.max_active


_WORKER: contextvars.ContextVar[_Worker] = contextvars.ContextVar("aioworkqueue_worker")


#: Async exception handlers running in tasks of their own (``Pool._report``), held until done.
_HANDLER_TASKS: set[asyncio.Task[None]] = set()


async def _await_handler(aw: Awaitable[object], work: Work, pwq: Pwq) -> None:
    """Await what an async exception handler returned; report it if it raises (docs/spec.md)."""
    try:
        await aw
    except asyncio.CancelledError:
        task = _current_task()
        if task is not None and task.cancelling():
            raise  # the task awaiting it is cancelled (a shutdown), not a failing handler
        _log.exception("aioworkqueue: exception handler of %r failed on %r", pwq.wq, work)
    except Exception:
        _log.exception("aioworkqueue: exception handler of %r failed on %r", pwq.wq, work)


class _ThreadState(threading.local):
    work: Work | None = None  # T (its thread): running in a WQ.CPU_INTENSIVE thread or WQ.BH


_TLS = _ThreadState()


def _tearing_down(loop: asyncio.AbstractEventLoop) -> bool:
    """True when every task of ``loop`` is being cancelled: ``asyncio.run`` (or a test runner)
    ending the loop. A task created now would be left pending when the loop closes.
    Context: on ``loop``'s thread, when one of our workers was cancelled from outside."""
    return all(t.cancelling() for t in asyncio.all_tasks(loop))


def current_worker_work() -> tuple[Work, Pwq] | None:
    """Return (work, queue link) of the item the caller runs in, or None. Context: any."""
    worker = _WORKER.get(None)
    if worker is not None and worker.current is not None:
        try:
            task = _current_task()
        except RuntimeError:
            task = None
        wtask = worker.task
        if task is wtask or (
            task is not None
            and wtask is not None
            and task.get_loop() is wtask.get_loop()
            and awaits(wtask, task)
        ):  # the item's own task, or a task the item awaits (R15 one task away)
            return worker.current, worker.pwq  # type: ignore[return-value]
    work = _TLS.work
    if work is not None:
        return work, work._pwq  # type: ignore[return-value]
    return None


class _Worker:
    """One worker task. Owner: the pool's loop thread."""

    __slots__ = ("counted", "current", "fut", "pwq", "rescue", "task")

    def __init__(self, rescue: Pwq | None = None) -> None:
        # L: counted in the pool's nr_waking: spawned or woken, and has not taken an item yet.
        self.counted = False
        # I: a rescuer serves only this link's items and ends when none is left (R19).
        self.rescue = rescue
        # O, read elsewhere as a snapshot (watchdog, show_state, a runtime's sweep): the item
        # being run, and its queue link.
        self.current: Work | None = None
        self.pwq: Pwq | None = None
        self.fut: asyncio.Future[None] | None = None  # L: completed to wake it from the idle list
        self.task: asyncio.Task[None] | None = None  # I: set when it is spawned


def _call(work: Work) -> Any:
    if work._state & CALL:
        kwargs = work._kwargs  # type: ignore[attr-defined]
        if kwargs:
            return work.func(*work._args, **kwargs)  # type: ignore[attr-defined]
        return work.func(*work._args)  # type: ignore[attr-defined]
    return work.func(work)


def _call_in_thread(work: Work) -> Any:
    _TLS.work = work
    try:
        return _call(work)
    finally:
        _TLS.work = None


def _trace_start(work: Work, pwq: Pwq) -> float:
    emit("workqueue_execute_start", work, pwq.wq)
    return time.perf_counter()


def _trace_end(work: Work, pwq: Pwq, t0: float, outcome: int) -> None:
    # t0 is 0.0 when tracing was switched on in the middle of the run
    duration = time.perf_counter() - t0 if t0 else 0.0
    emit("workqueue_execute_end", work, pwq.wq, duration, OUTCOMES[outcome])


def _remove(dq: deque[Work], work: Work) -> None:
    """Remove ``work`` from ``dq`` by identity (a subclass's ``__eq__`` must not match others)."""
    for i in range(len(dq) - 1, -1, -1):
        if dq[i] is work:
            del dq[i]
            return
    raise AssertionError(f"{describe(work)} is not on the list its state says it is on")


class Pool:
    """The worker tasks of one event loop, and the items waiting for them."""

    __slots__ = (
        "bh",
        "bh_armed",
        "bh_current",
        "cpu",
        "dead",
        "dying",
        "fatal",
        "has_reclaim",
        "hi",
        "idle",
        "kick_armed",
        "left",
        "loop",
        "max_workers",
        "nr_waking",
        "nr_workers",
        "ping_at",
        "ping_hog",
        "ping_lockup",
        "ping_seq",
        "pwqs",
        "rescuers",
        "stopping",
        "tid",
        "timers",
        "ub",
        "ub_hi",
        "workers",
        "worklist",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        cpu: int,
        max_workers: int,
        unbound: tuple[deque[Work], deque[Work]] | None = None,
    ) -> None:
        self.loop = loop  # I
        self.cpu = cpu  # I
        self.tid = _get_ident()  # I: the loop's thread (the caller runs on the loop)
        self.timers = TimerHeap(loop)  # I (its fields: see _theap.py)
        self.max_workers = max_workers  # I
        self.worklist: deque[Work] = deque()  # L: active items, FIFO
        self.hi: deque[Work] = deque()  # L: active WQ.HIGHPRI items, served first
        self.bh: deque[Work] = deque()  # L: active WQ.BH items, run from a loop callback
        self.idle: list[_Worker] = []  # L: parked workers, most recently parked last
        self.workers: set[_Worker] = set()  # L
        self.nr_workers = 0  # L
        self.nr_waking = 0  # L: woken (or spawned) and not yet running: at most one is needed
        self.kick_armed = False  # L: a call_soon_threadsafe(_kick) is on its way
        self.bh_armed = False  # L: a _run_bh callback is scheduled
        # L: queue links served here, weakly: a workqueue dropped without destroy_workqueue
        # must not live as long as the pool (a pending item keeps its link, and its queue).
        self.pwqs: weakref.WeakSet[Pwq] = weakref.WeakSet()
        self.rescuers: dict[int, _Worker] = {}  # L: id(link) -> its running rescuer (R19)
        self.has_reclaim = False  # L: serves a WQ.MEM_RECLAIM link: _mayday has work to do
        # O, read by the watchdog as a snapshot: the WQ.BH item being called.
        self.bh_current: Work | None = None
        # L: the watchdog's ping: when the unanswered one was sent (0.0: none), its number, and
        # whether this stretch was already reported as a hog / a lockup (``_watchdog.py``).
        self.ping_at = 0.0
        self.ping_seq = 0
        self.ping_hog = False
        self.ping_lockup = False
        # A runtime's shared unbound lists (WQ.HIGHPRI first), served after this pool's own
        # lists by every pool of the runtime; private empty lists in the embedded mode. I (the
        # lists themselves: L).
        self.ub_hi, self.ub = unbound if unbound is not None else (deque(), deque())
        self.stopping = False  # L: the runtime is shutting down: cancelled runs do not restart
        # L, set once: the loop's thread ended while the runtime ran (a KeyboardInterrupt or
        # SystemExit from an item, the loop stopped from outside): route nothing here any more.
        self.dead = False
        # O, read by the runtime once the loop has ended: what went through a worker and ended
        # the loop, (work, link, exception), for the report.
        self.fatal: tuple[Work, Pwq, BaseException] | None = None
        # A worker was cancelled while every task of its loop was being cancelled (asyncio.run's
        # teardown, see _tearing_down), or the runtime pool's loop stopped. No new worker task
        # may start then, asyncio would never cancel it; what is left is reported when its queue
        # binds to another loop (embedded) or by Runtime._pool_died. L.
        self.dying = False
        # O (and L), read by the runtime once every worker has ended: what stopping workers
        # left unfinished.
        self.left: list[tuple[Work, Pwq, str]] = []

    def __repr__(self) -> str:
        return f"<Pool cpu={self.cpu} workers={self.nr_workers} waiting={len(self.worklist)}>"

    def direct(self) -> bool:
        """True when the caller runs in a task of this pool's loop (so the loop is awake)."""
        return _get_ident() == self.tid and _current_task(self.loop) is not None

    def timer_pool(self) -> Pool:
        """The pool whose loop arms timers for items aimed at this pool: itself."""
        return self

    def has_work(self) -> bool:
        """True if anything waits for this pool's workers. Context: under LOCK."""
        return bool(self.hi or self.worklist or self.ub_hi or self.ub)

    # -- policy predicates (see need_resched above) -----------------------------------------

    def need_more_worker(self) -> bool:
        """True when items wait and no worker is on its way to them: one must be woken or started.

        The kernel's ``need_more_worker`` asks "is no worker running?"; a worker task cannot see
        its item suspend, so here it is "is none woken and not yet running?" (``nr_waking``),
        which also keeps at most one wake-up in flight (design §3). A stopping pool needs none.
        Context: under LOCK.
        """
        return not self.nr_waking and not self.stopping and self.has_work()

    def may_start_working(self) -> bool:
        """True when a parked worker can be woken for the work, so none need be started (the
        kernel's ``may_start_working``: an idle worker exists). ``_wake_local`` and queue_work
        decide it inline: for items that await, that is once per item. Context: under LOCK."""
        return bool(self.idle)

    def may_create_worker(self) -> bool:
        """True when the pool may start another worker task: ``max_workers`` is not reached.
        (The kernel bounds workers by memory only; here, past the bound, WQ.MEM_RECLAIM queues
        get their rescuer, R19.) Context: under LOCK."""
        return self.nr_workers < self.max_workers

    def keep_working(self) -> bool:
        """True when a worker whose item ended takes another rather than park: the pool is not
        stopping and an item waits (the kernel's ``keep_working``; its ``nr_running <= 1`` has
        no counterpart, one task runs at a time on a loop). The worker loop makes this decision
        inline (its stopping test, then its lists). Context: under LOCK."""
        return not self.stopping and self.has_work()

    # -- waking workers -------------------------------------------------------------------

    def wake(self, direct: bool | None = None) -> None:
        """Make sure a worker will look at the worklist. Context: under LOCK, any thread."""
        if self.nr_waking:
            return
        if direct is None:
            direct = self.direct()
        if direct:
            self._wake_local()
        elif not self.kick_armed:
            self.kick_armed = True
            try:
                self.loop.call_soon_threadsafe(self._kick)
            except RuntimeError:
                if not self.dying:
                    raise
                # A runtime pool whose loop just closed: the item stays on the worklist, where
                # Runtime._pool_died takes it back and reports it (it holds LOCK after us).

    def _wake_local(self) -> None:
        # Context: under LOCK, on the loop thread, loop awake.
        if self.stopping or self.dying:
            return  # shutting down: nothing new starts; what waits is reported instead
        idle = self.idle
        while idle:  # may_start_working, inline (a successor per item for items that await)
            worker = idle.pop()
            fut = worker.fut
            worker.fut = None
            if fut is None or fut.done():
                continue  # cancelled while parked: it is on its way out
            worker.counted = True
            self.nr_waking += 1
            fut.set_result(None)
            return
        if self.may_create_worker():
            self.nr_workers += 1
            worker = _Worker()
            worker.counted = True
            self.nr_waking += 1
            self._spawn(worker)
        else:
            self._mayday()

    def _spawn(self, worker: _Worker) -> None:
        self.workers.add(worker)
        worker.task = self.loop.create_task(
            self._worker_main(worker), name=f"aiowq/{self.cpu}:{len(self.workers)}"
        )

    def _mayday(self) -> None:
        """Every worker is busy: give each WQ.MEM_RECLAIM link with waiting items its reserved
        worker (the kernel's rescuer), so it makes progress whatever the others wait for (R19).

        Context: under LOCK, on the loop thread. O(waiting items), and only on pools that serve
        a MEM_RECLAIM queue while they are saturated.
        """
        if not self.has_reclaim:
            return
        for dq in (self.hi, self.ub_hi, self.worklist, self.ub):
            for work in dq:
                pwq: Pwq = work._pwq  # type: ignore[assignment]
                if pwq.reclaim and id(pwq) not in self.rescuers:
                    pwq.nr_mayday += 1
                    worker = _Worker(rescue=pwq)
                    self.rescuers[id(pwq)] = worker
                    self._spawn(worker)

    def _take_rescued(self, pwq: Pwq) -> Work | None:
        """Take the first waiting item of ``pwq`` off whichever list holds it. Context: LOCK."""
        for dq in (self.hi, self.ub_hi, self.worklist, self.ub):
            for i, work in enumerate(dq):
                if work._pwq is pwq:
                    del dq[i]
                    pwq.nr_rescued += 1
                    return work
        return None

    def _kick(self) -> None:
        with LOCK:
            self.kick_armed = False
            if self.need_more_worker():
                self._wake_local()
        if INTR.pending:
            replay()

    def arm_bh(self, direct: bool | None = None) -> None:
        """Schedule the BH runner. Context: under LOCK, any thread."""
        if self.bh_armed:
            return
        self.bh_armed = True
        if direct is None:
            direct = self.direct()
        if direct:
            self.loop.call_soon(self._run_bh)
        else:
            self.loop.call_soon_threadsafe(self._run_bh)

    # -- taking and finishing items (shared by workers and the BH runner) --------------------

    def _start(self, work: Work) -> bool:
        """Commit the start of a popped item; False if it must wait for its own run (R3).

        Context: under LOCK.
        """
        st = work._state
        if st & (RUNNING | REDO | WAITED):
            if st & RUNNING:  # R3: the running worker runs it again when it ends
                _state.defer(work)
                return False
            if st & WAITED:
                _barrier.on_start(work)
        _state.take(work)  # R2: PENDING clears here
        if st & REDO:
            # After the section: the caller must read this instance's _pwq/_epoch first.
            record(functools.partial(run_redo, work))
        return True

    def _finish(self, work: Work, pwq: Pwq, epoch: int, outcome: int) -> tuple[Pwq, int] | None:
        """An instance of ``work`` ended. If its deferred next instance starts now (R3), return
        that instance's (link, epoch), read here under the lock; else None.

        Context: under LOCK.
        """
        st = work._state
        if not st & DEFERRED:
            # First: the barriers below may release a waiter on another thread, which must find
            # the item idle (work_busy reads the state without the lock).
            _state.end_run(work)
        if st & WAITED:
            _barrier.on_end(work)
        pwq.finish(epoch, outcome)
        st = work._state
        if st & DEFERRED and self.stopping:
            # Shutting down: the next instance is not started; it is reported as unfinished.
            _state.end_run(work)
            nxt: Pwq = work._pwq  # type: ignore[assignment]
            nxt.unqueue(work)
            nxt.nr_cancelled += 1
            if work._state & WAITED:
                _barrier.on_unqueue(work)
            if not claimed(work):  # else reported by an interrupt-context cancel's True
                self.left.append((work, nxt, "queued"))
            return None
        if st & DEFERRED:
            if st & WAITED:
                _barrier.on_start(work)
            _state.run_deferred(work)
            room = work._pwq.room  # type: ignore[union-attr]
            if room:  # R21: it starts, room frees
                room.put()
            if st & REDO:
                record(functools.partial(run_redo, work))
            return work._pwq, work._epoch  # type: ignore[return-value]
        return None

    def _end_on_exit(
        self,
        worker: _Worker,
        work: Work,
        pwq: Pwq,
        epoch: int,
        *,
        outcome: int,
        exc: BaseException,
    ) -> None:
        """Account a run that ends because the worker itself is leaving (cancelled, or a
        KeyboardInterrupt/SystemExit went through it). A deferred next instance cannot run
        here any more: it is taken back and reported, never left RUNNING with no worker."""
        worker.current = None
        if self.dead:
            # Its loop ended first, and took this run back: counted it as cancelled and released
            # its flushers (Workqueue._strand, R20). Only its max_active slot is left to free.
            with LOCK:
                pwq._release_slot()
            return
        with LOCK:
            nxt = self._finish(work, pwq, epoch, outcome)
            if nxt is not None:
                npwq, nepoch = nxt
                _state.end_run(work)
                npwq.finish(nepoch, CUT)
                if work._state & WAITED:
                    _barrier.on_end(work)
        if nxt is not None:
            self._report(work, nxt[0], exc)

    def _report(
        self, work: Work, pwq: Pwq, exc: BaseException, wait: bool = False
    ) -> Awaitable[object] | None:
        """Give ``exc`` to the queue's exception handler (R16).

        An async handler (one that returns an awaitable) runs on this pool's loop: with ``wait``
        its awaitable is returned for the caller (a worker) to await; else it runs in a task of
        its own (WQ.BH items have no task to await it in; a worker on its way out cannot wait).
        Context: the pool's loop thread, not under LOCK.
        Returns: the awaitable to await, or None.
        """
        try:
            r = pwq.wq._handle_exception(work, exc)
        except Exception:
            _log.exception("aioworkqueue: exception handler of %r failed on %r", pwq.wq, work)
            return None
        if r is None or not _isawaitable(r):
            return None
        if wait:
            return r
        if self.dying or self.loop.is_closed():
            # The loop is being torn down: a task made now would never run. The error must not
            # go unreported for that, so it is logged here instead.
            if type(r) is CoroutineType:
                r.close()
            _log.error(
                "aioworkqueue: the async exception handler of %r cannot run, its event loop is "
                "shutting down; %r raised",
                pwq.wq,
                work,
                exc_info=exc,
            )
            return None
        task = self.loop.create_task(_await_handler(r, work, pwq))
        _HANDLER_TASKS.add(task)  # a strong reference until it ends: the loop keeps weak ones
        task.add_done_callback(_HANDLER_TASKS.discard)
        return None

    async def _wait_handler(
        self, worker: _Worker, work: Work, pwq: Pwq, epoch: int, aw: Awaitable[object]
    ) -> None:
        """Await an async exception handler as part of the failed run: the run (and a flush
        waiting for it) ends when the handler has, and the worker takes nothing new meanwhile.

        Context: the worker's task, in the except clause of the run.
        """
        try:
            await _await_handler(aw, work, pwq)
        except BaseException as exc:  # the worker is cancelled, or KeyboardInterrupt/SystemExit
            if (
                isinstance(exc, asyncio.CancelledError)
                and not self.stopping
                and _tearing_down(self.loop)
            ):
                with LOCK:  # the slot this run frees must not spawn a worker (as for a run)
                    self.dying = True
            self._end_on_exit(worker, work, pwq, epoch, outcome=FAILED, exc=exc)
            raise

    # -- the worker ---------------------------------------------------------------------------

    async def _worker_main(self, worker: _Worker) -> None:
        _WORKER.set(worker)
        intr = INTR
        hooks = HOOKS
        hi = self.hi
        worklist = self.worklist
        ub_hi = self.ub_hi
        ub = self.ub
        loop = self.loop
        rescue = worker.rescue  # set once
        # The transitions below are inlined (_state.py): their checks run under this, read once.
        debug = _state.DEBUG
        batch = 0
        # The item being run, or that just ended (its end is accounted in the same section that
        # takes the next one: one section per item, not two), and its queue link and epoch.
        work: Work | None = None
        pwq: Pwq = None  # type: ignore[assignment]  # set together with work
        epoch = 0
        outcome = COMPLETED
        t0 = 0.0
        timed: Runner | None = None  # enable_timing's runner, for the next item only
        fut: asyncio.Future[None] | None = None
        try:
            while True:
                # One section per item; explicit acquire/release, not ``with``: half the cost.
                try:
                    _acquire()  # in the try: an exception right after it still releases
                    nxt = None
                    if work is not None:  # the run of work ended
                        st = work._state
                        if st & _SLOW_END or outcome or pwq.freeze_gates:
                            nxt = self._finish(work, pwq, epoch, outcome)
                            if nxt is not None:  # R3: its next instance runs here, now
                                pwq, epoch = nxt
                        else:  # the common end of a run: Pwq.finish and Epochs.done, inline
                            # Not RUNNING before ep.done() (_state.end_run, inline): it may
                            # release a flush on another thread, which must find the item idle.
                            pwq.nr_completed += 1
                            inactive = pwq.inactive
                            # may_activate_inactive, inline: the slot goes on to the next
                            # waiting item (R7; Pwq._release_slot, with _state.activate).
                            if inactive and pwq.nr_active <= pwq.max_active:
                                if debug:  # both transitions of this branch: one test
                                    check_end_run(work, st)
                                    check_activate(inactive[0], inactive[0]._state)
                                work._state = st & END_KEEP
                                w = inactive.popleft()
                                w._state = (w._state & ACTIVATE_KEEP) | QUEUED
                                if hooks.on:
                                    emit("workqueue_activate_work", w, pwq.wq)
                                pwq.target.append(w)
                                p = pwq.pool
                                if p is not self or not self.nr_waking:
                                    p.wake()
                            else:
                                if debug:
                                    check_end_run(work, st)
                                work._state = st & END_KEEP
                                pwq.nr_active -= 1
                            ep = pwq.epochs
                            if epoch == ep.cur:
                                ep.nr_cur -= 1
                            else:  # Epochs.done, inline: a burst flushed after it was queued
                                old = ep.old
                                n = old[epoch] - 1
                                if n:
                                    old[epoch] = n
                                else:  # the last of its epoch: flushers may be released
                                    ep.done(epoch)
                    if nxt is None:
                        if worker.counted:
                            self.nr_waking -= 1
                            worker.counted = False
                        # keep_working, inline: this stopping test, then the lists below.
                        if self.stopping:
                            return  # a runtime shutdown: take nothing new
                        if batch >= _BATCH:  # need_resched, inline
                            # cond_resched, before taking the next item: a cancel delivered
                            # at that yield must not leave a taken item with nobody to run or
                            # report it (see below).
                            work = fut = None
                        else:
                            while True:
                                if rescue is not None:
                                    work = self._take_rescued(rescue)
                                    if work is None:
                                        return  # nothing left for this rescuer
                                elif hi:
                                    work = hi.popleft()
                                elif ub_hi:
                                    work = ub_hi.popleft()
                                elif worklist:
                                    work = worklist.popleft()
                                elif ub:
                                    work = ub.popleft()
                                else:
                                    work = None
                                    fut = worker.fut = loop.create_future()
                                    self.idle.append(worker)
                                    break
                                st = work._state
                                if not st & _SLOW_START:  # _state.take, inline (R2)
                                    if debug:
                                        check_take(work, st)
                                        _state.shadow_take("take", work, st)
                                    work._state = (st & TAKE_KEEP) | RUNNING
                                    break
                                if self._start(work):
                                    break
                        if work is not None:
                            pwq = work._pwq  # type: ignore[assignment]
                            epoch = work._epoch
                            if pwq.room:  # R21: it starts, room frees (unbounded: this test)
                                pwq.room.put()
                            # need_more_worker, inline (not stopping: tested above): a
                            # successor for later.
                            if not self.nr_waking and (hi or worklist or ub_hi or ub):
                                self._wake_local()
                finally:
                    if _is_owned():  # never held when a task step starts
                        _release()
                if intr.pending:
                    worker.current = None  # replays run as interrupt context, not as an item
                    replay()
                    if intr.untaken and work is not None and intr.untaken.pop(id(work), False):
                        work = fut = None  # cancelled from interrupt context before it ran
                if work is None:
                    batch = 0
                    worker.current = None
                    if fut is None:  # let the rest of the loop run (the kernel's cond_resched)
                        await asyncio.sleep(0)
                    else:
                        await fut  # the waker counts us in nr_waking
                    continue
                batch += 1
                # Not cleared after the run: the next item, the park or the yield
                # overwrite it before anything else runs on this loop.
                worker.current = work
                worker.pwq = pwq
                outcome = COMPLETED
                if hooks.on:
                    t0 = _trace_start(work, pwq)
                    timed = HOOKS.run  # timing is on: the runner meters the item's CPU time
                try:
                    if batch > _BATCH:
                        # Only an R3 rerun (nxt above) gets this far into a batch: fresh takes
                        # yield before taking. Here the item is ours already, so the yield is
                        # part of its run: a cancel delivered at it is handled as the run's.
                        batch = 0
                        await asyncio.sleep(0)
                    st = work._state
                    if timed is not None:  # only ever set just above: one test when off
                        run, timed = timed, None
                        await run(work, pwq)
                    elif st & _ASYNC_OR_CALL == ASYNC_FN:
                        await work.func(work)  # type: ignore[misc]
                    else:
                        if pwq.cpu_thread and not st & ASYNC_FN:
                            r = await loop.run_in_executor(
                                pwq.wq._cpu_executor(), _call_in_thread, work
                            )
                        else:
                            r = _call(work)
                        if r is not None and (type(r) is CoroutineType or _isawaitable(r)):
                            await r
                except asyncio.CancelledError as exc:
                    outcome = FAILED
                    task = worker.task
                    if task is not None and task.cancelling():
                        # The worker itself is cancelled: a runtime shutdown reports the run
                        # as unfinished; any other loop shutdown goes to the handler.
                        if self.stopping:
                            outcome = CUT
                            self.left.append((work, pwq, "running"))
                        else:
                            if _tearing_down(loop):
                                with LOCK:  # the slot this run frees must not spawn a worker
                                    self.dying = True
                            self._report(work, pwq, exc)
                        self._end_on_exit(worker, work, pwq, epoch, outcome=outcome, exc=exc)
                        raise
                    if (aw := self._report(work, pwq, exc, True)) is not None:
                        await self._wait_handler(worker, work, pwq, epoch, aw)
                except Exception as exc:
                    outcome = FAILED
                    if (aw := self._report(work, pwq, exc, True)) is not None:
                        await self._wait_handler(worker, work, pwq, epoch, aw)
                except BaseException as exc:
                    # KeyboardInterrupt, SystemExit: let them through (design §6). So is a
                    # GeneratorExit thrown in from outside a step of our task: the worker
                    # coroutine itself is being closed. Anything else (GeneratorExit or a custom
                    # BaseException raised by the function) is an error like any other (R16).
                    if isinstance(exc, KeyboardInterrupt | SystemExit) or (
                        _current_task(loop) is not worker.task
                    ):
                        if self.fatal is None:  # for the report, if it ends a runtime's pool
                            self.fatal = (work, pwq, exc)
                        self._end_on_exit(worker, work, pwq, epoch, outcome=FAILED, exc=exc)
                        raise
                    outcome = FAILED
                    if (aw := self._report(work, pwq, exc, True)) is not None:
                        await self._wait_handler(worker, work, pwq, epoch, aw)
                if hooks.on:
                    worker.current = None
                    _trace_end(work, pwq, t0, outcome)
        finally:
            with LOCK:
                if worker in self.idle:
                    self.idle.remove(worker)  # cancelled while parked
                    if not self.stopping and _tearing_down(loop):
                        self.dying = True  # the same rule as for a worker cancelled mid-run
                if worker.counted:
                    self.nr_waking -= 1  # cancelled after a waker counted it as on its way
                    worker.counted = False
                worker.fut = None
                if worker.rescue is not None:
                    del self.rescuers[id(worker.rescue)]
                else:
                    self.nr_workers -= 1
                self.workers.discard(worker)
                if self.need_more_worker() and not loop.is_closed():
                    try:
                        self.wake(direct=False)
                    except RuntimeError:
                        pass

    # -- WQ.BH: straight from a loop callback -----------------------------------------------

    def _run_bh(self) -> None:
        lock = LOCK
        bh = self.bh
        while True:
            with lock:
                self.bh_armed = False
                work = None
                while bh and not self.stopping:  # a runtime shutdown: start nothing new
                    work = bh.popleft()
                    if self._start(work):
                        break
                    work = None
                if work is not None:
                    pwq: Pwq = work._pwq  # type: ignore[assignment]
                    epoch = work._epoch
                    if pwq.room:  # R21: it starts, room frees
                        pwq.room.put()
            if work is None:  # not a break inside the with: mypyc does not compile that
                break
            if INTR.pending:
                replay()
                if INTR.untaken.pop(id(work), False):
                    continue  # cancelled from interrupt context before it ran
            nxt: tuple[Pwq, int] | None = (pwq, epoch)
            t0 = 0.0
            while nxt is not None:
                pwq, epoch = nxt
                outcome = COMPLETED
                _TLS.work = self.bh_current = work
                if HOOKS.on:
                    t0 = _trace_start(work, pwq)
                try:
                    _call(work)
                except (KeyboardInterrupt, SystemExit):
                    outcome = FAILED  # through the loop to its runner, as from a worker
                    raise
                except BaseException as exc:
                    # No task here, so a CancelledError is the function's own: an error (R16)
                    # like GeneratorExit or a custom BaseException, as on the other queues.
                    outcome = FAILED
                    self._report(work, pwq, exc)
                finally:
                    _TLS.work = self.bh_current = None
                    if HOOKS.on:
                        _trace_end(work, pwq, t0, outcome)
                    with lock:
                        nxt = self._finish(work, pwq, epoch, outcome)
                    if INTR.pending:
                        replay()
                        if INTR.untaken.pop(id(work), False):
                            nxt = None  # its next instance was cancelled before it ran
        if INTR.pending:
            replay()


def untake(work: Work, frame: FrameType) -> bool:
    """Take back an instance that a worker (or the WQ.BH runner) of this thread took to run in
    the section that ``frame`` just released, before it was called: for an interrupt-context
    cancel placed before that take (``_lock.py``). It ends as cancelled; the worker skips it.

    Context: under LOCK, in that section's replay. Returns: False if ``frame`` took nothing
    of the kind (the caller's prediction was wrong).
    """
    if frame.f_code not in _TAKERS or not work._state & RUNNING or work._state & PENDING:
        return False
    loc = frame.f_locals
    if loc.get("work") is not work:
        return False
    nxt = loc.get("nxt")
    pwq, epoch = nxt if isinstance(nxt, tuple) else (loc["pwq"], loc["epoch"])
    _state.untake(work)
    pwq.finish(epoch, CUT)  # counted as cancelled; its slot and its flush epoch are released
    if work._state & WAITED:
        _barrier.on_end(work)
    INTR.untaken[id(work)] = True
    return True


_TAKERS = {Pool._worker_main.__code__, Pool._run_bh.__code__}
