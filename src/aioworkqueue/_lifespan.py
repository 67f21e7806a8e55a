"""``aioworkqueue.running()``: the workqueues for the life of a service, drained on the way out.

One object serves every framework that speaks "async context manager for the app's life"::

    async with aioworkqueue.running():            # any asyncio program
        ...
    Starlette(lifespan=aioworkqueue.running)      # Starlette / FastAPI call running(app)
    Starlette(lifespan=functools.partial(aioworkqueue.running, timeout=3))

Entering starts the runtime: in the embedded mode (work runs on the host loop) only a watchdog
thread for that loop and, with ``monitor=``, the monitor; a per-CPU
:class:`~aioworkqueue.Runtime` when asked. Leaving shuts down within ``timeout`` seconds, which
should be shorter than the server's own grace period:

1. queueing from outside is refused (work that is running may still queue: chained work);
2. every workqueue is flushed until it is quiet or the deadline passes;
3. whatever is left — running, queued, or armed — is cancelled, logged (one WARNING per workqueue
   and state), stored in ``.unfinished`` and handed to ``on_unfinished``: never silently dropped;
4. from then on ``queue_*`` on the queues of that loop raises ``WorkqueueLoopError`` (R20), until
   ``running()`` is entered again or a new loop binds them.

Entering binds every workqueue that no loop has claimed yet, the system queues included, to the
loop (or gives it to the runtime), so a module-level queue takes work from threads at once
(docs/spec.md, "Binding").

In Runtime mode steps 1-3 are :meth:`Runtime.shutdown`. In both modes they also act, at the same
time and with the same deadline, on the embedded pool of the loop the context was entered on
(every workqueue bound to it, the system queues included; in Runtime mode these are the queues
allocated before the runtime started, at import time say, which run on the host loop). There,
outside queueing is refused with the drain mark of R14, so while the shutdown flushes, a running
item may queue onto its own workqueue but not onto another one (``WorkqueueShuttingDownError``, a
``WorkqueueDrainingError`` and a ``WorkqueueLoopError``, as a runtime's refusal is), and
a workqueue first used after the shutdown began is not covered. Armed timers are not waited for:
a delayed item still armed when the queues are quiet is reported as ``"armed"``.

The shutdown runs in a task of its own and is shielded: if the task that leaves the context is
cancelled meanwhile (once or more), the drain still finishes within its deadline, and the
cancellation is raised afterwards. Nothing here is bound to the entering task, so entering and
leaving may happen in different tasks. No signal handler is installed: stopping is the server's
business.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from ._cancel import cancel_work
from ._errors import WorkqueueError
from ._lock import INTR, LOCK, replay
from ._monitor import MonitorServer, parse_address
from ._pool import Pool, current_worker_work
from ._runtime import ACTIVE, Runtime, Unfinished, _stop_pool, pool_snapshot, report_unfinished
from ._watchdog import Watchdog
from ._work import Work
from ._workqueue import (
    _ALL,
    _DESTROYED,
    _DRAIN_UNIT,
    _ENDED,
    _POOLS,
    _SHUTDOWN,
    Workqueue,
    _pool_of,
)

__all__ = ("OnUnfinished", "Running", "running")

_log = logging.getLogger("aioworkqueue")

#: ``on_unfinished(items)``: called once per shutdown, from the shutdown task, with the items
#: that did not finish (possibly none).
OnUnfinished = Callable[[list[Unfinished]], object]

_IDLE, _ENTERED, _EXITING = range(3)

# id(workqueue) -> how many shutdowns mark it now: its _SHUTDOWN bit is set while one does,
# so that their refusal is WorkqueueShuttingDownError, not drain_workqueue's. Owner: LOCK.
_MARKS: dict[int, int] = {}

# Runtime's defaults: the kernel's 30 s lockup threshold, and 10 ms for a CPU hog.
_WATCHDOG_THRESH = 30.0
_CPU_INTENSIVE_THRESH = 0.010


def _check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"running: timeout must be int or float seconds, got {timeout!r}")
    if math.isnan(timeout) or math.isinf(timeout) or timeout < 0:
        raise ValueError(f"running: timeout must be finite and >= 0, got {timeout!r}")
    return float(timeout)


def _check_thresh(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"running: {name} must be int or float seconds, got {value!r}")
    if not 0 < value < math.inf:  # NaN fails this too
        raise ValueError(f"running: {name} must be finite and > 0, got {value!r}")
    return float(value)


class Running:
    """The async context manager that :func:`running` returns.

    After the block, ``.unfinished`` holds what the shutdown could not finish, as
    ``(work, workqueue, state)``; ``.runtime`` is the :class:`Runtime` it ran, or None (embedded).
    It may be entered again once it has been left (a new runtime is made from ``True`` or a
    mapping; a :class:`Runtime` instance cannot be started twice). In the embedded mode,
    ``.monitor_address`` is where ``aioworkqueue monitor`` can read it while it is entered (the
    real port when asked for port 0), or None.

    Context: enter and leave from coroutines; the two may run in different tasks.
    """

    __slots__ = (
        "_loop",
        "_monitor",
        "_monitor_at",
        "_spec",
        "_state",
        "_watchdog",
        "cpu_intensive_thresh",
        "monitor_address",
        "on_unfinished",
        "runtime",
        "timeout",
        "unfinished",
        "watchdog_thresh",
    )

    def __init__(
        self,
        *,
        runtime: bool | Runtime | Mapping[str, Any] = False,
        timeout: float = 5.0,
        on_unfinished: OnUnfinished | None = None,
        monitor: str | None = None,
        watchdog_thresh: float = _WATCHDOG_THRESH,
        cpu_intensive_thresh: float = _CPU_INTENSIVE_THRESH,
    ) -> None:
        if not isinstance(runtime, bool | Runtime | Mapping):
            raise TypeError(
                f"running: runtime must be a bool, a Runtime or a mapping of Runtime arguments, "
                f"got {runtime!r}"
            )
        if on_unfinished is not None and not callable(on_unfinished):
            raise TypeError(f"running: on_unfinished must be callable, got {on_unfinished!r}")
        self._spec = runtime  # I
        self.timeout = _check_timeout(timeout)  # I
        self.watchdog_thresh = _check_thresh("watchdog_thresh", watchdog_thresh)  # I
        self.cpu_intensive_thresh = _check_thresh("cpu_intensive_thresh", cpu_intensive_thresh)  # I
        if monitor is not None:
            parse_address(monitor)  # a bad address fails here, not on entering
        if runtime is not False and (
            monitor is not None
            or self.watchdog_thresh != _WATCHDOG_THRESH
            or self.cpu_intensive_thresh != _CPU_INTENSIVE_THRESH
        ):
            # A runtime has its own monitor and watchdog; two of each would only confuse.
            raise ValueError(
                "running: monitor, watchdog_thresh and cpu_intensive_thresh are for the embedded "
                "mode; with a runtime, give them to it (runtime={'monitor': ...} or Runtime(...))"
            )
        self._monitor_at = monitor  # I
        self.on_unfinished = on_unfinished  # I
        # O: the loop that entered the block (``_loop``) owns the rest.
        self._monitor: MonitorServer | None = None
        self._watchdog: Watchdog | None = None
        self.monitor_address: str | None = None
        self.runtime: Runtime | None = None
        self.unfinished: list[Unfinished] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = _IDLE

    def __repr__(self) -> str:
        mode = "embedded" if self.runtime is None and self._spec is False else "runtime"
        state = ("idle", "entered", "exiting")[self._state]
        return f"<running {mode} timeout={self.timeout} {state}>"

    async def __aenter__(self) -> None:
        """Start the runtime (nothing to start in the embedded mode).

        Returns: None, so that Starlette's lifespan adds no state.
        Raises: WorkqueueError if already entered, or if a runtime is already running (as
        :meth:`Runtime.start`); whatever a runtime raises while starting.
        """
        if self._state != _IDLE:
            raise WorkqueueError(f"running: {self!r} is already entered")
        self._state = _ENTERED
        try:
            self.unfinished = []
            self._loop = asyncio.get_running_loop()
            spec = self._spec
            if spec is False:
                self.runtime = None
                _claim_unbound(self._loop, None)
                self._watch(self._loop)
                return
            if isinstance(spec, Runtime):
                rt = spec
            elif spec is True:
                rt = Runtime()
            else:
                rt = Runtime(**spec)
            self.runtime = rt
            if not rt.running:
                await rt.start()
            _claim_unbound(self._loop, rt)
        except BaseException:
            self._state = _IDLE
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Shut down within ``timeout`` (see the module docstring); shielded from cancellation.

        Raises: WorkqueueError if not entered, or when called from inside a work item (it would
        wait for itself); CancelledError after the shutdown finished, if the leaving task was
        cancelled meanwhile; whatever ``on_unfinished`` raised.
        """
        if self._state != _ENTERED:
            raise WorkqueueError(f"running: {self!r} was not entered")
        if current_worker_work() is not None:
            raise WorkqueueError("running: cannot shut down from inside a work item")
        self._state = _EXITING
        shutdown = asyncio.ensure_future(self._shutdown())
        cancelled: asyncio.CancelledError | None = None
        try:
            while not shutdown.done():
                try:
                    await asyncio.shield(shutdown)
                except asyncio.CancelledError as err:
                    if shutdown.done():
                        raise  # the shutdown task itself was cancelled (the loop is closing)
                    cancelled = err  # the drain goes on; the cancellation is raised after it
        finally:
            if shutdown.done():
                self._state = _IDLE
        shutdown.result()
        if cancelled is not None:
            raise cancelled

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the monitor and the watchdog of ``loop``'s embedded pool, as a runtime does for
        its pools. Context: the entering coroutine, on ``loop``. Raises: OSError when the
        monitor address is refused (then nothing is left started)."""
        with LOCK:
            pool = _pool_of(loop)  # made now, on its loop, so its thread is this one
        if self._monitor_at is not None:
            self._monitor = MonitorServer(self._monitor_at, lambda: pool_snapshot(pool))
        self._watchdog = Watchdog([pool], self.watchdog_thresh, self.cpu_intensive_thresh)
        self._watchdog.start()
        if self._monitor is not None:
            self._monitor.start()
            self.monitor_address = self._monitor.address

    def _unwatch(self) -> None:
        # Joined here, on the loop, not awaited in a thread: both stop at once by construction
        # (an Event wakes the watchdog, a socketpair the monitor), while an await would leave
        # the loop idle, and a virtual clock (the test plugin's) would jump past the deadline
        # to the next timer meanwhile.
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None
            self.monitor_address = None

    async def _shutdown(self) -> None:
        # The host loop's pool is drained in both modes: a workqueue allocated before the
        # runtime started (at import time, say) is an embedded one and runs there.
        parts = [self._shutdown_host()]
        if self.runtime is not None:
            parts.append(self.runtime.shutdown(self.timeout))
        try:
            gathered = await asyncio.gather(*parts)
        finally:
            self._unwatch()  # after the drain: the monitor shows it, the watchdog guards it
        unfinished = [item for part in gathered for item in part]
        with LOCK:
            # R20: from now on queue_* on the host loop's queues raises instead of answering
            # True for items no lifespan covers (a producer thread that outlived the service).
            # The queues the host drain marked are ended already (_shutdown_embedded, with no
            # gap after the drain's refusal); the rest are system queues that route to a
            # runtime, ended only now: while the runtime drains, its items may chain onto them.
            pool = _POOLS.get(self._loop) if self._loop is not None else None
            if pool is not None:
                for wq in _queues_of(pool):
                    wq._status |= _ENDED
        self.unfinished = unfinished
        if self.on_unfinished is not None:
            self.on_unfinished(unfinished)

    async def _shutdown_host(self) -> list[Unfinished]:
        loop = self._loop
        assert loop is not None
        if loop is asyncio.get_running_loop():
            return await _shutdown_embedded(loop, self.timeout)
        if loop.is_running():
            cf = asyncio.run_coroutine_threadsafe(_shutdown_embedded(loop, self.timeout), loop)
            return await asyncio.wrap_future(cf)
        return []  # its loop has ended: what it left there was reported then (_loop_ending)


def running(
    app: object = None,
    /,
    *,
    runtime: bool | Runtime | Mapping[str, Any] = False,
    timeout: float = 5.0,
    on_unfinished: OnUnfinished | None = None,
    monitor: str | None = None,
    watchdog_thresh: float = _WATCHDOG_THRESH,
    cpu_intensive_thresh: float = _CPU_INTENSIVE_THRESH,
) -> Running:
    """Run the workqueues for the life of a block or an app; drain them when it ends.

    ``async with running():`` or ``Starlette(lifespan=running)``: ``app``, the first positional
    argument, is accepted for that use and ignored. ``runtime=False`` (default) is the embedded
    mode; ``True`` starts a ``Runtime()``; a mapping starts ``Runtime(**mapping)``; a
    :class:`Runtime` is started if it is not running yet. On exit: outside queueing is refused,
    every workqueue is flushed for at most ``timeout`` seconds, then what is left is cancelled,
    logged at WARNING, stored in ``.unfinished`` and passed to ``on_unfinished``; afterwards
    ``queue_*`` on the queues of that loop raises ``WorkqueueLoopError``. On entry, every
    workqueue no loop has claimed yet is bound to the loop (or the runtime).

    In the embedded mode the host loop's pool gets what a runtime gives its pools, while the
    block runs: a watchdog thread that pings the loop, counting an item that runs more than
    ``cpu_intensive_thresh`` seconds (default 10 ms) without awaiting as a CPU hog
    (``wq.stats().cpu_hogs``, reported at WARNING) and reporting a loop that does not turn for
    ``watchdog_thresh`` seconds (default 30) as a workqueue lockup at ERROR, with the running item
    and the loop's stack; and, with ``monitor=ADDRESS`` (a Unix socket path or ``127.0.0.1:PORT``),
    the statistics ``aioworkqueue monitor`` reads. With a runtime these three belong to the
    :class:`Runtime`; giving them here is a ValueError.

    Context: call anywhere; enter and leave from coroutines (possibly different tasks).
    Returns: a :class:`Running` async context manager (entering it yields None).
    Raises: TypeError / ValueError for bad arguments, at once; entering raises OSError when the
    monitor address is refused (see :class:`Runtime`).
    """
    return Running(
        runtime=runtime,
        timeout=timeout,
        on_unfinished=on_unfinished,
        monitor=monitor,
        watchdog_thresh=watchdog_thresh,
        cpu_intensive_thresh=cpu_intensive_thresh,
    )


# -- binding on entry (docs/spec.md, "Binding") ----------------------------------------------------

#: Queues that entering running() gave to its runtime (they were allocated unbound, outside any
#: runtime). Once that runtime has ended, the next running() claims them again.
_CLAIMED: weakref.WeakSet[Workqueue] = weakref.WeakSet()


def _claim_unbound(loop: asyncio.AbstractEventLoop, rt: Runtime | None) -> None:
    """Bind every workqueue no loop or runtime has claimed to ``loop`` (embedded) or to ``rt``,
    and lift the refusal a previous exit of running() on ``loop`` left (R20).

    A module-level queue then takes work from threads (a thread-pool endpoint, say) from the
    first call on. System queues follow the active runtime by themselves; in the embedded mode
    they bind here like the others.
    Context: on ``loop``, entering running().
    """
    with LOCK:
        for wq in list(_CLAIMED):
            owner = wq._runtime
            if owner is not None and owner is not rt and not owner.accepts():
                # Its runtime has ended: the queue is unclaimed again (not "used after the end
                # of the runtime it was allocated in": running() gave it to that runtime).
                wq._runtime = wq._rt = None
                wq._rt_pwqs = []
                wq._routed = False
                _CLAIMED.discard(wq)
        for wq in list(_ALL):
            if wq._status & _DESTROYED or wq._runtime is not None:
                continue
            pwq = wq._pwq
            if pwq is not None and pwq.pool.loop is loop:
                wq._status &= ~_ENDED  # running() again on the same loop: serve again
                continue
            if pwq is not None and not pwq.pool.loop.is_closed():
                continue  # bound to a loop that still exists; binding moves only from a closed one
            if rt is not None:
                if not wq._system:  # system queues follow ACTIVE.rt already
                    wq._runtime = rt
                    wq._routed = True
                    _CLAIMED.add(wq)
            elif not _pool_of(loop).dead:
                wq._rebind(loop)


# -- the embedded shutdown -----------------------------------------------------------------------


def _queues_of(pool: Pool) -> list[Workqueue]:
    """The workqueues bound to ``pool``, each once. Context: under LOCK."""
    seen: dict[int, Workqueue] = {}
    for pwq in pool.pwqs:
        seen.setdefault(id(pwq.wq), pwq.wq)
    return list(seen.values())


async def _flush_until_quiet(wqs: list[Workqueue]) -> None:
    while True:
        with LOCK:
            futs = [
                f for wq in wqs if wq._epochs.total and (f := wq._epochs.start_flush()) is not None
            ]
        if INTR.pending:
            replay()
        if not futs:
            return
        await asyncio.gather(*futs)


def _take_back(pool: Pool, wqs: list[Workqueue]) -> list[Unfinished]:
    """Cancel every instance still pending on ``pool``; the workers have ended.

    Context: the pool's loop, after ``_stop_pool``; ``pool.stopping`` is set, so nothing that a
    cancel activates starts.
    """
    with LOCK:
        unfinished: list[Unfinished] = [(w, p.wq, state) for w, p, state in pool.left]
        pool.left.clear()
        links = {id(p) for p in pool.pwqs}
        found: list[tuple[Work, str]] = []
        for dq in (pool.hi, pool.worklist, pool.bh):
            found += [(w, "queued") for w in dq if id(w._pwq) in links]
        for p in pool.pwqs:
            found += [(w, "queued") for w in p.inactive]
        for wq in wqs:
            found += [(d, "armed") for d in wq._armed.values() if id(d._pwq) in links]
    if INTR.pending:
        replay()
    for work, state in found:
        pwq = work._pwq
        if pwq is not None and cancel_work(work):
            unfinished.append((work, pwq.wq, state))
    return unfinished


async def _shutdown_embedded(loop: asyncio.AbstractEventLoop, deadline: float) -> list[Unfinished]:
    """Refuse outside queueing, flush until quiet within ``deadline`` s, cancel what is left.

    Context: a coroutine on ``loop``. Returns: what did not finish (logged by
    ``report_unfinished``: one WARNING per workqueue and state). Every queue bound to ``loop``
    refuses ``queue_*`` afterwards (R20), until running() is entered again or a new loop binds it.
    """
    with LOCK:
        pool = _POOLS.get(loop)
        if pool is None:
            return []
        wqs = _queues_of(pool)
        # R14's mark: only a queue's own running work may queue on it. Not on system queues while
        # a runtime is active: they route there, and its shutdown refuses outside callers itself
        # while letting any running work chain.
        marked = [wq for wq in wqs if not (wq._system and ACTIVE.rt is not None)]
        for wq in marked:
            wq._status += _DRAIN_UNIT
            _MARKS[id(wq)] = _MARKS.get(id(wq), 0) + 1
            wq._status |= _SHUTDOWN
    unfinished: list[Unfinished] = []
    try:
        try:
            async with asyncio.timeout(deadline):
                await _flush_until_quiet(wqs)
        except TimeoutError:
            pass
        await _stop_pool(pool)
        try:
            unfinished = _take_back(pool, wqs)
        finally:
            with LOCK:
                pool.stopping = False  # the loop may go on: the pool serves new work again
    finally:
        with LOCK:
            for wq in marked:
                wq._status -= _DRAIN_UNIT
                n = _MARKS.pop(id(wq)) - 1
                if n:
                    _MARKS[id(wq)] = n
                else:
                    # R20 without a gap: the end's refusal starts before the drain's stops, so
                    # an outside call between here and the end of running() raises too.
                    wq._status = (wq._status | _ENDED) & ~_SHUTDOWN
        if INTR.pending:
            replay()
    report_unfinished("shutdown", unfinished)
    return unfinished
