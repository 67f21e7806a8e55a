"""The per-CPU runtime: one event loop per CPU, each in its own thread, each with a pool.

``async with Runtime(cpus=N) as rt:`` starts N threads named ``aiowq/<cpu>``; each runs its own loop
through ``asyncio.Runner(loop_factory=...)`` (uvloop with ``"auto"`` where it imports) and serves
one :class:`~aioworkqueue._pool.Pool`. Workqueues allocated while the runtime runs, and the system
queues, send their items to these pools (routing is in ``_workqueue.py``); ``WQ.UNBOUND`` queues
share one list that every pool serves (``_unbound.py``).

Leaving the block shuts down: no more queueing from outside; every workqueue is flushed until
quiet or until the deadline; then each pool cancels what still runs, on its own loop; whatever did
not finish — running, queued or armed — is reported (the log, at WARNING, and the return value of
:meth:`Runtime.shutdown`), never silently dropped; finally the loops stop and the threads are
joined, so no thread and no loop is left behind.

Owner (tags as in docs/design.md §1): ``_state``, ``pools``, ``_tids`` and ``_wqs`` are L (changed
under ``_lock.LOCK``); ``_threads`` and ``_stops`` are T, used only by the thread that runs
start/shutdown; each attribute says which.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Self

from . import _lock, _state
from ._barrier import on_unqueue
from ._errors import WorkqueueDeadlockError, WorkqueueError, describe
from ._lock import LOCK
from ._monitor import MonitorServer, parse_address, runtime_snapshot
from ._pool import Pool
from ._timer import disarm
from ._unbound import UnboundPool
from ._watchdog import Watchdog
from ._work import DelayedWork, Work
from ._workqueue import ACTIVE, ExceptionHandler, Workqueue, WorkqueueStats, report_unfinished

__all__ = (
    "ACTIVE",
    "PoolStats",
    "Runtime",
    "RuntimeStats",
    "Unfinished",
    "pool_snapshot",
    "report_unfinished",
    "runtime_stats",
)

_log = logging.getLogger("aioworkqueue")

#: ``(work, workqueue, state)``: an item the shutdown could not finish; state is ``"running"``
#: (its run was cancelled), ``"queued"`` (it never started) or ``"armed"`` (its timer never fired).
Unfinished = tuple[Work, Workqueue, str]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

_NEW, _STARTING, _RUNNING, _STOPPING, _STOPPED = range(5)
_MAX_CPUS = 1024


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of one worker pool."""

    #: The pool's cpu (0 in the embedded mode).
    cpu: int
    #: Worker tasks alive (rescuers not included).
    workers: int
    #: Workers parked, waiting for items.
    idle: int
    #: Workers running an item right now (rescuers included).
    running: int
    #: Items on the pool's own worklists, waiting for a worker.
    waiting: int
    #: Rescuers running (R19).
    rescuers: int


@dataclass(frozen=True, slots=True)
class RuntimeStats:
    """A snapshot of a runtime: its pools and the workqueues bound to it."""

    #: Pools, by cpu.
    pools: tuple[PoolStats, ...]
    #: Items on the shared WQ.UNBOUND lists.
    unbound_waiting: int
    #: Each workqueue bound to the runtime.
    workqueues: tuple[WorkqueueStats, ...]


def _pool_stats(pool: Pool) -> PoolStats:
    # Context: under LOCK.
    return PoolStats(
        cpu=pool.cpu,
        workers=pool.nr_workers,
        idle=len(pool.idle),
        running=sum(1 for w in pool.workers if w.current is not None),
        waiting=len(pool.hi) + len(pool.worklist) + len(pool.bh),
        rescuers=len(pool.rescuers),
    )


def runtime_stats(rt: Runtime) -> RuntimeStats:
    """Implementation of ``Runtime.stats()``. Context: any."""
    with LOCK:
        pools = tuple(_pool_stats(p) for p in rt.pools if p is not None)
        unbound = len(rt.unbound.hi) + len(rt.unbound.worklist)
        wqs = sorted(rt._wqs, key=lambda q: q.name)
    return RuntimeStats(
        pools=pools, unbound_waiting=unbound, workqueues=tuple(q.stats() for q in wqs)
    )


