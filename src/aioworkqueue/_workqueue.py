"""Workqueues: allocation, their state, and binding to the pool of an event loop.

In the embedded mode (no Runtime) there is one pool per event loop, cpu 0. A workqueue binds to the
loop running in the thread that allocates it, else to the loop of ``running()`` when that is
entered, else to the loop that first uses it, and queues there from any thread afterwards. When
that loop shuts down, what it still holds is reported as cancelled at that moment and the queue
refuses ``queue_*`` (R20, ``_loop_ending``); the next use from a running loop rebinds it
(docs/spec.md).

Owner (tags as in docs/design.md §1): ``_pwq``, ``_status``, ``_armed``, ``_epochs`` and the
counters are L (changed under ``_lock.LOCK``); ``name``, ``flags``, ``max_active``,
``max_pending``, ``ordered`` are I (set once); each attribute says which.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

from . import _lean, _lock, _state
from ._barrier import Epochs, on_end, on_unqueue
from ._config import CONFIG
from ._errors import (
    WorkqueueDestroyedError,
    WorkqueueDrainingError,
    WorkqueueLoopError,
    WorkqueueShuttingDownError,
    describe,
)
from ._flags import WQ, WQ_DFL_ACTIVE, WQ_MAX_ACTIVE
from ._lean import LeanLink, LeanPool
from ._lock import LOCK
from ._pool import Pool, current_worker_work
from ._pwq import Pwq
from ._room import Room
from ._timing import summarize
from ._unbound import UnboundPool
from ._work import ARMED, PENDING, WHERE, DelayedWork, Work

__all__ = (
    "ACTIVE",
    "WQ_FORMS",
    "RuntimeView",
    "ExceptionHandler",
    "check_workqueue",
    "Workqueue",
    "WorkqueueStats",
    "alloc_ordered_workqueue",
    "alloc_workqueue",
    "create_singlethread_workqueue",
    "create_workqueue",
    "report_unfinished",
)

_log = logging.getLogger("aioworkqueue")
_NO_FLAGS = WQ(0)
_get_running_loop = asyncio._get_running_loop

#: ``handler(wq, work, exc)``: called on the pool's loop when a work function raises (R16). It
#: may be ``async def`` (or return an awaitable): that is awaited on the pool's loop.
ExceptionHandler = Callable[["Workqueue", Work, BaseException], "Awaitable[object] | None"]

# Workqueue._status bits
_DESTROYED = 1 << 0
_DESTROYING = 1 << 1
# R20: queue_* raises WorkqueueLoopError until a new running loop binds the queue again.
_ENDED = 1 << 2  # the running() that covered its loop has exited
_LOOP_ENDED = 1 << 3  # its event loop shut down (see _loop_ending)
_SHUTDOWN = 1 << 4  # some of the drain marks are running()'s shutdown (_lifespan.py)
_DRAIN_UNIT = 1 << 5  # drain_workqueue nests: a count above this bit


class RuntimeView(Protocol):
    """What routing needs of a :class:`~aioworkqueue._runtime.Runtime`, which sits layers above
    (it starts pools, shuts them down, and takes back what they held; this module only routes).
    ``Runtime`` implements it; see that class for each member."""

    cpus: int
    pools: list[Pool]
    unbound: UnboundPool
    exception_handler: ExceptionHandler | None
    _wqs: weakref.WeakSet[Workqueue]

    def accepts(self) -> bool: ...

    @property
    def shutting_down(self) -> bool: ...

    def local_cpu(self) -> int | None: ...

    def next_cpu(self) -> int: ...


class _Active:
    """The running runtime, if any. Owner: LOCK."""

    __slots__ = ("rt",)

    def __init__(self) -> None:
        self.rt: RuntimeView | None = None  # L


ACTIVE = _Active()


@dataclass(frozen=True, slots=True)
class WorkqueueStats:
    """A snapshot of one workqueue's counters (``wq.stats()``)."""

    #: The workqueue's name.
    name: str
    #: Successful ``queue_*`` calls (a ``mod_delayed_work`` on an idle item counts as one).
    queued: int
    #: Runs that returned normally.
    completed: int
    #: Runs that raised (each went to the exception handler, R16).
    failed: int
    #: Pending instances taken back by cancel_* / disable_* or abandoned with a dead loop.
    cancelled: int
    #: Instances queued or running (what a flush or drain waits for).
    in_flight: int
    #: Instances waiting to start: on a worklist or waiting for a max_active slot.
    pending: int
    #: Delayed items whose timer is armed.
    armed: int
    #: Items running right now (``in_flight - pending``).
    running: int
    #: Items that had to wait for a max_active slot (R7).
    max_active_hits: int
    #: Times a pool started this queue's rescuer because all its workers were busy (R19).
    mayday: int
    #: Items run by a rescuer.
    rescued: int
    #: Runs the runtime's watchdog saw hold their loop past ``cpu_intensive_thresh``.
    cpu_hogs: int
    #: The bound on items queued and not started (R21); 0: unbounded.
    max_pending: int = 0
    #: ``queue_work_wait`` calls waiting for room right now.
    room_waiters: int = 0
    # The timing statistics (``enable_timing()``): None where timing was never on for this
    # queue; counted only while it is on. Latencies are from a log2 histogram: a percentile is
    # the upper edge of its bucket (the true value is at most 2x lower), capped by the exact max.
    #: Runs started while timing was on.
    started: int | None = None
    #: CPU seconds its items consumed (thread CPU time; a coroutine's own steps only).
    cpu_time: float | None = None
    #: Median time from queue_* to start, in seconds (a DelayedWork: from its activation).
    latency_p50: float | None = None
    #: 90th percentile of that latency, in seconds.
    latency_p90: float | None = None
    #: 99th percentile of that latency, in seconds.
    latency_p99: float | None = None
    #: The longest latency measured, in seconds (exact).
    latency_max: float | None = None


