"""Test helpers (public as :mod:`aioworkqueue.testing`; the pytest plugin uses them from here).

* :class:`VirtualClockLoop`, :func:`run_virtual`: an asyncio loop whose clock is virtual (trio's
  MockClock in autojump mode): whenever the loop would sleep in ``select()`` waiting for a timer,
  time jumps straight to that timer. Delayed work fires in deadline order, at once, without
  sleeping. Real I/O and cross-thread wake-ups still work (the real selector is polled first).
* :class:`ManualClock`: the clock of the running virtual loop, to read and advance.
* :func:`idle`: wait until every pool is idle — nothing queued, running or armed.
* :class:`ErrorGuard`: collects the ERROR reports of the ``aioworkqueue`` logger (an exception
  in a work item that no handler of its own took, R16) so a test can fail on them.

This module is imported by the pytest plugin at collection time; it must stay private (the
package's namespace is its public API), hence the public alias module ``testing``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import selectors
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from ._lock import INTR, LOCK, replay
from ._pool import current_worker_work
from ._runtime import ACTIVE
from ._workqueue import _POOLS, Workqueue

__all__ = ("ErrorGuard", "ManualClock", "VirtualClockLoop", "idle", "run_virtual")

T = TypeVar("T")

_LOGGER = "aioworkqueue"


class _AutojumpSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None  # I (set right after construction)

    def select(self, timeout: float | None = None) -> list[Any]:
        events: list[Any] = super().select(0)
        if events or (timeout is not None and timeout <= 0):
            return events
        if timeout is None:
            blocked: list[Any] = super().select(None)
            return blocked
        assert self.loop is not None
        self.loop.advance(timeout)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock only moves when it would otherwise sleep (or by advance()).

    ``early`` makes it fire timers up to that many seconds before their deadline, as uvloop does,
    to prove that code re-checks deadlines (the library does, R8). The clock starts at 1000.0.

    Context: create and run in one thread, like any event loop.
    """

    def __init__(self, early: float = 0.0) -> None:
        selector = _AutojumpSelector()
        super().__init__(selector=selector)
        selector.loop = self
        self._vtime = 1000.0  # O (this loop's thread)
        self.early = early  # I
        #: O: how many times the clock moved.
        self.jumps = 0

    def time(self) -> float:
        """The virtual time. Returns: seconds."""
        return self._vtime

    def advance(self, seconds: float) -> None:
        """Move virtual time forward now; due timers fire at the loop's next step.

        Context: the loop's thread.
        """
        self._vtime += seconds
        self.jumps += 1

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """Schedule ``callback`` at ``when`` (up to ``early`` before it, but never at "now").

        Returns: the timer handle.
        """
        early_when = when - self.early
        if self.early and early_when > self._vtime:
            when = early_when
        return super().call_at(when, callback, *args, context=context)


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]], *, early: float = 0.0) -> T:
    """Run ``main()`` to completion on a fresh :class:`VirtualClockLoop` and close it.

    Context: synchronous code with no running loop (a plain test function).
    Returns: what ``main()`` returned.
    """
    with asyncio.Runner(loop_factory=lambda: VirtualClockLoop(early)) as runner:
        return runner.run(main())