def _resolve_loop_factory(loop_factory: object) -> tuple[str, LoopFactory]:
    if loop_factory in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop_factory == "uvloop":
                raise ValueError(
                    "Runtime: loop_factory='uvloop' but uvloop is not installed"
                ) from None
            return "asyncio", asyncio.new_event_loop
        return "uvloop", uvloop.new_event_loop
    if loop_factory == "asyncio":
        return "asyncio", asyncio.new_event_loop
    if callable(loop_factory):
        return getattr(loop_factory, "__qualname__", "custom"), loop_factory
    raise ValueError(
        f"Runtime: unknown loop_factory {loop_factory!r}; use 'auto', 'asyncio', 'uvloop' "
        f"or a callable returning an event loop"
    )


def _allowed_cpus() -> list[int]:
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        return sorted(getaffinity(0))
    return list(range(os.cpu_count() or 1))


class Runtime:
    """Per-CPU event-loop pools, each in its own thread.

    ``Runtime(cpus=N, loop_factory="auto", pin=False, max_workers=1024, exception_handler=None,
    shutdown_timeout=10.0, watchdog_thresh=30.0, cpu_intensive_thresh=0.010, monitor=None)``, as
    ``async with Runtime(...) as rt:``. ``cpus`` defaults to the CPUs this process may run on;
    ``pin=True`` pins pool thread *i* to the *i*-th of them; ``monitor`` is an address (a Unix
    socket path or ``127.0.0.1:PORT``) where ``aioworkqueue monitor`` can read the statistics.

    Context: start and shut down from a coroutine on the host's loop; one runtime at a time.
    Raises: TypeError / ValueError for bad arguments (a bad cpu count, an unknown loop factory).
    """

    def __init__(
        self,
        cpus: int | None = None,
        loop_factory: str | LoopFactory = "auto",
        pin: bool = False,
        *,
        max_workers: int = 1024,
        exception_handler: ExceptionHandler | None = None,
        shutdown_timeout: float = 10.0,
        watchdog_thresh: float = 30.0,
        cpu_intensive_thresh: float = 0.010,
        monitor: str | None = None,
    ) -> None:
        allowed = _allowed_cpus()
        if cpus is None:
            cpus = len(allowed)
        if isinstance(cpus, bool) or not isinstance(cpus, int):
            raise TypeError(f"Runtime: cpus must be an int, got {cpus!r}")
        if not 1 <= cpus <= _MAX_CPUS:
            raise ValueError(f"Runtime: cpus must be 1..{_MAX_CPUS}, got {cpus}")
        if not isinstance(pin, bool):
            raise TypeError(f"Runtime: pin must be a bool, got {pin!r}")
        if pin and not hasattr(os, "sched_setaffinity"):
            raise ValueError("Runtime: pin=True needs os.sched_setaffinity (Linux)")
        if isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(f"Runtime: max_workers must be an int, got {max_workers!r}")
        if max_workers < 1:
            raise ValueError(f"Runtime: max_workers must be >= 1, got {max_workers}")
        if exception_handler is not None and not callable(exception_handler):
            raise TypeError("Runtime: exception_handler must be callable")
        # I, the configuration: these three, cpus, pin, pinned_to, loop_name, _factory,
        # max_workers, exception_handler, _monitor_at.
        self.shutdown_timeout = _check_timeout("Runtime", shutdown_timeout)
        self.watchdog_thresh = _check_timeout("Runtime watchdog_thresh", watchdog_thresh)
        self.cpu_intensive_thresh = _check_timeout(
            "Runtime cpu_intensive_thresh", cpu_intensive_thresh
        )
        if not self.watchdog_thresh or not self.cpu_intensive_thresh:
            raise ValueError("Runtime: watchdog_thresh and cpu_intensive_thresh must be > 0")
        self._watchdog: Watchdog | None = None  # T (the thread that runs start/shutdown)
        if monitor is not None:
            parse_address(monitor)  # a bad address fails here, not in start()
        self._monitor_at = monitor
        self._monitor: MonitorServer | None = None  # T
        #: T: where ``aioworkqueue monitor`` can read this runtime (set by start), or None.
        self.monitor_address: str | None = None
        self.cpus = cpus
        self.pin = pin
        self.pinned_to = [allowed[i % len(allowed)] for i in range(cpus)] if pin else []
        self.loop_name, self._factory = _resolve_loop_factory(loop_factory)
        self.max_workers = max_workers
        self.exception_handler = exception_handler
        self.pools: list[Pool] = []  # L (each pool thread puts its own pool in)
        self._tids: dict[int, int] = {}  # L: pool thread ident -> cpu
        self.unbound = UnboundPool(self._tids)  # I
        self._wqs: weakref.WeakSet[Workqueue] = weakref.WeakSet()  # L: queues bound here
        self._state = _NEW  # L
        self._threads: list[threading.Thread] = []  # T
        # T; each pool thread stores its own entry (A: one list item store).
        self._stops: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._rr = 0  # L
        self._lost_with_pools: list[Unfinished] = []  # L: taken back when a pool died
        #: T: what the last shutdown could not finish (also its return value).
        self.unfinished: list[Unfinished] = []

    def __repr__(self) -> str:
        states = ("new", "starting", "running", "stopping", "stopped")
        return f"<Runtime cpus={self.cpus} loop={self.loop_name} {states[self._state]}>"

    def stats(self) -> RuntimeStats:
        """Return a snapshot of the pools and workqueues of this runtime. Context: any."""
        return runtime_stats(self)

    @property
    def running(self) -> bool:
        """True between a successful start and the beginning of shutdown."""
        return self._state == _RUNNING

    @property
    def shutting_down(self) -> bool:
        """True while the shutdown flushes and stops the pools (outside queueing is refused)."""
        return self._state == _STOPPING

    # -- routing helpers, used by workqueues (under LOCK) ---------------------------------------

    def local_cpu(self) -> int | None:
        """The cpu of the pool thread the caller runs on, or None. Context: any."""
        return self._tids.get(threading.get_ident())

    def next_cpu(self) -> int:
        """Round-robin choice for callers outside the pools, among live pools.

        Context: under LOCK.
        """
        self._rr = cpu = (self._rr + 1) % self.cpus
        if self.pools[cpu].dead:
            for _ in range(self.cpus):
                self._rr = cpu = (cpu + 1) % self.cpus
                if not self.pools[cpu].dead:
                    break
            else:
                raise WorkqueueError(f"{self!r}: every pool has died; nothing can run")
        return cpu

    def accepts(self) -> bool:
        """May the caller queue now? Outside callers only while running; running work (chained)
        also while the shutdown flushes. Context: under LOCK."""
        return self._state == _RUNNING or (
            self._state == _STOPPING and self.local_cpu() is not None
        )

    # -- start ----------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    async def start(self) -> None:
        """Start the pool threads and make this the active runtime.

        Context: a coroutine. Raises: WorkqueueError if a runtime is already running or this one
        was started before; whatever a pool thread raised while starting (pinning, loop factory).
        """
        with LOCK:
            if ACTIVE.rt is not None:
                raise WorkqueueError(f"Runtime.start: {ACTIVE.rt!r} is already running")
            if self._state != _NEW:
                raise WorkqueueError(f"Runtime.start: {self!r} cannot be started again")
            self._state = _STARTING
        if self._monitor_at is not None:
            # Bound before any thread starts: an address that is refused (in use, not a socket)
            # then fails start() with nothing left running.
            try:
                self._monitor = MonitorServer(self._monitor_at, lambda: runtime_snapshot(self))
            except BaseException:
                with LOCK:
                    self._state = _STOPPED
                raise
        self.pools = [None] * self.cpus  # type: ignore[list-item]
        ready = [threading.Event() for _ in range(self.cpus)]
        errors: list[BaseException] = []
        self._stops = [None] * self.cpus  # type: ignore[list-item]
        try:
            for cpu in range(self.cpus):
                th = threading.Thread(
                    target=self._thread_main,
                    args=(cpu, ready[cpu], errors),
                    name=f"aiowq/{cpu}",
                    daemon=True,
                )
                th.start()
                self._threads.append(th)
            for ev in ready[: len(self._threads)]:
                await asyncio.to_thread(ev.wait)
            if errors:
                raise errors[0]
            with LOCK:
                self.unbound.pools = list(self.pools)
                self._state = _RUNNING
                ACTIVE.rt = self
            self._watchdog = Watchdog(self.pools, self.watchdog_thresh, self.cpu_intensive_thresh)
            self._watchdog.start()
            if self._monitor is not None:  # bound above, before any thread
                self._monitor.start()
                self.monitor_address = self._monitor.address
        except BaseException:
            await self._abort_start(ready)
            raise

    async def _abort_start(self, ready: list[threading.Event]) -> None:
        """Undo a start that failed at any step (a pool thread, the loop factory, a
        cancellation): no thread, no active runtime, nothing for the next runtime to trip over.
        A refused monitor address fails earlier, before any thread starts.
        Context: the coroutine of :meth:`start`, which re-raises afterwards."""
        with LOCK:
            if ACTIVE.rt is self:
                ACTIVE.rt = None
            self._state = _STOPPING  # a pool thread that ends now is not a pool that died
        # Every thread started reaches ready (or fails): only then is its stop future known.
        for ev in ready[: len(self._threads)]:
            await asyncio.to_thread(ev.wait)
        if self._monitor is not None:
            await asyncio.to_thread(self._monitor.stop)  # never started: closes, unlinks
            self._monitor = None
            self.monitor_address = None
        if self._watchdog is not None:
            await asyncio.to_thread(self._watchdog.stop)
            self._watchdog = None
        await self._stop_threads()
        with LOCK:
            self._state = _STOPPED

    def _thread_main(self, cpu: int, ready: threading.Event, errors: list[BaseException]) -> None:
        ended: BaseException | None = None  # what ended the loop, if anything did
        try:
            if self.pin:
                os.sched_setaffinity(threading.get_native_id(), {self.pinned_to[cpu]})
            with asyncio.Runner(loop_factory=self._checked_factory) as runner:
                try:
                    runner.run(self._serve(cpu, ready))
                finally:
                    self._pool_dying(cpu)  # before the runner's close cancels the workers
        except BaseException as exc:
            if not ready.is_set():
                errors.append(exc)  # a failed start: start() re-raises it
                return
            ended = exc
        finally:
            ready.set()
        if ended is not None or not self._ending():
            self._pool_died(cpu, ended)

    def _checked_factory(self) -> asyncio.AbstractEventLoop:
        loop = self._factory()
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(
                f"Runtime: loop_factory {self.loop_name} returned {describe(loop)}, "
                f"not an asyncio event loop"
            )
        return loop

    def _ending(self) -> bool:
        with LOCK:
            return self._state >= _STOPPING

    def _pool_dying(self, cpu: int) -> None:
        # Context: the pool's thread, its loop stopped (a shutdown, or a fault) and not yet
        # closed. The runner's close cancels the remaining workers: whatever slot they free
        # must not spawn a new one.
        with LOCK:
            if cpu < len(self.pools) and self.pools[cpu] is not None:
                self.pools[cpu].dying = True

    def _pool_died(self, cpu: int, exc: BaseException | None) -> None:
        """Pool ``cpu``'s thread ended while the runtime ran: report it, route nothing more to it,
        and take back what it held (reported now, and again by :meth:`shutdown`).

        Context: the dead pool's thread, after its loop closed.
        """
        with LOCK:
            pool = self.pools[cpu] if cpu < len(self.pools) else None
            if pool is None or pool.dead:
                return
            pool.dead = True
            pool.dying = True
            for tid, c in list(self._tids.items()):
                if c == cpu:
                    del self._tids[tid]  # a new thread may get the same ident
            left = self._sweep(pool)
            self._lost_with_pools += left
            if self.unbound.hi or self.unbound.worklist:
                # A wake-up for the shared lists may have gone to this pool between its loop
                # stopping and now, and been lost with it: hand them to a live pool.
                self.unbound.wake(False)
            fatal = pool.fatal
        cause = f"{type(exc).__name__}: {exc}" if exc is not None else "its loop ended"
        if fatal is not None:
            cause += f", raised by {describe(fatal[0])} on workqueue {fatal[1].wq.name!r}"
        _log.error(
            "runtime %r: pool cpu=%d died (%s); its items are reported unfinished and nothing "
            "more is routed to it: %s",
            self,
            cpu,
            cause,
            ", ".join(f"{describe(w)} on {wq.name!r} ({st})" for w, wq, st in left) or "none",
            exc_info=exc if exc is not None and not isinstance(exc, KeyboardInterrupt) else None,
        )

    def _sweep(self, pool: Pool) -> list[Unfinished]:
        """Take back what only ``pool`` could have run. Context: under LOCK, its loop closed."""
        left: list[Unfinished] = []
        for dq in (pool.hi, pool.worklist, pool.bh):
            while dq:
                left.append(_take_back(dq.popleft(), "queued"))
        for worker in list(pool.workers):
            if worker.current is not None and worker.pwq is not None:
                left.append((worker.current, worker.pwq.wq, "running"))
        for wq in list(self._wqs):
            for p in wq._links_in(self):
                if p.pool is pool:
                    while p.inactive:
                        left.append(_take_back(p.inactive.popleft(), "queued"))
            for dwork in list(wq._armed.values()):
                if dwork._tpool is pool:  # armed in the dead pool's timer heap
                    left.append(_take_back(dwork, "armed"))
        return left

    async def _serve(self, cpu: int, ready: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()
        with LOCK:
            self.pools[cpu] = Pool(loop, cpu, self.max_workers, self.unbound.shared())
            self._tids[threading.get_ident()] = cpu
        self._stops[cpu] = (loop, stop)
        ready.set()
        await stop

    # -- shutdown -------------------------------------------------------------------------------

    async def shutdown(self, timeout: float | None = None) -> list[Unfinished]:  # noqa: ASYNC109 (docs/spec.md names it)
        """Flush every workqueue of this runtime within ``timeout`` seconds, cancel what still
        runs, stop the pools and join their threads.

        Context: a coroutine on any loop but the runtime's own; a second call returns at once.
        Raises: WorkqueueDeadlockError when called from one of the runtime's pools.
        Returns: the items that did not finish, as ``(work, workqueue, state)``; they are also
        logged: one WARNING per workqueue and state, each item at DEBUG.
        """
        deadline = self.shutdown_timeout if timeout is None else _check_timeout("shutdown", timeout)
        cpu = self.local_cpu()
        if cpu is not None:
            raise WorkqueueDeadlockError(
                f"Runtime.shutdown: called from pool cpu={cpu} of {self!r}, which it would stop "
                f"under itself; call it from the host loop"
            )
        with LOCK:
            if self._state != _RUNNING:
                return []
            self._state = _STOPPING
        try:
            async with asyncio.timeout(deadline):
                await self._flush_until_quiet()
        except TimeoutError:
            pass
        # Every pool stops starting items before any run is cut: a cut run on one pool frees
        # a max_active slot, and a pool not yet told would start the item that takes it.
        with LOCK:
            for pool in self.pools:
                pool.stopping = True
        for pool in self.pools:
            with LOCK:
                dead = pool.dead or pool.loop.is_closed()
            if dead:
                continue  # its thread ended already; _pool_died took back what it held
            try:
                cf = asyncio.run_coroutine_threadsafe(_stop_pool(pool), pool.loop)
            except RuntimeError:  # its loop closed just now: it is dying, see _pool_died
                continue
            await asyncio.wrap_future(cf)
        with LOCK:
            unfinished = self._collect()
        if self._watchdog is not None:
            await asyncio.to_thread(self._watchdog.stop)
            self._watchdog = None
        if self._monitor is not None:
            await asyncio.to_thread(self._monitor.stop)
            self._monitor = None
        await self._stop_threads()
        with LOCK:
            self._state = _STOPPED
            if ACTIVE.rt is self:
                ACTIVE.rt = None
        report_unfinished("runtime shutdown", unfinished)
        self.unfinished = unfinished
        return unfinished

    async def _flush_until_quiet(self) -> None:
        while True:
            with LOCK:
                futs = [f for wq in list(self._wqs) if (f := wq._epochs.start_flush()) is not None]
            if not futs:
                return
            await asyncio.gather(*futs)

    def _collect(self) -> list[Unfinished]:
        # Context: under LOCK, every worker of every pool has ended.
        unfinished: list[Unfinished] = self._lost_with_pools
        self._lost_with_pools = []
        for pool in self.pools:
            unfinished += [(w, p.wq, state) for w, p, state in pool.left]
            pool.left.clear()
        lists: list[deque[Work]] = [self.unbound.hi, self.unbound.worklist]
        for pool in self.pools:
            lists += [pool.hi, pool.worklist, pool.bh]
        mine = {id(p) for wq in self._wqs for p in wq._links_in(self)}
        for dq in lists:
            stranded = [w for w in dq if id(w._pwq) in mine]
            if stranded:
                keep = [w for w in dq if id(w._pwq) not in mine]
                dq.clear()
                dq.extend(keep)
                for w in stranded:
                    unfinished.append(_take_back(w, "queued"))
        for wq in list(self._wqs):
            for p in wq._links_in(self):
                while p.inactive:
                    unfinished.append(_take_back(p.inactive.popleft(), "queued"))
            for dwork in list(wq._armed.values()):
                if dwork._pwq is not None and id(dwork._pwq) in mine:
                    unfinished.append(_take_back(dwork, "armed"))
        # Last, after every take-back: what an interrupt-context cancel reported by its True.
        return _lock.unclaimed(unfinished)

    async def _stop_threads(self) -> None:
        for item in self._stops:
            if item is not None:
                loop, stop = item
                try:
                    loop.call_soon_threadsafe(_set_result, stop)
                except RuntimeError:  # its loop already ended
                    pass
        for th in self._threads:
            await asyncio.to_thread(th.join)
        self._threads.clear()


def _set_result(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _take_back(work: Work, state: str) -> Unfinished:
    """Reset a stranded pending instance and account it as cancelled. Context: under LOCK."""
    pwq = work._pwq
    assert pwq is not None
    if state == "armed":
        assert isinstance(work, DelayedWork)
        disarm(work)
    else:
        pwq.epochs.done(work._epoch)
        if pwq.room:  # R21: it was counted as queued and not started
            pwq.room.put()
    _state.take_back(work)
    pwq.nr_cancelled += 1
    on_unqueue(work)
    return work, pwq.wq, state


async def _stop_pool(pool: Pool) -> None:
    """Cancel every worker of ``pool``, on its own loop, and wait for them to end."""
    with LOCK:
        pool.stopping = True
        tasks = [w.task for w in list(pool.workers) if w.task is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _check_timeout(call: str, timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{call}: timeout must be int or float seconds, got {timeout!r}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"{call}: timeout must be >= 0, got {timeout!r}")
    return float(timeout)


def pool_snapshot(pool: Any) -> dict[str, Any]:
    """The JSON document ``running(monitor=...)`` serves: the embedded pool of one loop and every
    workqueue bound to it, in the shape of :func:`runtime_snapshot`. Context: any thread."""
    with LOCK:
        ps = _pool_stats(pool)
        unbound = len(pool.ub_hi) + len(pool.ub)  # without a runtime, its own WQ.UNBOUND lists
        wqs = sorted({id(p.wq): p.wq for p in list(pool.pwqs)}.values(), key=lambda q: q.name)
    return {
        "pid": os.getpid(),
        "time": time.time(),
        "pools": [asdict(ps)],
        "unbound_waiting": unbound,
        "workqueues": [asdict(q.stats()) for q in wqs],
    }
