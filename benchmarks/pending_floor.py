"""What the lock-free pending bit (``_pending.PendingTable``) costs on the hot path, in one run.

Core v2 must beat ``asyncio.Queue`` + 4 workers by 1.3x on plain items. The bench's unlocked floor
(a deque and 4 parked workers, a plain flag for the pending bit) shows the headroom; this script
puts the exact, lock-free pending bit into that floor and measures what is left, side by side:

* ``asyncio.Queue + 4 workers``: the baseline;
* ``floor, plain flag``: ``if item.st: return False`` / ``item.st = 1``, a deque, 4 workers;
* ``floor, PendingTable``: the same floor, with ``PendingTable.queue`` and ``take`` (claim,
  check, pop) for the pending bit: what Core v2's hot path would pay for R1/R10 without a lock;
* ``floor, batch claim``: the candidate of docs/design.md §9, costed only (not yet a protocol the
  interleaving test has checked): the same queue step inlined, and one claim per batch of takes
  (a worker claims once, checks and pops every waiting entry, releases, then runs them).

Items are plain ``async def`` functions that never await, in bursts, each burst flushed.
Usage: ``python benchmarks/pending_floor.py [--items N] [--rounds R]``. Prints items/s and the
ratio to the baseline on each loop; no assertion (ratios move by 20-30 % between runs here).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from aioworkqueue._pending import Claimer, PendingTable

N_WORKERS = 4
_TAKES = object()  # the claims key of a batch of takes


class Item:
    __slots__ = ("fn", "st")

    def __init__(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.fn = fn
        self.st = 0


class _Floor:
    """A deque, parked workers, one waiter for the burst's end; ``exact`` picks the pending bit."""

    def __init__(self, exact: bool, batch: bool = False) -> None:
        self.exact = exact or batch
        self.batch = batch
        self.dq: deque[Any] = deque()
        self.idle: list[asyncio.Future[None]] = []
        self.left = 0
        self.done: asyncio.Future[None] | None = None
        self.table = PendingTable()

    async def start(self) -> list[asyncio.Task[None]]:
        tasks = [asyncio.create_task(self._worker()) for _ in range(N_WORKERS)]
        await asyncio.sleep(0)
        return tasks

    def queue(self, item: Item) -> bool:
        if self.batch:
            token = object()
            if self.table._pend.setdefault(item, token) is not token:
                return False
            self.dq.extend((item, token))
        elif self.exact:
            if not self.table.queue(item, self.dq):
                return False
        else:
            if item.st:
                return False
            item.st = 1
            self.dq.append(item)
        self.left += 1
        if self.idle:
            self.idle.pop().set_result(None)
        return True

    async def _worker(self) -> None:
        if self.batch:
            await self._batch_worker()
            return
        dq, loop, exact = self.dq, asyncio.get_running_loop(), self.exact
        take, claimer = self.table.take, Claimer()
        while True:
            if dq:
                if exact:
                    item = dq.popleft()
                    token = dq.popleft()
                    if not take(item, token, claimer):
                        continue  # stale: cancelled
                else:
                    item = dq.popleft()
                    item.st = 0
                await item.fn()
                self.left -= 1
                if not self.left:
                    self._burst_ended()
            else:
                await self._park(loop)

    def _burst_ended(self) -> None:
        # Once per burst, off the per-item path the floors are compared on.
        if self.done is not None:
            self.done.set_result(None)
            self.done = None

    async def _park(self, loop: asyncio.AbstractEventLoop) -> None:
        fut = loop.create_future()
        self.idle.append(fut)
        await fut

    async def _batch_worker(self) -> None:
        dq, loop = self.dq, asyncio.get_running_loop()
        pend, claims, claimer = self.table._pend, self.table._claims, Claimer()
        get, pop, popleft = pend.get, pend.pop, dq.popleft
        mine: list[Item] = []
        while True:
            if dq:
                # One claim for the whole batch of takes (a cancel would wait for the batch;
                # nothing cancels here, so it is never held by another).
                if claims.setdefault(_TAKES, claimer) is not claimer:
                    raise RuntimeError("pending_floor: the batch claim is held")
                try:
                    while dq and len(mine) < 256:
                        item = popleft()
                        token = popleft()
                        if get(item) is token:
                            pop(item)
                            mine.append(item)
                finally:
                    del claims[_TAKES]
                for item in mine:
                    await item.fn()
                self.left -= len(mine)
                mine.clear()
                if not self.left:
                    self._burst_ended()
            else:
                await self._park(loop)

    async def flush(self) -> None:
        if self.left:
            self.done = asyncio.get_running_loop().create_future()
            await self.done


async def _plain() -> None:
    return None


async def _burst_floor(exact: bool, n: int, rounds: int, batch: bool = False) -> float:
    f = _Floor(exact, batch)
    tasks = await f.start()
    items = [Item(_plain) for _ in range(n)]
    best = 0.0
    for _ in range(rounds + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        for it in items:
            f.queue(it)
        await f.flush()
        best = max(best, n / (time.perf_counter() - t0))
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return best


async def _burst_queue(n: int, rounds: int) -> float:
    q: asyncio.Queue[Item] = asyncio.Queue()

    async def worker() -> None:
        while True:
            item = await q.get()
            await item.fn()
            q.task_done()

    tasks = [asyncio.create_task(worker()) for _ in range(N_WORKERS)]
    items = [Item(_plain) for _ in range(n)]
    best = 0.0
    for _ in range(rounds + 1):
        t0 = time.perf_counter()
        for it in items:
            q.put_nowait(it)
        await q.join()
        best = max(best, n / (time.perf_counter() - t0))
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return best


async def _measure(n: int, rounds: int) -> dict[str, float]:
    return {
        "asyncio.Queue + 4 workers": await _burst_queue(n, rounds),
        "floor, plain flag": await _burst_floor(False, n, rounds),
        "floor, PendingTable (lock-free, exact)": await _burst_floor(True, n, rounds),
        "floor, batch claim (costed, not yet checked)": await _burst_floor(False, n, rounds, True),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    loops: list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]] = [
        ("asyncio", asyncio.new_event_loop)
    ]
    try:
        import uvloop

        loops.append(("uvloop", uvloop.new_event_loop))
    except ImportError:
        pass
    print(f"pending_floor: Python {platform.python_version()}, {sys.platform}, best of")
    print(f"  {args.rounds} bursts of {args.items:,} plain items; ratio = / asyncio.Queue + 4")
    for name, factory in loops:
        with asyncio.Runner(loop_factory=factory) as runner:
            res = runner.run(_measure(args.items, args.rounds))
        base = res["asyncio.Queue + 4 workers"]
        print(f"  {name}:")
        for label, v in res.items():
            print(f"    {label:46s} {v / 1e3:9.1f} k/s   {v / base:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
