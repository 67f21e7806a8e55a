"""A pool's timer heap: its armed items, the clock their deadlines are on, and its loop timer.

The heap holds ``(deadline, gen, dwork)`` entries. ``gen`` is unique over all arms: an entry whose
``gen`` is no longer the item's ``_tgen`` is garbage (the item was cancelled, re-armed or fired at
once), dropped when it reaches the top or when garbage exceeds half of the heap. So disarming is a
few stores from any thread, and only the loop thread ever touches the loop's ``TimerHandle``.
What arming and firing do with these fields is in ``_timer.py``; this object only owns them.

Owner tags (legend: docs/design.md §1): I set once; L under ``_lock.LOCK``; O the pool's loop
thread only.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._work import DelayedWork

__all__ = ("TimerHeap", "loop_clock")

_ceil = math.ceil


def loop_clock(loop: asyncio.AbstractEventLoop) -> tuple[Callable[[], float], bool]:
    """The clock that deadlines of timers on ``loop`` are on, and whether a deadline must be
    rounded up to the loop's next whole millisecond (see :class:`TimerHeap`). Context: any."""
    if type(loop).time is asyncio.BaseEventLoop.time:
        return time.monotonic, False
    if isinstance(getattr(loop, "_clock_resolution", None), float):
        return loop.time, False
    return time.monotonic, True


class TimerHeap:
    """The armed items of one pool and the one loop timer set for the earliest of them."""

    __slots__ = ("clock", "dead", "handle", "heap", "kick", "ms", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # The clock of deadlines (I, both): asyncio's loop.time() is time.monotonic() itself
        # (called directly, it is cheaper); another asyncio loop's own (a virtual clock); for
        # loops that do not declare a _clock_resolution (uvloop: its loop.time() is
        # time.monotonic() truncated to whole milliseconds) time.monotonic(), with deadlines
        # rounded up to the loop's next millisecond (ms), so the loop's timer can be set exactly.
        self.clock, self.ms = loop_clock(loop)
        self.heap: list[tuple[float, int, DelayedWork]] = []  # L
        self.dead = 0  # L: how many entries of heap are garbage
        self.handle: asyncio.TimerHandle | None = None  # O (and L): the loop timer
        self.when = float("inf")  # O (and L): the deadline handle is set for
        self.kick = False  # L: a call_soon_threadsafe(_timer._retime) is on its way

    def __repr__(self) -> str:
        return f"<TimerHeap entries={len(self.heap)} garbage={self.dead} when={self.when}>"

    def deadline(self, delay: float) -> float:
        """Returns: the deadline ``delay`` seconds from now on this heap's clock (never early on
        the loop's own clock). Context: any."""
        t = self.clock() + delay
        if self.ms:
            t = _ceil(t * 1000.0) / 1000.0
        return t

    def garbage(self) -> None:
        """One more entry turned into garbage; compact if garbage is over half. Context: LOCK."""
        n = self.dead = self.dead + 1
        if n > len(self.heap) >> 1:
            self.compact()

    def compact(self) -> None:
        """Drop every garbage entry. Context: under LOCK, any thread."""
        heap = self.heap
        heap[:] = [e for e in heap if e[2]._tgen == e[1]]
        heapq.heapify(heap)
        self.dead = 0

    def clear(self) -> None:
        """Forget every entry (their items were all taken back). Context: under LOCK."""
        self.heap.clear()
        self.dead = 0
