"""Floors: the least a work queue can do, measured next to the library in the same run.

A target that the library misses may be out of reach for any design with the library's
contract, or it may be this library's own cost. The floors tell which: each is the smallest
design that does the same job, written the same way (pure Python, on the same loop), with none of
the library's rules beyond a pending bit. The report puts each floor's ratio next to the target:
a target the floor itself misses is out of reach for that design; one the floor meets is not,
and the gap is the library's.

* :class:`LeanQueue`: a pending bit per item, one deque and K worker tasks that park on a future
  when it is empty, a counter for flush. Unlocked, it is the "lean deque-and-workers design" the
  targets were set against. Locked, it adds what the contract's first line costs: ``queue_work``
  is synchronous and callable from any thread, so the test-and-set of the pending bit and the
  hand-over to a worker are one section under a ``threading`` lock on each side (two per item:
  the queue, and the end of a run merged with the next take, as the library does), plus the two
  checks the contract asks of every call: the argument's type (bad input gets a clear error) and
  whether the caller interrupted its own thread's section (a signal handler must not block on
  the lock the interrupted code holds: an ``RLock``'s ``_is_owned()``, as in the library).
  No max_active, no flush epochs (R13), no non-reentrancy (R3), no replay of interrupt-context
  calls, no statistics.
* :class:`LeanTimers`: arm = one locked section that sets the pending bit and pushes
  (deadline, generation, item) on a heap; cancel = one locked section that clears the bit and
  bumps the generation (lazy deletion). No loop timer per item, as in the library. The same two
  checks per call.

Two more floors live with their scenarios: latency to start (``_latency.py``: this module's
locked queue, one parked worker) and timer lateness (``_timers.py``: the loop's own ``call_at``
for the deadline, rounded up to the loop's tick and set again if it fires early, so it never
fires early on either clock, R8).
"""

from __future__ import annotations

import asyncio
import heapq
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ("LeanItem", "LeanQueue", "LeanTimer", "LeanTimers")

_PENDING, _RUNNING = 1, 2
_ARMED = 4


def _nested(what: object) -> RuntimeError:
    return RuntimeError(f"the floor is not callable from interrupt context: {what!r}")


def _wrong(what: object) -> TypeError:
    return TypeError(f"the floor takes its own items, got {type(what).__name__}")


class LeanItem:
    """A work item of the floor: a function of no arguments (``def`` or ``async def``)."""

    __slots__ = ("fn", "st")

    def __init__(self, fn: Callable[[], Awaitable[None] | None]) -> None:
        self.fn = fn
        self.st = 0


class LeanQueue:
    """The floor of a work queue: see the module docstring. Context: ``start``/``flush`` on
    the loop; ``queue`` from the loop or (``locked``) from any thread."""

    def __init__(self, workers: int, *, locked: bool) -> None:
        self.k = workers
        self.locked = locked
        self.dq: deque[LeanItem] = deque()
        self.idle: list[asyncio.Future[None]] = []
        self.left = 0  # queued and not yet finished
        self.waiter: asyncio.Future[None] | None = None
        self.kick_armed = False
        self.tasks: list[asyncio.Task[None]] = []
        lock = threading.RLock()
        self._acq = lock.acquire
        self._rel = lock.release
        self._owned: Callable[[], bool] = lock._is_owned  # type: ignore[attr-defined]

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.tid = threading.get_ident()
        self.tasks = [asyncio.create_task(self._worker()) for _ in range(self.k)]
        await asyncio.sleep(0)  # let them park

    def queue(self, item: LeanItem) -> bool:
        """Queue ``item``; False if it is pending already."""
        if type(item) is not LeanItem:
            raise _wrong(item)
        locked = self.locked
        if locked:
            if self._owned():
                raise _nested(item)
            self._acq()
        try:
            if item.st & _PENDING:
                return False
            item.st |= _PENDING
            self.dq.append(item)
            self.left += 1
            if self.idle:
                self._wake()
            return True
        finally:
            if locked:
                self._rel()

    def _wake(self) -> None:
        if threading.get_ident() == self.tid:
            self.idle.pop().set_result(None)
        elif not self.kick_armed:
            self.kick_armed = True
            self.loop.call_soon_threadsafe(self._kick)

    def _kick(self) -> None:
        if self.locked:
            self._acq()
        try:
            self.kick_armed = False
            if self.dq and self.idle:
                self.idle.pop().set_result(None)
        finally:
            if self.locked:
                self._rel()

    async def flush(self) -> None:
        """Wait until every queued item has run."""
        if self.left:
            self.waiter = self.loop.create_future()
            await self.waiter

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _worker(self) -> None:
        locked, acq, rel = self.locked, self._acq, self._rel
        dq, idle, loop = self.dq, self.idle, self.loop
        item: LeanItem | None = None
        while True:
            if locked:
                acq()
            if item is not None:  # the end of the last run, in the section of the next take
                item.st = 0
                left = self.left = self.left - 1
                if not left and self.waiter is not None:
                    self.waiter.set_result(None)
                    self.waiter = None
            if dq:
                item = dq.popleft()
                item.st = _RUNNING  # the pending bit clears when the run starts
                if locked:
                    rel()
                r: Any = item.fn()
                if r is not None:
                    await r
            else:
                item = None
                fut = loop.create_future()
                idle.append(fut)
                if locked:
                    rel()
                await fut


class LeanTimer:
    """A delayed item of the floor."""

    __slots__ = ("gen", "st")

    def __init__(self) -> None:
        self.gen = 0
        self.st = 0


class LeanTimers:
    """The floor of arming and cancelling: one locked section each, a heap with lazy deletion.
    Context: any thread."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, LeanTimer]] = []
        self.dead = 0
        lock = threading.RLock()
        self._acq = lock.acquire
        self._rel = lock.release
        self._owned: Callable[[], bool] = lock._is_owned  # type: ignore[attr-defined]

    def arm(self, t: LeanTimer, delay: float) -> bool:
        if type(t) is not LeanTimer or type(delay) is not float:
            raise _wrong(t)
        if self._owned():
            raise _nested(t)
        self._acq()
        try:
            if t.st & _PENDING:
                return False
            t.st = _PENDING | _ARMED
            gen = t.gen = t.gen + 1
            heapq.heappush(self.heap, (time.monotonic() + delay, gen, t))
            return True
        finally:
            self._rel()

    def cancel(self, t: LeanTimer) -> bool:
        if type(t) is not LeanTimer:
            raise _wrong(t)
        if self._owned():
            raise _nested(t)
        self._acq()
        try:
            if not t.st & _ARMED:
                return False
            t.st = 0
            t.gen += 1
            self.dead += 1
            return True
        finally:
            self._rel()

    def clear(self) -> None:
        self.heap.clear()
        self.dead = 0