def check_workqueue(call: str, wq: object) -> Workqueue:
    """Return ``wq`` if it is a :class:`Workqueue`, else raise a TypeError that names ``call``."""
    if not isinstance(wq, Workqueue):
        raise TypeError(f"{call}: expected a Workqueue, got {type(wq).__name__} {describe(wq)}")
    return wq


def _check_name(call: str, name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{call}: name must be a str, got {type(name).__name__} {describe(name)}")
    return name


def _check_flags(call: str, name: str, flags: object) -> WQ:
    if isinstance(flags, bool) or not isinstance(flags, int):
        raise TypeError(f"{call}: flags of workqueue {name!r} must be WQ flags, got {flags!r}")
    if flags & ~sum(WQ):
        raise ValueError(f"{call}: unknown flags {flags:#x} for workqueue {name!r}")
    fl = WQ(flags)
    if fl & WQ.BH and fl & (WQ.UNBOUND | WQ.CPU_INTENSIVE | WQ.FREEZABLE):
        raise ValueError(f"{call}: WQ.BH does not combine with {fl!r} (workqueue {name!r})")
    return fl


def _check_max_active(call: str, name: str, max_active: object) -> int:
    if isinstance(max_active, bool) or not isinstance(max_active, int):
        raise TypeError(
            f"{call}: max_active of workqueue {name!r} must be an int, got {max_active!r}"
        )
    if not 0 <= max_active <= WQ_MAX_ACTIVE:
        raise ValueError(
            f"{call}: max_active of workqueue {name!r} must be 0..{WQ_MAX_ACTIVE}, got {max_active}"
        )
    return max_active or WQ_DFL_ACTIVE


def _check_max_pending(call: str, name: str, max_pending: object) -> int:
    if isinstance(max_pending, bool) or not isinstance(max_pending, int):
        raise TypeError(
            f"{call}: max_pending of workqueue {name!r} must be an int, got {max_pending!r}"
        )
    if max_pending < 0:
        raise ValueError(
            f"{call}: max_pending of workqueue {name!r} must be >= 0 (0: unbounded), "
            f"got {max_pending}"
        )
    return max_pending


def _default_handler(wq: Workqueue, work: Work, exc: BaseException) -> None:
    if isinstance(exc, asyncio.CancelledError):
        _log.error("workqueue %r: %r was cancelled while running", wq.name, work, exc_info=exc)
    else:
        _log.error("workqueue %r: %r raised", wq.name, work, exc_info=exc)


class Workqueue:
    """A named workqueue. Create it with :func:`alloc_workqueue` and friends.

    ``async with alloc_workqueue(...) as wq:`` destroys it on exit. The method forms mirror the
    functions: ``wq.queue(work)`` is ``queue_work(wq, work)``, and so on.
    """

    __slots__ = (
        "__weakref__",
        "_armed",
        "_async_check",
        "_bh",
        "_epochs",
        "_executor",
        "_handler",
        "_lean",
        "_pwq",
        "_room",
        "_routed",
        "_rt",
        "_rt_pwqs",
        "_runtime",
        "_status",
        "_system",
        "_timing",
        "_v2",
        "flags",
        "max_active",
        "max_pending",
        "name",
        "ordered",
    )

    def __init__(
        self,
        name: str,
        flags: WQ | int,
        max_active: int,
        *,
        ordered: bool = False,
        exception_handler: ExceptionHandler | None = None,
        max_pending: int = 0,
        _call: str = "Workqueue",
    ) -> None:
        # The class is public (isinstance, type hints), so constructing it directly must check
        # what alloc_workqueue checks: max_active 0 here once meant a queue that never ran.
        call = _call  # the public call that allocates it, for the messages
        name = _check_name(call, name)
        flags = _check_flags(call, name, flags)
        max_active = _check_max_active(call, name, max_active)
        max_pending = _check_max_pending(call, name, max_pending)
        if not isinstance(ordered, bool):
            raise TypeError(f"{call}: ordered of workqueue {name!r} must be a bool")
        if ordered and (max_active != 1 or flags & WQ.BH):
            raise ValueError(
                f"{call}: an ordered workqueue {name!r} needs max_active 1 and no WQ.BH; "
                f"use alloc_ordered_workqueue()"
            )
        if exception_handler is not None and not callable(exception_handler):
            raise TypeError(f"{call}: exception_handler of {name!r} must be callable")
        self.name = name  # I
        self.flags = flags  # I
        self.max_active = max_active  # I
        self.ordered = ordered  # I
        self.max_pending = max_pending  # I
        # I: the bound's count and waiters (R21), shared by every link; None: unbounded.
        self._room = Room(max_pending) if max_pending else None
        self._handler = exception_handler  # I: None: the runtime's, else the default
        self._pwq: Pwq | None = None  # L: embedded mode: the link to the pool of its loop
        self._runtime = ACTIVE.rt  # I: the runtime it was allocated in, or None
        self._rt: RuntimeView | None = None  # L: the runtime that ``_rt_pwqs`` belong to
        self._rt_pwqs: list[Pwq] = []  # L: in a runtime: one link per cpu, or one if unbound
        self._status = 0  # L (interrupt-context callers read it lock-free)
        self._epochs = Epochs()  # L (replaced when it rebinds)
        self._armed: dict[int, DelayedWork] = {}  # L: id → armed delayed items aimed here
        # L, made once on first use: the WQ.CPU_INTENSIVE thread pool; destroy takes it away.
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._system = False  # I (set by _system.py right after construction)
        # L: enable_timing's accumulators, one per thread that ran its items (thread ident ->
        # _timing.TimingAcc); created under LOCK, each written only by its own thread (T).
        self._timing: dict[int, Any] | None = None
        self._bh = bool(flags & WQ.BH)  # I: int tests on the hot path, not IntFlag ones
        # I: submit must tell async functions before the call on these queues.
        self._async_check = bool(flags & (WQ.BH | WQ.CPU_INTENSIVE))
        # I (system queues set it again, right after construction): a runtime decides where each
        # item goes, so the embedded fast path of queue_work (same loop as last time) is off.
        self._routed = self._runtime is not None
        # I: served by the lean pool of Core v2 (``_lean.py``), allocated while its switch is on.
        self._v2 = _lean.ENABLED.on
        self._lean: LeanLink | None = None  # L: the link to its loop's lean pool, once bound
        if self._v2:
            lacks = _lean.covers(flags & ~WQ.UNBOUND, self._runtime)
            if lacks is not None:
                raise NotImplementedError(
                    f"{call}: Core v2 (AIOWORKQUEUE_CORE=v2) does not serve {lacks} yet "
                    f"(workqueue {name!r})"
                )
        with LOCK:
            _ALL.add(self)
            if self._v2:
                loop = _get_running_loop()
                if loop is not None:
                    self._lean = _lean_link_on(self, loop)
            elif self._runtime is None:
                loop = _get_running_loop()
                if loop is not None:
                    # docs/spec.md, "Binding": allocated on a running loop, bound to it at once,
                    # so a thread may queue on it before any coroutine has used it.
                    pool = _pool_of(loop)
                    if not pool.dead:
                        self._pwq = Pwq(self, pool, self.max_active, self._epochs)
                        pool.pwqs.add(self._pwq)

    def __repr__(self) -> str:
        return f"<Workqueue {self.name!r} flags={self.flags!r} max_active={self.max_active}>"

    # -- state checks and binding (under LOCK) ------------------------------------------------

    @property
    def destroyed(self) -> bool:
        """True once :func:`destroy_workqueue` has finished."""
        return bool(self._status & _DESTROYED)

    def _check_queueable(self, call: str, work: Work) -> None:
        """Raise if nobody may queue on this queue now (R14). Context: under LOCK."""
        status = self._status
        if status & _DESTROYED:
            raise WorkqueueDestroyedError(
                f"{call}: workqueue {self.name!r} was destroyed; {describe(work)}"
            )
        if status >= _DRAIN_UNIT:
            cur = current_worker_work()
            if cur is None or cur[1].wq is not self:
                if status & _SHUTDOWN:
                    raise WorkqueueShuttingDownError(
                        f"{call}: workqueue {self.name!r} is shutting down (running() is ending); "
                        f"only its own work may queue onto it; {describe(work)}"
                    )
                raise WorkqueueDrainingError(
                    f"{call}: workqueue {self.name!r} is draining; only its own work may queue "
                    f"onto it; {describe(work)}"
                )
        if status & (_ENDED | _LOOP_ENDED) and not self._may_rebind():
            why = (
                "aioworkqueue.running() has exited"
                if status & _ENDED
                else "its event loop has shut down"
            )
            raise WorkqueueLoopError(
                f"{call}: workqueue {self.name!r} is ended ({why}); nothing would run "
                f"{describe(work)}; use it from a new running event loop, or enter running() again"
            )

    def _may_rebind(self) -> bool:
        """True if the caller's running loop may take this ended queue over: the loop it is bound
        to is no longer running (docs/spec.md: consecutive ``asyncio.run`` calls).
        Context: under LOCK.
        """
        running = _get_running_loop()
        if self._v2:
            lk = self._lean
            return running is not None and (
                lk is None or (lk.pool.loop is not running and not lk.pool.loop.is_running())
            )
        pwq = self._pwq
        return running is not None and (
            pwq is None or (pwq.pool.loop is not running and not pwq.pool.loop.is_running())
        )

    def _link(self, call: str, work: Work, cpu: int | None) -> Pwq:
        """Return the queue link to queue on, binding to the running loop if needed.

        Context: under LOCK, any thread.
        """
        rt = self._runtime
        if rt is None and self._system:
            rt = ACTIVE.rt
        if rt is not None:
            return self._link_runtime(rt, call, work, cpu)
        pwq = self._pwq
        running = _get_running_loop()
        if pwq is not None:
            loop = pwq.pool.loop
            if running is loop or (running is None and loop.is_running()):
                link = pwq
            elif running is None:
                # R20: a stopped loop may never turn again; never answer True for that.
                state = "closed" if loop.is_closed() else "stopped"
                raise WorkqueueLoopError(
                    f"{call}: the event loop of workqueue {self.name!r} is {state} and no loop is "
                    f"running here to rebind it to; nothing would run {describe(work)}"
                )
            elif loop.is_closed():
                link = self._rebind(running)
            elif loop.is_running():
                link = pwq  # another thread's loop: hand off to the loop we are bound to
            elif self._epochs.total or self._armed:
                raise WorkqueueLoopError(
                    f"{call}: workqueue {self.name!r} has pending work on an event loop that is "
                    f"not running; cannot bind it to another loop; {describe(work)}"
                )
            else:
                link = self._rebind(running)
        elif running is None:
            raise WorkqueueLoopError(
                f"{call}: workqueue {self.name!r} is not bound to an event loop yet and no loop "
                f"is running here; allocate it inside the loop that should run it, or enter "
                f"aioworkqueue.running() on that loop first; {describe(work)}"
            )
        else:
            link = self._rebind(running)
        if link.pool.dead:
            raise WorkqueueLoopError(
                f"{call}: the event loop of workqueue {self.name!r} is shutting down; nothing "
                f"would run {describe(work)}"
            )
        if cpu is not None and cpu != link.pool.cpu:
            raise ValueError(
                f"{call}: no cpu {cpu} in embedded mode (only cpu 0); workqueue {self.name!r}; "
                f"{describe(work)}"
            )
        return link

    def _lean_link(self, call: str, work: Work) -> LeanLink:
        """Return the lean link to queue on, binding to the running loop if needed (as
        :meth:`_link` does for the locked core). Context: under LOCK, any thread."""
        link = self._lean
        running = _get_running_loop()
        if link is not None:
            pool = link.pool
            loop = pool.loop
            if not pool.dead and (running is loop or loop.is_running()):
                return link  # its loop, or another thread's loop it hands off to
            if running is None:
                state = "closed" if loop.is_closed() else "stopped"
                if pool.dead:
                    state = "shut down"
                raise WorkqueueLoopError(
                    f"{call}: the event loop of workqueue {self.name!r} is {state} and no loop "
                    f"is running here to rebind it to; nothing would run {describe(work)}"
                )
            if not pool.dead and (link.in_flight() or link.armed):
                raise WorkqueueLoopError(
                    f"{call}: workqueue {self.name!r} has pending work on an event loop that "
                    f"is not running; cannot bind it to another loop; {describe(work)}"
                )
        elif running is None:
            raise WorkqueueLoopError(
                f"{call}: workqueue {self.name!r} is not bound to an event loop yet and no loop "
                f"is running here; allocate it inside the loop that should run it, or enter "
                f"aioworkqueue.running() on that loop first; {describe(work)}"
            )
        self._status &= ~(_ENDED | _LOOP_ENDED)
        self._lean = link = _lean_link_on(self, running)
        return link

    def _link_runtime(self, rt: RuntimeView, call: str, work: Work, cpu: int | None) -> Pwq:
        """Route to a pool of ``rt``: the given cpu, else the caller's own pool, else the next in
        turn; unbound queues have one shared link. Context: under LOCK."""
        if not rt.accepts():
            if rt.shutting_down:
                raise WorkqueueShuttingDownError(
                    f"{call}: {rt!r} of workqueue {self.name!r} is shutting down; only work "
                    f"running on it may queue now; {describe(work)}"
                )
            raise WorkqueueLoopError(
                f"{call}: {rt!r} of workqueue {self.name!r} is not running; {describe(work)}"
            )
        pwqs = self._rt_pwqs
        if self._rt is not rt:
            pwqs = self._bind_runtime(rt)
        if cpu is not None and cpu >= rt.cpus:
            raise ValueError(
                f"{call}: no cpu {cpu} in {rt!r} (0..{rt.cpus - 1}); workqueue {self.name!r}; "
                f"{describe(work)}"
            )
        if len(pwqs) == 1:
            return pwqs[0]
        if cpu is None:
            cpu = rt.local_cpu()
            if cpu is None:
                cpu = rt.next_cpu()
        pwq = pwqs[cpu]
        if pwq.pool.dead:
            raise WorkqueueLoopError(
                f"{call}: pool cpu={cpu} of {rt!r} has died (see the ERROR logged then); "
                f"workqueue {self.name!r}; {describe(work)}"
            )
        return pwq

    def _bind_runtime(self, rt: RuntimeView) -> list[Pwq]:
        if self.flags & WQ.UNBOUND:
            pwqs = [Pwq(self, rt.unbound, self.max_active, self._epochs)]  # type: ignore[arg-type]
        else:
            pwqs = [Pwq(self, pool, self.max_active, self._epochs) for pool in rt.pools]
        for p in pwqs:
            p.pool.pwqs.add(p)
        self._rt = rt
        self._rt_pwqs = pwqs
        rt._wqs.add(self)
        return pwqs

    def _links(self) -> list[Pwq]:
        """Every queue link this queue has. Context: under LOCK."""
        return ([self._pwq] if self._pwq is not None else []) + self._rt_pwqs

    def _links_in(self, rt: RuntimeView) -> list[Pwq]:
        """The links of this queue into ``rt``'s pools. Context: under LOCK."""
        return self._rt_pwqs if self._rt is rt else []

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> Pwq:
        old = self._pwq
        if old is not None:
            self._abandon(old)
        pool = _pool_of(loop)
        self._status &= ~(_ENDED | _LOOP_ENDED)
        self._epochs = Epochs()
        self._pwq = pwq = Pwq(self, pool, self.max_active, self._epochs)
        pool.pwqs.add(pwq)
        return pwq

    def _abandon(self, pwq: Pwq) -> None:
        """Report and reset what this queue still had on a dead loop (never silently lost).

        Only what ``_loop_ending`` did not see: a loop that ended without ``close()`` or
        ``shutdown_asyncgens()`` being called on it.
        Context: under LOCK, after the loop of ``pwq`` has closed (its tasks are gone).
        """
        for work, _kind in self._strand(pwq):
            if _kind != "running" and _lock.claimed(work):
                continue  # reported by an interrupt-context cancel that answered True
            _log.error(
                "workqueue %r: %r was still pending or running when its event loop closed; "
                "reported as cancelled",
                self.name,
                work,
            )
        if pwq in pwq.pool.pwqs:
            pwq.pool.pwqs.discard(pwq)

    def _strand(self, pwq: Pwq) -> list[tuple[Work, str]]:
        """Take back, reset and count as cancelled every instance this queue has on ``pwq``'s
        pool, which will never run them; return each with its state (queued, armed, running).

        Context: under LOCK, the loop of ``pwq`` is ending or has closed (no worker turns).
        """
        pool = pwq.pool
        lost: list[tuple[Work, str]] = []
        for dq in (pool.worklist, pool.hi, pool.bh):
            mine = [w for w in dq if w._pwq is pwq]
            if mine:
                keep = [w for w in dq if w._pwq is not pwq]
                dq.clear()
                dq.extend(keep)
                lost += [(w, "queued") for w in mine]
        lost += [(w, "queued") for w in pwq.inactive]
        pwq.inactive.clear()
        lost += [(w, "armed") for w in self._armed.values()]
        self._armed.clear()
        for worker in pool.workers:
            if worker.current is not None and worker.pwq is pwq:
                lost.append((worker.current, "running"))
        room = self._room
        for work, _kind in lost:
            if room is not None and work._state & PENDING and work._state & (WHERE & ~ARMED):
                room.put()  # R21: it was counted as queued and not started
            _state.strand(work)
            on_unqueue(work)
            on_end(work)
            pwq.nr_cancelled += 1
        return lost

    # -- execution helpers ----------------------------------------------------------------------

    def _handle_exception(self, work: Work, exc: BaseException) -> Awaitable[object] | None:
        """Call the exception handler (this queue's, the runtime's, or the default).

        Context: the pool's loop thread. Returns: what the handler returned (an async handler's
        awaitable, for the caller to run), or None.
        """
        handler = self._handler
        if handler is None:
            rt = self._rt
            handler = rt.exception_handler if rt is not None else None
            if handler is None:
                handler = _default_handler
        return handler(self, work, exc)

    def _cpu_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        ex = self._executor
        if ex is None:
            with LOCK:
                ex = self._executor
                if ex is None:
                    ex = self._executor = concurrent.futures.ThreadPoolExecutor(
                        max_workers=self.max_active, thread_name_prefix=f"aiowq-cpu/{self.name}"
                    )
        return ex

    # -- statistics -----------------------------------------------------------------------------

    def stats(self) -> WorkqueueStats:
        """Return a snapshot of this queue's counters. Context: any."""
        if self._v2:
            return self._lean_stats()
        with LOCK:
            pwqs = self._links()
            total = self._epochs.total
            waiting = 0
            for p in pwqs:
                waiting += len(p.inactive) + sum(1 for w in p.target if w._pwq is p)
            timing: dict[str, Any] = {}
            if self._timing is not None:  # only where timing was ever on
                timing = summarize(list(self._timing.values()))
            return WorkqueueStats(
                name=self.name,
                queued=sum(p.nr_queued for p in pwqs),
                completed=sum(p.nr_completed for p in pwqs),
                failed=sum(p.nr_failed for p in pwqs),
                cancelled=sum(p.nr_cancelled for p in pwqs),
                in_flight=total,
                pending=waiting,
                armed=len(self._armed),
                running=total - waiting,
                max_active_hits=sum(p.nr_max_active_hits for p in pwqs),
                mayday=sum(p.nr_mayday for p in pwqs),
                rescued=sum(p.nr_rescued for p in pwqs),
                cpu_hogs=sum(p.nr_cpu_hogs for p in pwqs),
                max_pending=self.max_pending,
                room_waiters=len(self._room.waiters) if self._room is not None else 0,
                **timing,
            )

    def _lean_stats(self) -> WorkqueueStats:
        # The lean link's counts are its loop's (O): from another thread, a snapshot whose
        # fields may be a few items apart.
        lk = self._lean
        if lk is None:
            return WorkqueueStats(self.name, *(0,) * 12, max_pending=self.max_pending)
        total = lk.in_flight()
        running = sum(1 for w in lk.pool.workers if w.pwq is lk and w.tok is not None)
        return WorkqueueStats(
            name=self.name,
            queued=lk.nr_queued(),
            completed=lk.nr_completed,
            failed=lk.nr_failed,
            cancelled=lk.cancelled(),
            in_flight=total,
            pending=total - running,
            armed=len(lk.armed),
            running=running,
            max_active_hits=lk.nr_max_active_hits,
            mayday=0,
            rescued=0,
            cpu_hogs=0,
            max_pending=self.max_pending,
            room_waiters=len(lk.room_waiters),
        )

    # -- method forms ----------------------------------------------------------------------------

    def queue(self, work: Work) -> bool:
        """Same as :func:`queue_work` ``(self, work)``."""
        return WQ_FORMS.queue_work(self, work)

    async def queue_wait(self, work: Work) -> bool:
        """Same as :func:`queue_work_wait` ``(self, work)``."""
        return await WQ_FORMS.queue_work_wait(self, work)

    def queue_on(self, cpu: int, work: Work) -> bool:
        """Same as :func:`queue_work_on` ``(cpu, self, work)``."""
        return WQ_FORMS.queue_work_on(cpu, self, work)

    def queue_delayed(self, dwork: DelayedWork, delay: float) -> bool:
        """Same as :func:`queue_delayed_work` ``(self, dwork, delay)``."""
        return WQ_FORMS.queue_delayed_work(self, dwork, delay)

    def mod_delayed(self, dwork: DelayedWork, delay: float) -> bool:
        """Same as :func:`mod_delayed_work` ``(self, dwork, delay)``."""
        return WQ_FORMS.mod_delayed_work(self, dwork, delay)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Work:
        """Queue ``fn(*args, **kwargs)`` (plain or async) as a fresh Work and return it.

        No de-duplication: every call makes and queues a new item.
        Returns: the item, a :class:`CallWork` (``.fn``, ``.args``, ``.kwargs`` say what it calls).
        Context: any, as :func:`queue_work`.
        Raises: as :func:`queue_work`; TypeError if ``fn`` is not callable.
        """
        return WQ_FORMS.submit(self, fn, args, kwargs)

    async def flush(self) -> None:
        """Same as :func:`flush_workqueue` ``(self)``."""
        await WQ_FORMS.flush_workqueue(self)

    async def drain(self) -> None:
        """Same as :func:`drain_workqueue` ``(self)``."""
        await WQ_FORMS.drain_workqueue(self)

    async def destroy(self) -> None:
        """Same as :func:`destroy_workqueue` ``(self)``."""
        await WQ_FORMS.destroy_workqueue(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.destroy()


class _Forms:
    """The functions behind the method forms of :class:`Workqueue` (``wq.queue(work)``, ...).

    They sit a layer above (``_queueing.py``, ``_flush.py``), which this module must not import:
    each fills its entries here when it is imported (as ``_work.FORMS`` for Work's forms).
    ``import aioworkqueue`` imports both, so the table is full before user code holds a queue.

    Owner: set once, at import.
    """

    __slots__ = (
        "destroy_workqueue",
        "drain_workqueue",
        "flush_workqueue",
        "mod_delayed_work",
        "queue_delayed_work",
        "queue_work",
        "queue_work_on",
        "queue_work_wait",
        "submit",
    )

    queue_work: Callable[[Workqueue, Work], bool]
    queue_work_on: Callable[[int, Workqueue, Work], bool]
    queue_work_wait: Callable[[Workqueue, Work], Coroutine[Any, Any, bool]]
    queue_delayed_work: Callable[[Workqueue, DelayedWork, float], bool]
    mod_delayed_work: Callable[[Workqueue, DelayedWork, float], bool]
    submit: Callable[[Workqueue, Callable[..., Any], tuple[Any, ...], dict[str, Any]], Work]
    flush_workqueue: Callable[[Workqueue], Coroutine[Any, Any, None]]
    drain_workqueue: Callable[[Workqueue], Coroutine[Any, Any, None]]
    destroy_workqueue: Callable[[Workqueue], Coroutine[Any, Any, None]]


WQ_FORMS = _Forms()


#: Every workqueue allocated, weakly: entering running() binds those no loop has claimed yet.
_ALL: weakref.WeakSet[Workqueue] = weakref.WeakSet()

# One pool per event loop in the embedded mode; closed loops are dropped when the next binds.
_POOLS: dict[asyncio.AbstractEventLoop, Pool] = {}
_POOLS_LOCK = threading.Lock()


def _pool_of(loop: asyncio.AbstractEventLoop) -> Pool:
    """Return the embedded pool of ``loop`` (created on first use). Context: under LOCK."""
    pool = _POOLS.get(loop)
    if pool is None:
        for dead in [lp for lp in _POOLS if lp.is_closed()]:
            del _POOLS[dead]
        pool = _POOLS[loop] = Pool(loop, 0, CONFIG.max_workers)
        _watch_loop_end(loop, pool)
    return pool


_LEAN_POOLS: dict[asyncio.AbstractEventLoop, LeanPool] = {}


def _lean_link_on(wq: Workqueue, loop: asyncio.AbstractEventLoop) -> LeanLink:
    """Return a new link of ``wq`` to the lean pool of ``loop`` (made on first use).

    Context: under LOCK, on ``loop``'s thread (a running loop's).
    """
    pool = _LEAN_POOLS.get(loop)
    if pool is None or pool.dead:
        for dead in [lp for lp in _LEAN_POOLS if lp.is_closed()]:
            del _LEAN_POOLS[dead]
        pool = _LEAN_POOLS[loop] = LeanPool(loop)
        _watch_loop_end(loop, pool)
    link = LeanLink(
        pool,
        wq,
        wq.max_active,
        wq.max_pending,
        highpri=bool(wq.flags & WQ.HIGHPRI),
        freezable=bool(wq.flags & WQ.FREEZABLE),
    )
    pool.links.add(link)
    return link


def _watch_loop_end(loop: asyncio.AbstractEventLoop, pool: Pool | LeanPool) -> None:
    """Have ``pool``'s leftovers reported the moment ``loop`` shuts down (R20), see design §5
    "A queue whose loop has closed".

    ``asyncio.run`` (``asyncio.Runner``, pytest-asyncio, ...) ends a loop by cancelling every
    task, then ``loop.shutdown_asyncgens()``, then ``loop.close()``; a hand-made loop by
    ``close()`` alone. Both are looked up on the instance, so wrapping them there sees the end
    without a task of ours, an atexit hook or a change of the event loop policy.
    Context: under LOCK, on ``loop``'s thread.
    """
    agens = loop.shutdown_asyncgens
    close = loop.close

    def shutdown_asyncgens() -> Any:
        _loop_ending(pool)  # every task was cancelled already: what is left will never run
        return agens()

    def close_loop() -> None:
        if not loop.is_running() and not loop.is_closed():  # else close() raises, or did
            _loop_ending(pool)
        close()

    try:
        loop.shutdown_asyncgens = shutdown_asyncgens  # type: ignore[method-assign]
        loop.close = close_loop  # type: ignore[method-assign]
    except AttributeError:  # a loop class without an instance dict: reported at the next use
        pass


def _loop_ending(pool: Pool | LeanPool) -> None:
    """``pool``'s loop is shutting down: take back every instance still queued, armed or
    running there, count it as cancelled and report it now, one WARNING per workqueue and
    state; from now on ``queue_*`` on those queues raises until a new loop binds them (R20).

    Context: ``pool``'s loop thread, the loop not running its tasks any more; takes LOCK.
    """
    if type(pool) is LeanPool:
        # Called at shutdown_asyncgens and again at close: a thread that queued in between
        # finds the pool dead after its append and takes its own entry back (LeanPool.queue).
        with LOCK:
            for lk in pool.links:
                lk.wq._status |= _LOOP_ENDED
        left = pool.take_back()
        if left:
            report_unfinished("event loop shutdown", left)
        return
    assert type(pool) is Pool
    with LOCK:
        if pool.dead:
            return
        pool.dead = True
        wqs: dict[int, Workqueue] = {}
        for p in pool.pwqs:
            wqs.setdefault(id(p.wq), p.wq)
        unfinished: list[tuple[Work, Workqueue, str]] = []
        for wq in wqs.values():
            wq._status |= _LOOP_ENDED
            link = wq._pwq
            if link is not None and link.pool is pool:
                for work, state in wq._strand(link):
                    if state != "armed":  # armed items are not in a flush epoch yet
                        link.epochs.done(work._epoch)  # flushers waiting for it are released
                    unfinished.append((work, wq, state))
        pool.timers.clear()  # every entry belongs to an item taken back above
        # Last, after every take-back: what an interrupt-context cancel reported by its True.
        unfinished = _lock.unclaimed(unfinished)
    if unfinished:
        report_unfinished("event loop shutdown", unfinished)


def alloc_workqueue(
    name: str,
    flags: WQ | int = _NO_FLAGS,
    max_active: int = 0,
    *,
    exception_handler: ExceptionHandler | None = None,
    max_pending: int = 0,
) -> Workqueue:
    """Allocate a workqueue.

    ``max_active`` is how many of its items may run at once per pool (0 means ``WQ_DFL_ACTIVE``),
    as in the kernel: with ``Runtime(cpus=2)``, ``max_active=4`` lets 8 run. A ``WQ.UNBOUND``
    queue has one link shared by every pool, so there it caps the whole process (R7).
    ``max_pending`` bounds how many of its items may be queued and not started yet, over all
    pools (R21; 0, the default: unbounded): at the bound ``queue_*`` raises
    :class:`WorkqueueFullError` and :func:`queue_work_wait` waits for room.
    ``exception_handler(wq, work, exc)`` gets what its work functions raise (R16); it may be
    ``async def``, and is then awaited on the pool's loop (design §8).
    Context: any. Called while an event loop runs in this thread (and no runtime is active), the
    queue is bound to that loop at once, so any thread may queue on it; otherwise it binds when
    :func:`running` is entered, or at its first use from a running loop.
    Returns: the new workqueue.
    Raises: TypeError for a wrong type, ValueError for unknown or conflicting flags, a
    ``max_active`` outside 0..WQ_MAX_ACTIVE or a negative ``max_pending``.
    """
    return Workqueue(
        name,
        flags,
        max_active,
        exception_handler=exception_handler,
        max_pending=max_pending,
        _call="alloc_workqueue",
    )


def alloc_ordered_workqueue(
    name: str,
    flags: WQ | int = _NO_FLAGS,
    *,
    exception_handler: ExceptionHandler | None = None,
    max_pending: int = 0,
) -> Workqueue:
    """Allocate an ordered workqueue: one item at a time, strictly in queue order (R6).

    Context: any; binds as :func:`alloc_workqueue` does. Returns: the new workqueue.
    Raises: as :func:`alloc_workqueue`.
    """
    call = "alloc_ordered_workqueue"
    name = _check_name(call, name)
    fl = _check_flags(call, name, flags)
    if fl & WQ.BH:
        raise ValueError(f"{call}: WQ.BH queues cannot be ordered (workqueue {name!r})")
    return Workqueue(
        name,
        fl | WQ.UNBOUND,
        1,
        ordered=True,
        exception_handler=exception_handler,
        max_pending=max_pending,
        _call=call,
    )


def create_workqueue(name: str) -> Workqueue:
    """The kernel's old name: a per-CPU queue with max_active 1 and ``WQ.MEM_RECLAIM``."""
    return alloc_workqueue(name, WQ.MEM_RECLAIM, 1)


def create_singlethread_workqueue(name: str) -> Workqueue:
    """The kernel's old name: an ordered queue with ``WQ.MEM_RECLAIM``."""
    return alloc_ordered_workqueue(name, WQ.MEM_RECLAIM)


def revive(work: Work) -> None:
    """If ``work`` is pending or running on an embedded pool whose loop has closed, report and
    reset what its queue left there, so that it can be queued again. Context: under LOCK."""
    pwq = work._pwq
    if pwq is not None and pwq.pool.cpu >= 0 and isinstance(pwq.pool, Pool):
        loop = pwq.pool.loop
        if loop.is_closed() and pwq.wq._pwq is pwq:
            pwq.wq._abandon(pwq)
            pwq.wq._pwq = None


#: How many items a summary line names; the rest are counted (all of them are logged at DEBUG).
_SHOWN = 3


def report_unfinished(what: str, unfinished: list[tuple[Work, Workqueue, str]]) -> None:
    """Log ``unfinished`` (R20): one WARNING per (workqueue, state), with the count
    and the first few items; every item on its own at DEBUG. A service that leaves thousands of
    items gets a handful of lines, and the items themselves in ``shutdown()``'s return.

    Context: any thread; not under LOCK (it calls ``repr`` of user objects).
    """
    groups: dict[tuple[int, str], list[tuple[Work, Workqueue, str]]] = {}
    for item in unfinished:
        groups.setdefault((id(item[1]), item[2]), []).append(item)
    for group in groups.values():
        _, wq, state = group[0]
        n = len(group)
        names = ", ".join(describe(w) for w, _q, _s in group[:_SHOWN])
        more = f" and {n - _SHOWN} more" if n > _SHOWN else ""
        _log.warning(
            "%s: %d item%s on workqueue %r did not finish (%s), counted as cancelled: %s%s",
            what,
            n,
            "" if n == 1 else "s",
            wq.name,
            state,
            names,
            more,
        )
    if _log.isEnabledFor(logging.DEBUG):
        for work, wq, state in unfinished:
            _log.debug(
                "%s: %s on workqueue %r did not finish (%s)", what, describe(work), wq.name, state
            )