class ManualClock:
    """The clock of the running :class:`VirtualClockLoop` (the ``aiowq_clock`` fixture).

    Context: use from coroutines on that loop.
    """

    __slots__ = ()

    @property
    def loop(self) -> VirtualClockLoop:
        """The running virtual loop. Raises: RuntimeError when the running loop is not one."""
        loop = asyncio.get_running_loop()
        if not isinstance(loop, VirtualClockLoop):
            raise RuntimeError(
                f"aioworkqueue ManualClock: the running loop is {type(loop).__name__}, not a "
                f"VirtualClockLoop (mark the test with @pytest.mark.aiowq_clock)"
            )
        return loop

    def time(self) -> float:
        """Returns: the virtual time, ``loop.time()``."""
        return self.loop.time()

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass: every timer due meanwhile fires, in deadline
        order, and what it queues may run; returns when the clock reads now + ``seconds``.

        Context: a coroutine on the virtual loop; never sleeps on the wall clock.
        """
        if seconds < 0:
            raise ValueError(f"ManualClock.advance: seconds must be >= 0, got {seconds!r}")
        await asyncio.sleep(seconds)


def _bound_queues() -> list[Workqueue]:
    """Every workqueue bound to a live embedded pool or to the active runtime."""
    with LOCK:
        pools = [pool for loop, pool in list(_POOLS.items()) if not loop.is_closed()]
        seen: dict[int, Workqueue] = {}
        for pool in pools:
            for pwq in pool.pwqs:
                seen.setdefault(id(pwq.wq), pwq.wq)
        rt = ACTIVE.rt
        if rt is not None:
            for wq in list(rt._wqs):
                seen.setdefault(id(wq), wq)
    if INTR.pending:
        replay()
    return list(seen.values())


def _describe(wqs: list[Workqueue]) -> str:
    parts = []
    for wq in wqs:
        s = wq.stats()
        parts.append(f"{wq.name!r} (in flight {s.in_flight}, armed {s.armed})")
    return ", ".join(parts)


async def idle(timeout: float | None = 30.0) -> None:  # noqa: ASYNC109 (wall clock, see below)
    """Return when every pool is idle: no workqueue has an item queued, running or armed.

    The queues looked at are those bound to an embedded pool of a loop that is still open, and
    those of the active :class:`~aioworkqueue.Runtime`; each counts as idle when its ``stats()``
    show ``in_flight == 0`` and ``armed == 0``. While some are in flight it waits on a flush of
    them; while only timers are armed it sleeps until the earliest is due (at once on a
    :class:`VirtualClockLoop`). Work queued meanwhile is waited for too.

    Context: a coroutine on any loop; not from a work item (it would wait for itself).
    Raises: TimeoutError naming the busy queues if they are not idle within ``timeout`` seconds
    of the wall clock (also on a virtual-clock loop; None: no limit); RuntimeError when called
    from a work item.
    """
    if current_worker_work() is not None:
        raise RuntimeError("aioworkqueue idle(): called from a work item, which is never idle")
    loop = asyncio.get_running_loop()
    waiter = asyncio.ensure_future(_wait_idle(loop))
    if timeout is None:
        await waiter
        return
    expired: asyncio.Future[None] = loop.create_future()
    timer = threading.Timer(timeout, loop.call_soon_threadsafe, (_set_done, expired))
    timer.daemon = True
    timer.start()
    try:
        await asyncio.wait((waiter, expired), return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not waiter.done():
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
    if waiter.cancelled():
        still = [wq for wq in _bound_queues() if _busy(wq)]
        raise TimeoutError(f"aioworkqueue idle(): not idle after {timeout} s: {_describe(still)}")
    waiter.result()


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _wait_idle(loop: asyncio.AbstractEventLoop) -> None:
    while True:
        # The look and the flush in one section: an item that ended in between (on a runtime
        # pool's thread) would leave nothing to flush and no timer to wait for.
        with LOCK:
            busy = [wq for wq in _bound_queues() if _busy(wq)]
            futs = [
                f for wq in busy if wq._epochs.total and (f := wq._epochs.start_flush()) is not None
            ]
            wait = 0.0 if futs or not busy else _until_next_timer(busy, loop)
        if INTR.pending:
            replay()
        if not busy:
            return
        if futs:
            await asyncio.gather(*futs)
        else:
            await asyncio.sleep(wait)


def _busy(wq: Workqueue) -> bool:
    s = wq.stats()
    return bool(s.in_flight or s.armed)


def _until_next_timer(wqs: list[Workqueue], loop: asyncio.AbstractEventLoop) -> float:
    """Seconds until the earliest armed timer of ``wqs`` is due. Context: under LOCK."""
    wait = 3600.0
    for wq in wqs:
        for dwork in wq._armed.values():
            tpool = dwork._tpool  # deadlines are on its timer clock
            assert tpool is not None  # set while ARMED
            if tpool.loop is loop:
                wait = min(wait, dwork._deadline - tpool.timers.clock())
            else:  # another loop's: poll it
                wait = min(wait, dwork._deadline - tpool.timers.clock(), 0.005)
    return max(wait, 0.0)


class ErrorGuard(logging.Handler):
    """Collect the ERROR records of the ``aioworkqueue`` logger.

    An exception in a work item that no exception handler of its own took is logged there at
    ERROR by the default handler (R16), as are a failing handler and work stranded on a closed
    loop. ``with ErrorGuard() as guard: ...`` installs it; :meth:`take` claims what was seen;
    :meth:`check` raises if anything is left unclaimed.

    Context: records may arrive from any thread.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self._records: list[logging.LogRecord] = []  # under _mutex: records come from any thread
        self._mutex = threading.Lock()  # I
        self._old_level: int | None = None  # T (the test's thread: install/uninstall)

    def emit(self, record: logging.LogRecord) -> None:
        """Keep ``record``. Context: any thread (logging calls it)."""
        with self._mutex:
            self._records.append(record)

    @property
    def records(self) -> list[logging.LogRecord]:
        """The unclaimed records so far (a copy)."""
        with self._mutex:
            return list(self._records)

    def take(self) -> list[logging.LogRecord]:
        """Claim the records so far: they no longer fail :meth:`check`.

        Returns: the records, oldest first.
        """
        with self._mutex:
            taken, self._records = self._records, []
        return taken

    def check(self) -> None:
        """Raise AssertionError listing every unclaimed record, with its traceback."""
        left = self.take()
        if left:
            fmt = logging.Formatter("%(name)s %(levelname)s: %(message)s")
            text = "\n".join(fmt.format(r) for r in left)
            raise AssertionError(
                f"aioworkqueue reported {len(left)} error(s) that the test did not claim "
                f"(an exception in a work item reaches the log when no handler takes it):\n{text}"
            )

    def install(self) -> None:
        """Attach to the ``aioworkqueue`` logger (and let ERROR records through it)."""
        logger = logging.getLogger(_LOGGER)
        if not logger.isEnabledFor(logging.ERROR):
            self._old_level = logger.level
            logger.setLevel(logging.ERROR)
        logger.addHandler(self)

    def uninstall(self) -> None:
        """Detach from the ``aioworkqueue`` logger."""
        logger = logging.getLogger(_LOGGER)
        logger.removeHandler(self)
        if self._old_level is not None:
            logger.setLevel(self._old_level)
            self._old_level = None

    def __enter__(self) -> Self:
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()
