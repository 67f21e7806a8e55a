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
* ``floor, inlined + max_active, flush colours, stats``: the inlined protocol plus the per-item
  accounting Core v2's pool loop must do: a max_active slot (R7), a flush colour per item with
  the burst's flush as a barrier entry on the inbox (R13), the completed count.
* ``floor, inlined + R3, R7, snapshots, worker stats``: the same contract with less per item
  (see ``_lean_worker``), and R3 non-reentrancy and ``current_work`` too.

Items are plain ``async def`` functions that never await, in bursts, each burst flushed.
Usage: ``python benchmarks/pending_floor.py [--items N] [--rounds R]``. Prints items/s and the
ratio to the baseline on each loop; no assertion (ratios move by 20-30 % between runs here).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from aioworkqueue._pending import _RUN, PendingTable

N_WORKERS = 4


class Item:
    __slots__ = ("_by", "_tok", "fn", "st")

    def __init__(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.fn = fn
        self.st = 0
        self._tok: Any = None
        self._by: Any = None  # the worker running it (lean: R3 and current_work)


class _Worker:
    __slots__ = ("current", "done")

    def __init__(self) -> None:
        self.current: Any = None  # the item it runs (current_work, and a barrier's snapshot)
        self.done = 0  # statistics, summed when read


def _queue_inline(table: PendingTable, dq: deque[Any], item: Item) -> bool:
    """``PendingTable.queue`` with its common case written out: the hint is the newest token,
    the item ran (so it is neither pending nor disabled), nothing was appended after its fate."""
    t = item._tok
    if t is not None and len(t) == 2 and t[1] is _RUN:
        n = [item]
        t.append(n)
        if t[2] is n:
            item._tok = n
            dq.append(n)
            return True
        n[0] = None
    return table.queue(item, dq)


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
        # acct: what the pool's loop owns in Core v2, all updated by the loop only.
        self.max_active = 256
        self.active = 0
        self.inactive: deque[Any] = deque()  # over max_active (never here: 4 workers)
        self.completed = 0  # statistics
        self.color = 0  # flush colours: items taken between two barriers share one
        self.inflight = [0]  # per colour: taken and not finished
        self.barriers: list[tuple[int, asyncio.Future[None]]] = []
        # lean: a barrier waits for the workers busy when it was taken, not for colours.
        self.workers: list[_Worker] = []
        self.snapshots: list[tuple[set[_Worker], asyncio.Future[None]]] = []

    async def start(self) -> list[asyncio.Task[None]]:
        tasks = [asyncio.create_task(self._worker()) for _ in range(N_WORKERS)]
        await asyncio.sleep(0)
        return tasks

    def queue(self, item: Item) -> bool:
        mode = self.mode
        if mode in ("inline", "acct", "lean"):
            if not _queue_inline(self.table, self.dq, item):
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
        if self.mode == "acct":
            await self._acct_worker()
            return
        if self.mode == "lean":
            await self._lean_worker()
            return
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

    async def _acct_worker(self) -> None:
        # The inlined take, plus the accounting the contract needs, per item: max_active (R7),
        # a flush colour (R13: a barrier on the inbox waits for every colour before it), the
        # completed count. The burst's end is a barrier, not the floors' ``left`` counter.
        dq, loop, inflight = self.dq, asyncio.get_running_loop(), self.inflight
        popleft, max_active = dq.popleft, self.max_active
        while True:
            if dq:
                tok = popleft()
                if type(tok) is not list:
                    self._barrier(tok)
                    continue
                tok.append(_RUN)
                if tok[1] is not _RUN:
                    continue  # stale: cancelled
                item = tok[0]
                tok[0] = None
                if self.active >= max_active:
                    self.inactive.append(item)  # (the floor never gets here)
                    continue
                self.active += 1
                c = self.color
                inflight[c] += 1
                await item.fn()
                inflight[c] -= 1
                self.active -= 1
                self.completed += 1
                if not inflight[c]:
                    self._colour_done()
            else:
                await self._park(loop)

    async def _lean_worker(self) -> None:
        # The same contract with less per item: R3 and current_work() by two slot stores (the
        # item's runner, the worker's current item), R7 by the active count, statistics in a
        # counter of the worker's own, and R13 by snapshots: a barrier taken from the inbox
        # waits for the workers busy at that moment (everything taken before it is running
        # there or done), so a finished item only checks whether any barrier waits.
        me = _Worker()
        self.workers.append(me)
        dq, loop = self.dq, asyncio.get_running_loop()
        popleft, max_active = dq.popleft, self.max_active
        while True:
            if dq:
                tok = popleft()
                if type(tok) is not list:
                    self._snapshot(tok)
                    continue
                tok.append(_RUN)
                if tok[1] is not _RUN:
                    continue  # stale: cancelled
                item = tok[0]
                tok[0] = None
                if item._by is not None or self.active >= max_active:
                    self.inactive.append(item)  # R3 or R7 (the floor never gets here)
                    continue
                self.active += 1
                item._by = me
                me.current = item
                await item.fn()
                item._by = None
                me.current = None
                self.active -= 1
                me.done += 1
                if self.snapshots:
                    self._worker_done(me)
            else:
                await self._park(loop)

    def _snapshot(self, fut: asyncio.Future[None]) -> None:
        busy = {w for w in self.workers if w.current is not None}
        if busy:
            self.snapshots.append((busy, fut))
        else:
            fut.set_result(None)

    def _worker_done(self, me: _Worker) -> None:
        for snap in list(self.snapshots):
            snap[0].discard(me)
            if not snap[0]:
                self.snapshots.remove(snap)
                snap[1].set_result(None)

    def _barrier(self, fut: asyncio.Future[None]) -> None:
        c = self.color
        self.color = c + 1
        self.inflight.append(0)
        self.barriers.append((c, fut))
        self._colour_done()

    def _colour_done(self) -> None:
        # Cold: once per colour. A barrier of colour c resolves when colours 0..c are empty.
        while self.barriers:
            c, fut = self.barriers[0]
            if any(self.inflight[: c + 1]):
                return
            self.barriers.pop(0)
            fut.set_result(None)

    async def flush(self) -> None:
        if self.mode in ("acct", "lean"):
            fut = asyncio.get_running_loop().create_future()
            self.dq.append(fut)
            if self.idle:
                self.idle.pop().set_result(None)
            await fut
            self.left = 0
            return
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
        "floor, inlined + max_active, flush colours, stats": await _burst_floor("acct", n, rounds),
        "floor, inlined + R3, R7, snapshots, worker stats": await _burst_floor("lean", n, rounds),
    }


