"""Workqueues: allocation, their state, and binding to the pool of an event loop.

In the embedded mode (no Runtime) there is one pool per event loop, cpu 0. A workqueue binds to the
loop that is running when it is first used and queues there from any thread afterwards. When that
loop has closed, the next use from a running loop rebinds it (docs/spec.md); whatever was still
pending on the dead loop is reported as cancelled, never silently dropped.

Owner: ``_pwq``, ``_status``, ``_armed``, ``_epochs`` and the counters change under ``_lock.LOCK``;
``name``, ``flags``, ``max_active``, ``ordered`` are set once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from ._barrier import Epochs, on_end, on_unqueue
from ._config import CONFIG
from ._errors import WorkqueueDestroyedError, WorkqueueDrainingError, WorkqueueLoopError, describe
from ._flags import WQ, WQ_DFL_ACTIVE, WQ_MAX_ACTIVE
from ._lock import LOCK
from ._pool import Pool, current_worker_work
from ._pwq import Pwq
from ._runtime import ACTIVE, Runtime
from ._work import ARMED, PENDING, RUNNING, WHERE, DelayedWork, Work

__all__ = (
    "ExceptionHandler",
    "check_workqueue",
    "Workqueue",
    "WorkqueueStats",
    "alloc_ordered_workqueue",
    "alloc_workqueue",
    "create_singlethread_workqueue",
    "create_workqueue",
)

_log = logging.getLogger("aioworkqueue")
_NO_FLAGS = WQ(0)
_get_running_loop = asyncio._get_running_loop

#: ``handler(wq, work, exc)``: called on the pool's loop when a work function raises (R16).
ExceptionHandler = Callable[["Workqueue", Work, BaseException], None]

# Workqueue._status bits
_DESTROYED = 1 << 0
_DESTROYING = 1 << 1
_DRAIN_UNIT = 1 << 4  # drain_workqueue nests: a count above this bit


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
        raise TypeError(f"{call}: name must be a str, got {type(name).__name__} {name!r}")
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
        "_pwq",
        "_routed",
        "_rt",
        "_rt_pwqs",
        "_runtime",
        "_status",
        "_system",
        "_timing",
        "flags",
        "max_active",
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
        _call: str = "Workqueue",
    ) -> None:
        # The class is public (isinstance, type hints), so constructing it directly must check
        # what alloc_workqueue checks: max_active 0 here once meant a queue that never ran.
        call = _call  # the public call that allocates it, for the messages
        name = _check_name(call, name)
        flags = _check_flags(call, name, flags)
        max_active = _check_max_active(call, name, max_active)
        if not isinstance(ordered, bool):
            raise TypeError(f"{call}: ordered of workqueue {name!r} must be a bool")
        if ordered and (max_active != 1 or flags & WQ.BH):
            raise ValueError(
                f"{call}: an ordered workqueue {name!r} needs max_active 1 and no WQ.BH; "
                f"use alloc_ordered_workqueue()"
            )
        if exception_handler is not None and not callable(exception_handler):
            raise TypeError(f"{call}: exception_handler of {name!r} must be callable")
        self.name = name
        self.flags = flags
        self.max_active = max_active
        self.ordered = ordered
        self._handler = exception_handler  # None: the runtime's, else the default
        self._pwq: Pwq | None = None  # embedded mode: the link to the pool of its loop
        self._runtime = ACTIVE.rt  # the runtime it was allocated in (set once), or None
        self._rt: Runtime | None = None  # the runtime that ``_rt_pwqs`` belong to
        self._rt_pwqs: list[Pwq] = []  # in a runtime: one link per cpu, or one if unbound
        self._status = 0
        self._epochs = Epochs()
        self._armed: dict[int, DelayedWork] = {}  # id → armed delayed items aimed at this queue
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._system = False
        # enable_timing's accumulators, one per thread that ran its items (thread ident ->
        # _timing.TimingAcc); created under LOCK, each written only by its own thread.
        self._timing: dict[int, Any] | None = None
        self._bh = bool(flags & WQ.BH)  # set once: int tests on the hot path, not IntFlag ones
        # Set once: submit must tell async functions before the call on these queues.
        self._async_check = bool(flags & (WQ.BH | WQ.CPU_INTENSIVE))
        # Set once (system queues set it again): a runtime decides where each item goes, so the
        # embedded fast path of queue_work (same loop as last time) does not apply.
        self._routed = self._runtime is not None

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
                raise WorkqueueDrainingError(
                    f"{call}: workqueue {self.name!r} is draining; only its own work may queue "
                    f"onto it; {describe(work)}"
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
            if running is loop or (running is None and not loop.is_closed()):
                link = pwq
            elif running is None:
                raise WorkqueueLoopError(
                    f"{call}: the event loop of workqueue {self.name!r} is closed and no loop is "
                    f"running here to rebind it to; {describe(work)}"
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
                f"{call}: workqueue {self.name!r} is first used outside a running event loop; "
                f"use it once from the loop that should run it; {describe(work)}"
            )
        else:
            link = self._rebind(running)
        if cpu is not None and cpu != link.pool.cpu:
            raise ValueError(
                f"{call}: no cpu {cpu} in embedded mode (only cpu 0); workqueue {self.name!r}; "
                f"{describe(work)}"
            )
        return link

    def _link_runtime(self, rt: Runtime, call: str, work: Work, cpu: int | None) -> Pwq:
        """Route to a pool of ``rt``: the given cpu, else the caller's own pool, else the next in
        turn; unbound queues have one shared link. Context: under LOCK."""
        if not rt.accepts():
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

    def _bind_runtime(self, rt: Runtime) -> list[Pwq]:
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

    def _links_in(self, rt: Runtime) -> list[Pwq]:
        """The links of this queue into ``rt``'s pools. Context: under LOCK."""
        return self._rt_pwqs if self._rt is rt else []

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> Pwq:
        old = self._pwq
        if old is not None:
            self._abandon(old)
        pool = _pool_of(loop)
        self._epochs = Epochs()
        self._pwq = pwq = Pwq(self, pool, self.max_active, self._epochs)
        pool.pwqs.add(pwq)
        return pwq

    def _abandon(self, pwq: Pwq) -> None:
        """Report and reset what this queue still had on a dead loop (never silently lost).

        Context: under LOCK, after the loop of ``pwq`` has closed (its tasks are gone).
        """
        pool = pwq.pool
        lost: list[Work] = []
        for dq in (pool.worklist, pool.hi, pool.bh):
            mine = [w for w in dq if w._pwq is pwq]
            if mine:
                keep = [w for w in dq if w._pwq is not pwq]
                dq.clear()
                dq.extend(keep)
                lost += mine
        lost += pwq.inactive
        pwq.inactive.clear()
        lost += self._armed.values()
        self._armed.clear()
        for worker in pool.workers:
            if worker.current is not None and worker.pwq is pwq:
                lost.append(worker.current)
        for work in lost:
            _log.error(
                "workqueue %r: %r was still pending or running when its event loop closed; "
                "reported as cancelled",
                self.name,
                work,
            )
            work._state &= ~(PENDING | WHERE | ARMED | RUNNING)
            on_unqueue(work)
            on_end(work)
            pwq.nr_cancelled += 1
        if pwq in pool.pwqs:
            pool.pwqs.discard(pwq)

    # -- execution helpers ----------------------------------------------------------------------

    def _handle_exception(self, work: Work, exc: BaseException) -> None:
        handler = self._handler
        if handler is None:
            rt = self._rt
            handler = rt.exception_handler if rt is not None else None
            if handler is None:
                handler = _default_handler
        handler(self, work, exc)

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
        with LOCK:
            pwqs = self._links()
            total = self._epochs.total
            waiting = 0
            for p in pwqs:
                waiting += len(p.inactive) + sum(1 for w in p.target if w._pwq is p)
            timing: dict[str, Any] = {}
            if self._timing is not None:
                from ._timing import summarize  # only where timing was ever on

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
                **timing,
            )

    # -- method forms ----------------------------------------------------------------------------

    def queue(self, work: Work) -> bool:
        """Same as :func:`queue_work` ``(self, work)``."""
        from ._queueing import queue_work

        return queue_work(self, work)

    def queue_on(self, cpu: int, work: Work) -> bool:
        """Same as :func:`queue_work_on` ``(cpu, self, work)``."""
        from ._queueing import queue_work_on

        return queue_work_on(cpu, self, work)

    def queue_delayed(self, dwork: DelayedWork, delay: float) -> bool:
        """Same as :func:`queue_delayed_work` ``(self, dwork, delay)``."""
        from ._queueing import queue_delayed_work

        return queue_delayed_work(self, dwork, delay)

    def mod_delayed(self, dwork: DelayedWork, delay: float) -> bool:
        """Same as :func:`mod_delayed_work` ``(self, dwork, delay)``."""
        from ._queueing import mod_delayed_work

        return mod_delayed_work(self, dwork, delay)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Work:
        """Queue ``fn(*args, **kwargs)`` (plain or async) as a fresh Work and return it.

        No de-duplication: every call makes and queues a new item.
        Context: any, as :func:`queue_work`.
        Raises: as :func:`queue_work`; TypeError if ``fn`` is not callable.
        """
        return _submit(self, fn, args, kwargs)

    async def flush(self) -> None:
        """Same as :func:`flush_workqueue` ``(self)``."""
        from ._flush import flush_workqueue

        await flush_workqueue(self)

    async def drain(self) -> None:
        """Same as :func:`drain_workqueue` ``(self)``."""
        from ._flush import drain_workqueue

        await drain_workqueue(self)

    async def destroy(self) -> None:
        """Same as :func:`destroy_workqueue` ``(self)``."""
        from ._flush import destroy_workqueue

        await destroy_workqueue(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.destroy()


def _submit(wq: Workqueue, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any) -> Work:
    """The first ``submit``: import the implementation (a layer above) and use it from now on."""
    global _submit
    from ._queueing import submit

    _submit = submit
    return submit(wq, fn, args, kwargs)


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
    return pool


def alloc_workqueue(
    name: str,
    flags: WQ | int = _NO_FLAGS,
    max_active: int = 0,
    *,
    exception_handler: ExceptionHandler | None = None,
) -> Workqueue:
    """Allocate a workqueue.

    ``max_active`` is how many of its items may run at once per pool (0 means ``WQ_DFL_ACTIVE``),
    as in the kernel: with ``Runtime(cpus=2)``, ``max_active=4`` lets 8 run. A ``WQ.UNBOUND``
    queue has one link shared by every pool, so there it caps the whole process (R7).
    Context: any; the queue binds to an event loop when first used.
    Returns: the new workqueue.
    Raises: TypeError for a wrong type, ValueError for unknown or conflicting flags or a
    ``max_active`` outside 0..WQ_MAX_ACTIVE.
    """
    return Workqueue(
        name, flags, max_active, exception_handler=exception_handler, _call="alloc_workqueue"
    )


def alloc_ordered_workqueue(
    name: str, flags: WQ | int = _NO_FLAGS, *, exception_handler: ExceptionHandler | None = None
) -> Workqueue:
    """Allocate an ordered workqueue: one item at a time, strictly in queue order (R6).

    Context: any. Returns: the new workqueue. Raises: as :func:`alloc_workqueue`.
    """
    call = "alloc_ordered_workqueue"
    name = _check_name(call, name)
    fl = _check_flags(call, name, flags)
    if fl & WQ.BH:
        raise ValueError(f"{call}: WQ.BH queues cannot be ordered (workqueue {name!r})")
    return Workqueue(
        name, fl | WQ.UNBOUND, 1, ordered=True, exception_handler=exception_handler, _call=call
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
