"""A virtual-time event loop for deterministic timer tests (trio's MockClock, autojump mode).

``loop.time()`` is virtual. Whenever the loop would sleep in ``select()`` waiting for a timer,
time jumps straight to that timer instead; real I/O and cross-thread wake-ups still work, since
the real selector is polled first. ``early`` makes the loop fire timers up to that many seconds
before their deadline, as uvloop does, to prove the library re-checks deadlines (R8).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _AutojumpSelector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0)
        if events or (timeout is not None and timeout <= 0):
            return events
        if timeout is None:
            return super().select(None)
        assert self.loop is not None
        self.loop.advance(timeout)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock only moves when it would otherwise sleep (or by advance())."""

    def __init__(self, early: float = 0.0) -> None:
        selector = _AutojumpSelector()
        super().__init__(selector=selector)
        selector.loop = self
        self._vtime = 1000.0
        self.early = early
        self.jumps = 0

    def time(self) -> float:
        return self._vtime

    def advance(self, seconds: float) -> None:
        """Move virtual time forward."""
        self._vtime += seconds
        self.jumps += 1

    def call_at(self, when, callback, *args, context=None):  # type: ignore[no-untyped-def, override]
        # Fire up to ``early`` before the deadline, like uvloop's millisecond rounding; but never
        # at or before "now", so that time keeps moving.
        early_when = when - self.early
        if self.early and early_when > self._vtime:
            when = early_when
        return super().call_at(when, callback, *args, context=context)


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]], *, early: float = 0.0) -> T:
    """Run ``main()`` to completion on a fresh VirtualClockLoop and close it."""
    with asyncio.Runner(loop_factory=lambda: VirtualClockLoop(early)) as runner:
        return runner.run(main())