# -- cross-thread: one producer thread, def items ------------------------------------------------


class _Cross:
    """The lock-free floor fed from another thread: the producer does the inlined queue and one
    ``deque.append``, and calls ``call_soon_threadsafe`` only when a worker sleeps (a flag it
    reads *after* its append, while a parking worker sets it *before* its last look at the
    inbox, so one of the two always sees the other: no lost wake-up)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.dq: deque[Any] = deque()
        self.idle: list[asyncio.Future[None]] = []
        self.sleeping = False
        self.table = PendingTable()

    def queue(self, item: Item) -> bool:
        if not _queue_inline(self.table, self.dq, item):
            return False
        if self.sleeping:
            self.sleeping = False
            self.loop.call_soon_threadsafe(self._kick)
        return True

    def _kick(self) -> None:
        idle, dq = self.idle, self.dq
        k = len(dq)
        while idle and k > 0:
            idle.pop().set_result(None)
            k -= 1

    async def worker(self) -> None:
        dq, loop = self.dq, self.loop
        popleft = dq.popleft
        while True:
            if dq:
                tok = popleft()
                tok.append(_RUN)
                if tok[1] is not _RUN:
                    continue
                item = tok[0]
                tok[0] = None
                item.fn()
            else:
                fut = loop.create_future()
                self.idle.append(fut)
                self.sleeping = True
                if dq:  # an append that came before the flag was set: its producer saw False
                    self.sleeping = False
                    self.idle.remove(fut)
                    continue
                await fut


async def _cross_burst(variant: str, n: int) -> float:
    loop = asyncio.get_running_loop()
    state: list[Any] = [n, loop.create_future()]  # items left, the future the last one sets

    def hit(*_: Any) -> None:
        state[0] -= 1
        if not state[0]:
            state[1].set_result(None)

    go = threading.Event()
    tasks: list[asyncio.Task[None]] = []
    if variant == "cst":
        cst = loop.call_soon_threadsafe

        def produce() -> None:
            go.wait()
            for _ in range(n):
                cst(hit)
    else:
        c = _Cross(loop)
        tasks = [asyncio.create_task(c.worker()) for _ in range(N_WORKERS)]
        await asyncio.sleep(0)
        items = [Item(hit) for _ in range(n)]  # type: ignore[arg-type]
        for it in items:  # each runs once first: then the fast path, as for a reused Work
            c.table.queue(it, c.dq)
        c.sleeping = False
        c._kick()
        await state[1]
        state[:] = [n, loop.create_future()]
        q = c.queue

        def produce() -> None:
            go.wait()
            for it in items:
                q(it)

    th = threading.Thread(target=produce, daemon=True)
    th.start()
    t0 = time.perf_counter()
    go.set()
    await asyncio.wait_for(state[1], 60)
    rate = n / (time.perf_counter() - t0)
    th.join()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rate


async def _cross(n: int, rounds: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, variant in (
        ("loop.call_soon_threadsafe, def callback", "cst"),
        ("floor, PendingTable inlined, def item", "floor"),
    ):
        out[label] = max([await _cross_burst(variant, n) for _ in range(rounds)])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cross", type=int, default=100_000, help="items of a cross-thread burst")
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
            print(f"    {label:52s} {v / 1e3:9.1f} k/s   {v / base:5.2f}x")
        if args.cross:
            with asyncio.Runner(loop_factory=factory) as runner:
                cross = runner.run(_cross(args.cross, args.rounds))
            base = cross["loop.call_soon_threadsafe, def callback"]
            print(f"    cross-thread, 1 producer, {args.cross:,} items (/ call_soon_threadsafe):")
            for label, v in cross.items():
                print(f"      {label:50s} {v / 1e3:9.1f} k/s   {v / base:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
