"""What the lock-free pending bit (``_pending.PendingTable``) costs on the hot path, in one run.

Core v2 must beat ``asyncio.Queue`` + 4 workers by 1.3x on plain items. The bench's unlocked floor
(a deque and 4 parked workers, a plain flag for the pending bit) shows the headroom; this script
puts the exact, lock-free pending bit into that floor and measures what is left, side by side:

* ``asyncio.Queue + 4 workers``: the baseline;
* ``floor, plain flag``: ``if item.st: return False`` / ``item.st = 1``, a deque, 4 workers;
* ``floor, PendingTable methods``: the same floor, with ``PendingTable.queue`` and ``take`` for
  the pending bit: what Core v2's hot path pays for R1/R10 without a lock;
* ``floor, PendingTable inlined``: the protocol's common case written into the queue and the
  worker (the hint is the newest token and the item ran: a ``len``, a look at slot 1, an
  ``append``, a look at slot 2, a slot store; a take is an ``append`` and a look at slot 1),
  the rest through the methods.

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

from aioworkqueue._pending import _RUN, PendingTable

N_WORKERS = 4


class Item:
    __slots__ = ("_tok", "fn", "st")

    def __init__(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.fn = fn
        self.st = 0
        self._tok: Any = None


class _Floor:
    """A deque, parked workers, one waiter for the burst's end; ``mode`` picks the pending bit:
    ``flag`` (a plain attribute), ``table`` (``PendingTable`` methods) or ``inline`` (the same
    protocol written into the queue and the worker, as the core's hot path would be)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
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
        mode = self.mode
        if mode == "inline":
            # PendingTable._link's common case: the hint is the newest token, the item ran
            # (so it is neither pending nor disabled), and nothing was appended after its fate.
            t = item._tok
            if t is not None and len(t) == 2 and t[1] is _RUN:
                n = [item]
                t.append(n)
                if t[2] is n:
                    item._tok = n
                    self.dq.append(n)
                else:
                    n[0] = None
                    if not self.table.queue(item, self.dq):
                        return False
            elif not self.table.queue(item, self.dq):
                return False
        elif mode == "table":
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
        dq, loop, mode = self.dq, asyncio.get_running_loop(), self.mode
        take = self.table.take
        popleft = dq.popleft
        while True:
            if dq:
                if mode == "inline":
                    tok = popleft()
                    tok.append(_RUN)
                    if tok[1] is not _RUN:
                        continue  # stale: cancelled
                    item = tok[0]
                    tok[0] = None
                elif mode == "table":
                    item = take(popleft())
                    if item is None:
                        continue
                else:
                    item = popleft()
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

    async def flush(self) -> None:
        if self.left:
            self.done = asyncio.get_running_loop().create_future()
            await self.done


async def _plain() -> None:
    return None


async def _burst_floor(mode: str, n: int, rounds: int) -> float:
    f = _Floor(mode)
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
        "floor, plain flag": await _burst_floor("flag", n, rounds),
        "floor, PendingTable methods": await _burst_floor("table", n, rounds),
        "floor, PendingTable inlined": await _burst_floor("inline", n, rounds),
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
