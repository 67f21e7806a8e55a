"""A prototype of Core v2's lean pool (docs/design.md §9, step 4), measured against asyncio.Queue.

``pending_floor.py`` adds the contract's accounting to a floor one part at a time. This script
puts the step-4 design together as one small pool and measures what it costs. It has the lock-free
pending bit (``_pending.PendingTable``), a token inbox fed from any thread with a flag wake-up,
and R7 ``max_active`` with a FIFO of still-pending tokens. It has R3 non-reentrancy, with a
deferred token on the worker that runs the item. R13 flush is an inbox barrier with a snapshot of
what is still unfinished, R21 room uses shared ``itertools.count`` objects, and R16 errors are
caught and counted. Statistics are per worker. A cancel is the table's one step, and the loop
skips the stale entry. What it leaves out: timers, BH, CPU_INTENSIVE, freezing, the rescuer,
routing, tracing, shutdown and take-back.

It measures, on each loop, with today's core beside it in the same run: bursts of plain
``async def``, ``sleep(0)`` and plain ``def`` items and of fresh items (as ``wq.submit``)
against ``asyncio.Queue`` + 4 workers; the latency to start against ``loop.call_soon``; mixed
bursts on lean pools in threads against the same pool embedded (the runtime); and one producer
thread against ``call_soon_threadsafe``. Usage: ``python benchmarks/lean_pool.py [--items N]
[--rounds R] [--samples N] [--cross N]``. Prints rates and ratios; no assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import itertools
import platform
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from core_v2_floors import Probe, loops, sample_starts, set_done, start_loop_thread

from aioworkqueue._pending import _RUN, PendingTable

N_WORKERS = 4


class Full(Exception):
    """R21: the link's room is used up."""


class Item:
    """A work item as the lean pool sees one: its function and the fields the design names."""

    __slots__ = ("_by", "_pwq", "_tok", "asyn", "fn")

    def __init__(self, fn: Callable[[Item], Any]) -> None:
        self.fn = fn
        self.asyn = inspect.iscoroutinefunction(fn)  # set once, as Work's ASYNC_FN bit
        self._tok: Any = None  # A: the table's hint
        self._pwq: Link | None = None  # W: the link of the pending instance
        self._by: Worker | None = None  # O: the worker running it (R3)


class Link:
    """One workqueue on one pool. ``queued``/``refunded`` are shared counts (A), the rest is
    the pool loop's (O)."""

    def __init__(self, pool: LeanPool, max_active: int = 256, limit: int = 0) -> None:
        self.pool = pool
        self.max_active = max_active
        self.nr_active = 0  # O: started or deferred, not ended (R7)
        self.inactive: deque[list[Any]] = deque()  # O: still-pending tokens over max_active
        self.limit = limit  # R21: 0 is unbounded
        self.queued = itertools.count()  # A: next() is one C call
        self.refunded = itertools.count()  # A
        self.started = 0  # O
        self.barriers: list[Barrier] = []  # O: the snapshots that wait on this link

    def room_used(self) -> int:
        return _peek(self.queued) - _peek(self.refunded) - self.started


def _peek(counter: itertools.count[int]) -> int:
    """The value the next ``next(counter)`` returns, without taking it: ``repr`` is
    ``count(N)`` (its ``__reduce__`` says the same, but pickling itertools is deprecated)."""
    return int(repr(counter)[6:-1])


class Worker:
    __slots__ = ("current", "deferred", "dlink", "done", "failed", "link")

    def __init__(self) -> None:
        self.current: list[Any] | None = None  # O: the token of the run in progress
        self.link: Link | None = None  # O: its link
        self.deferred: list[Any] | None = None  # O: a token this worker takes next (R3, R7)
        self.dlink: Link | None = None  # O: the link it was parked for
        self.done = 0  # O: statistics, summed when read
        self.failed = 0


class Barrier:
    """A flush of one link: the tokens still unfinished when the loop popped it."""

    __slots__ = ("fut", "left", "link")

    def __init__(self, link: Link, fut: asyncio.Future[None]) -> None:
        self.link = link
        self.fut = fut
        self.left: set[int] | None = None  # ids of the tokens waited for, once popped


class LeanPool:
    """Context: ``queue`` and ``cancel`` from any thread; the rest on ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, n_workers: int = N_WORKERS) -> None:
        self.loop = loop
        self.inbox: deque[Any] = deque()
        self.idle: list[asyncio.Future[None]] = []
        self.sleeping = False
        self.table = PendingTable()
        self.workers = [Worker() for _ in range(n_workers)]
        self.tasks: list[asyncio.Task[None]] = []
        self.skipped = 0  # O: stale entries met (cancelled in flight)
        self.errors: list[BaseException] = []

    def start(self) -> None:
        self.tasks = [self.loop.create_task(self._worker(w)) for w in self.workers]

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- any thread ------------------------------------------------------------------------

    def queue(self, link: Link, item: Item) -> bool:
        """R1: True if a new instance is pending now. Raises Full at the bound (R21)."""
        if link.limit:
            if self.table.is_pending(item):
                return False  # R1 first: a pending item is not refused for room (a look only)
            next(link.queued)
            if link.room_used() > link.limit:
                next(link.refunded)
                raise Full(f"{item!r}: the link's {link.limit} places are taken")
        t = item._tok
        if t is not None and len(t) == 2 and t[1] is _RUN:  # ran before: the common case
            n = [item]
            t.append(n)
            if t[2] is not n:
                n[0] = None
                n = self.table.acquire(item)
            else:
                item._tok = n
        else:
            n = self.table.acquire(item)
        if n is None:
            if link.limit:
                next(link.refunded)
            return False
        item._pwq = link  # W: before the append makes the token visible
        self.inbox.append(n)
        if self.sleeping:  # some worker sleeps (in a burst, after the first few: none)
            self._wake_after_append()
        return True

    def submit(self, link: Link, fn: Callable[[Item], Any]) -> Item:
        """Queue a new item of ``fn`` (as ``wq.submit``). Nobody else can see the item yet, so
        its first instance needs no decision: it is born with its token (no table op)."""
        item = Item(fn)
        n = [item]
        item._tok = n
        item._pwq = link
        self.inbox.append(n)
        if self.sleeping:
            self._wake_after_append()
        return item

    def _on_loop(self) -> bool:
        return asyncio._get_running_loop() is self.loop

    def _wake_after_append(self) -> None:
        # On the loop's thread, a signal handler may land anywhere in here or in a worker's
        # park and wake a worker itself: each step below is one list operation, and each
        # allows for the other having gone first.
        if self._on_loop():
            idle = self.idle
            try:  # the loop's own list: wake one parked worker now
                idle.pop().set_result(None)
            except IndexError:
                pass  # none parked, or a handler that interrupted us took the last one
            if not idle:
                self.sleeping = False
        else:  # another thread: the flag, read after the append
            self.sleeping = False
            self.loop.call_soon_threadsafe(self._kick)

    def _park(self, fut: Any) -> bool:
        """A worker's park, up to its await. Returns: True if it should await ``fut``; False
        if entries came meanwhile and it should look again (``fut`` may have been completed
        by a waker meanwhile: it is dropped)."""
        idle = self.idle
        idle.append(fut)
        self.sleeping = True  # before the last look: a producer reads it after appending
        if self.inbox:
            self.sleeping = False
            try:
                idle.remove(fut)
            except ValueError:
                pass  # a waker (a handler on this thread) took it meanwhile
            return False
        return True

    def cancel(self, item: Item) -> bool:
        """R10: True if a pending instance was taken back (its entry is skipped where it sits)."""
        return self.table.cancel(item) is not None

    # -- the loop --------------------------------------------------------------------------

    def _kick(self) -> None:
        idle, k = self.idle, len(self.inbox)
        while idle and k > 0:
            try:
                idle.pop().set_result(None)
            except IndexError:
                break  # a handler took the last one
            k -= 1
        if idle:
            self.sleeping = True  # some still sleep: the next producer must kick again

    async def flush(self, link: Link) -> None:
        """R13: wait for what was queued on ``link`` before the call. Context: a coroutine on
        any loop: the barrier is one append, and its end is posted back to the caller's loop."""
        b = Barrier(link, asyncio.get_running_loop().create_future())
        self.inbox.append(b)
        if self.sleeping or self._on_loop():
            self._wake_after_append()
        await b.fut

    def _resolve(self, b: Barrier) -> None:
        fut = b.fut
        floop = fut.get_loop()
        if floop is self.loop:
            fut.set_result(None)
        else:
            floop.call_soon_threadsafe(set_done, fut)

    def _snapshot(self, b: Barrier) -> None:
        link = b.link
        left = {id(t) for t in link.inactive}
        for w in self.workers:
            if w.current is not None and w.link is link:
                left.add(id(w.current))
            if w.deferred is not None and w.dlink is link:
                left.add(id(w.deferred))
        if left:
            b.left = left
            link.barriers.append(b)
        else:
            self._resolve(b)

    def _settled(self, link: Link, tok: list[Any]) -> None:
        # Cold: only while a barrier waits on the link.
        k = id(tok)
        for b in list(link.barriers):
            left = b.left
            assert left is not None
            left.discard(k)
            if not left:
                link.barriers.remove(b)
                self._resolve(b)

    async def _worker(self, me: Worker) -> None:
        inbox, loop = self.inbox, self.loop
        popleft = inbox.popleft
        while True:
            parked: Link | None = None  # the link a token taken from a parking place waited on
            if me.deferred is not None:  # R3 or R7: a token parked for this worker
                tok, parked = me.deferred, me.dlink
                me.deferred = me.dlink = None
            elif inbox:
                tok = popleft()
                if type(tok) is not list:
                    self._snapshot(tok)
                    continue
            else:
                fut = loop.create_future()
                if self._park(fut):
                    await fut
                continue
            item = tok[0]
            if item is None or len(tok) != 1:
                self._skip(me, tok, parked)  # cancelled in flight, or where it was parked
                continue
            link = item._pwq  # W wrote it before the append
            by = item._by
            if by is not None:  # R3: it runs on that worker, which takes it next
                by.deferred, by.dlink = tok, link
                continue
            if link.nr_active >= link.max_active:  # R7: wait, still pending, in FIFO order
                link.inactive.append(tok)
                continue
            tok.append(_RUN)  # R2: the pending bit clears here
            if tok[1] is not _RUN:
                self._skip(me, tok, parked)  # a cancel won just now
                continue
            tok[0] = None
            link.nr_active += 1
            link.started += 1  # R21: its place frees
            item._by = me
            me.current, me.link = tok, link
            try:
                if item.asyn:
                    await item.fn(item)
                else:
                    item.fn(item)  # a plain function runs inline on the loop (R17)
            except Exception as exc:  # R16: never reaches the producer, never stops a worker
                me.failed += 1
                self.errors.append(exc)
            item._by = None
            me.current = me.link = None
            me.done += 1
            link.nr_active -= 1
            if link.inactive:
                _hand_on(me, link)
            if link.barriers:
                self._settled(link, tok)

    def _skip(self, me: Worker, tok: list[Any], parked: Link | None) -> None:
        self.skipped += 1
        if parked is not None:
            if parked.barriers:
                self._settled(parked, tok)  # a barrier may have counted it where it was parked
            if parked.inactive:
                _hand_on(me, parked)


def _hand_on(me: Worker, link: Link) -> None:
    """A slot of ``link`` is free: the first waiting token takes it, on ``me`` (R7, FIFO). An
    R3 token parked on ``me`` goes first; the waiting one then waits for the next end."""
    if link.nr_active < link.max_active and me.deferred is None:
        me.deferred, me.dlink = link.inactive.popleft(), link


async def _plain(item: Item) -> None:
    return None


async def _sleep0(item: Item) -> None:
    await asyncio.sleep(0)


def _def(item: Item) -> None:
    return None


_FNS: dict[str, Callable[[Item], Any]] = {"plain": _plain, "sleep0": _sleep0, "def": _def}
# (label, item function, a fresh item per queue)
KINDS = (
    ("reused items, plain async def", "plain", False),
    ("reused items, sleep0", "sleep0", False),
    ("reused items, plain def", "def", False),
    ("fresh item per queue (as wq.submit)", "plain", True),
)


async def _burst_lean(n: int, rounds: int, kind: str, fresh: bool) -> float:
    pool = LeanPool(asyncio.get_running_loop())
    pool.start()
    await asyncio.sleep(0)
    link = Link(pool)
    fn = _FNS[kind]
    items = [] if fresh else [Item(fn) for _ in range(n)]
    best = 0.0
    queue = pool.queue
    for _ in range(rounds + 1):
        t0 = time.perf_counter()
        if fresh:
            submit = pool.submit
            for _ in range(n):
                submit(link, fn)
        else:
            for it in items:
                queue(link, it)
        await pool.flush(link)
        best = max(best, n / (time.perf_counter() - t0))
    await pool.close()
    return best


async def _burst_queue(n: int, rounds: int, kind: str, fresh: bool) -> float:
    q: asyncio.Queue[Item] = asyncio.Queue()

    async def worker() -> None:
        while True:
            item = await q.get()
            if item.asyn:
                await item.fn(item)
            else:
                item.fn(item)
            q.task_done()

    tasks = [asyncio.create_task(worker()) for _ in range(N_WORKERS)]
    fn = _FNS[kind]
    items = [Item(fn) for _ in range(n)]
    best = 0.0
    for _ in range(rounds + 1):
        t0 = time.perf_counter()
        if fresh:
            for _ in range(n):
                q.put_nowait(Item(fn))
        else:
            for it in items:
                q.put_nowait(it)
        await q.join()
        best = max(best, n / (time.perf_counter() - t0))
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return best


async def _burst_core(n: int, rounds: int, kind: str, fresh: bool) -> float:
    import aioworkqueue as aw

    items = [aw.Work(_FNS[kind]) for _ in range(n)]  # each function takes its item and ignores it
    best = 0.0
    async with aw.alloc_workqueue("lean-pool-baseline") as wq:
        queue, submit = aw.queue_work, wq.submit
        for _ in range(rounds + 1):
            t0 = time.perf_counter()
            if fresh:
                for _ in range(n):
                    submit(_plain_call)
            else:
                for w in items:
                    queue(wq, w)
            await aw.flush_workqueue(wq)
            best = max(best, n / (time.perf_counter() - t0))
    return best


async def _plain_call() -> None:
    return None


async def _measure(n: int, rounds: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for label, kind, fresh in KINDS:
        out[label] = {
            "asyncio.Queue + 4 workers": await _burst_queue(n, rounds, kind, fresh),
            "lean pool prototype": await _burst_lean(n, rounds, kind, fresh),
            "today's core": await _burst_core(n, rounds, kind, fresh),
        }
    return out


async def cross_thread(n: int, variant: str) -> float:
    """Items/s of a burst of ``n`` plain ``def`` items queued by one other thread, run on this
    loop: ``lean`` (the prototype), ``core`` (today's ``queue_work``) or ``cst``
    (``call_soon_threadsafe`` per item)."""
    loop = asyncio.get_running_loop()
    left = [n]
    done: asyncio.Future[None] = loop.create_future()

    def hit(*_: Any) -> None:
        left[0] -= 1
        if not left[0]:
            done.set_result(None)

    go = threading.Event()
    close: Callable[[], Coroutine[Any, Any, None]] | None = None
    if variant == "cst":
        cst = loop.call_soon_threadsafe

        def produce() -> None:
            go.wait()
            for _ in range(n):
                cst(hit)
    elif variant == "lean":
        pool = LeanPool(loop)
        pool.start()
        await asyncio.sleep(0)
        link = Link(pool)
        items = [Item(hit) for _ in range(n)]
        q = pool.queue

        def produce() -> None:
            go.wait()
            for it in items:
                q(link, it)

        close = pool.close
    else:
        import aioworkqueue as aw

        wq = aw.alloc_workqueue("lean-pool-cross")
        works = [aw.Work(hit) for _ in range(n)]
        aw.queue_work(wq, aw.Work(hit))  # bind it, start a worker
        left[0] += 1
        await aw.flush_workqueue(wq)
        qw = aw.queue_work

        def produce() -> None:
            go.wait()
            for w in works:
                qw(wq, w)

        async def close_wq() -> None:
            await aw.destroy_workqueue(wq)

        close = close_wq
    th = threading.Thread(target=produce, daemon=True)
    th.start()
    t0 = time.perf_counter()
    go.set()
    await asyncio.wait_for(done, 60)
    rate = n / (time.perf_counter() - t0)
    th.join()
    if close is not None:
        await close()
    return rate


def start_pool_thread(
    factory: Callable[[], asyncio.AbstractEventLoop],
) -> tuple[LeanPool, threading.Thread, Callable[[], None]]:
    """A lean pool on a new loop in its own thread, as a runtime's per-CPU pool
    (``core_v2_floors.start_loop_thread``)."""
    return start_loop_thread(factory, LeanPool)


async def runtime_bursts(
    factory: Callable[[], asyncio.AbstractEventLoop], cpus: int, n: int, rounds: int
) -> float:
    """Items/s of mixed bursts (half plain, half sleep0) queued from this loop and flushed:
    ``cpus`` 0 runs them here (embedded), else on that many lean pools in threads."""
    threads: list[tuple[threading.Thread, Callable[[], None]]] = []
    if cpus == 0:
        pool = LeanPool(asyncio.get_running_loop())
        pool.start()
        await asyncio.sleep(0)
        pools = [pool]
    else:
        pools = []
        for _ in range(cpus):
            p, th, stop = start_pool_thread(factory)
            pools.append(p)
            threads.append((th, stop))
    links = [Link(p) for p in pools]
    items = [Item(_plain if i % 2 == 0 else _sleep0) for i in range(n)]
    k = len(pools)
    times: list[float] = []
    try:
        for rnd in range(rounds + 1):
            t0 = time.perf_counter()
            for i, it in enumerate(items):
                link = links[i % k]
                link.pool.queue(link, it)
            for link in links:
                await link.pool.flush(link)
            if rnd:
                times.append(time.perf_counter() - t0)
    finally:
        if cpus == 0:
            await pools[0].close()
        for th, stop in threads:
            stop()
            th.join(10)
    return n / statistics.median(times)


async def _runtime(
    factory: Callable[[], asyncio.AbstractEventLoop], n: int, rounds: int
) -> dict[str, float]:
    return {
        "embedded (host loop)": await runtime_bursts(factory, 0, n, rounds),
        "1 pool thread": await runtime_bursts(factory, 1, n, rounds),
        "2 pool threads": await runtime_bursts(factory, 2, n, rounds),
    }


async def latency(samples: int) -> dict[str, float]:
    """Median microseconds from the call to the start of an ``async def`` item on an idle loop:
    ``loop.call_soon`` (the baseline), the lean pool (a parked worker woken through its future)
    and today's core, sampled in turn (``core_v2_floors.sample_starts``)."""
    import aioworkqueue as aw

    loop = asyncio.get_running_loop()
    probe = Probe()
    pool = LeanPool(loop)
    pool.start()
    link = Link(pool)
    item = Item(probe.item)
    try:
        async with aw.alloc_workqueue("lean-pool-latency") as wq:
            work = aw.Work(probe.item)
            aw.queue_work(wq, aw.Work(lambda _w: None))  # bind it, start a worker
            await aw.flush_workqueue(wq)
            out = await sample_starts(
                probe,
                {
                    "loop.call_soon": lambda: loop.call_soon(probe.hit),
                    "lean pool prototype": lambda: pool.queue(link, item),
                    "today's core": lambda: aw.queue_work(wq, work),
                },
                samples,
            )
    finally:
        await pool.close()
    return {k: sorted(v)[len(v) // 2] for k, v in out.items()}


async def _cross(n: int, rounds: int) -> dict[str, float]:
    return {
        "loop.call_soon_threadsafe": max([await cross_thread(n, "cst") for _ in range(rounds)]),
        "lean pool prototype": max([await cross_thread(n, "lean") for _ in range(rounds)]),
        "today's core": max([await cross_thread(n, "core") for _ in range(rounds)]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cross", type=int, default=30_000, help="items of a cross-thread burst")
    ap.add_argument("--samples", type=int, default=2000, help="latency samples per variant")
    args = ap.parse_args(argv)
    print(f"lean_pool: Python {platform.python_version()}, best of {args.rounds} bursts of")
    print(f"  {args.items:,} items, each flushed; ratio = / asyncio.Queue + 4")
    for name, factory in loops():
        with asyncio.Runner(loop_factory=factory) as runner:
            res = runner.run(_measure(args.items, args.rounds))
            cross = runner.run(_cross(args.cross, 3)) if args.cross else {}
        print(f"  {name}:")
        for group, rows in res.items():
            base = rows["asyncio.Queue + 4 workers"]
            print(f"    {group}:")
            for label, v in rows.items():
                print(f"      {label:28s} {v / 1e3:9.1f} k/s   {v / base:5.2f}x")
        with asyncio.Runner(loop_factory=factory) as runner:
            lat = runner.run(latency(args.samples))
        base = lat["loop.call_soon"]
        print("    latency to start on an idle loop, median (ratio = / call_soon):")
        for label, v in lat.items():
            print(f"      {label:28s} {v:9.2f} us    {v / base:5.2f}x")
        with asyncio.Runner(loop_factory=factory) as runner:
            rt = runner.run(_runtime(factory, args.items, args.rounds))
        base = rt["embedded (host loop)"]
        print("    runtime, mixed items queued from the host (ratio = / embedded):")
        for label, v in rt.items():
            print(f"      {label:28s} {v / 1e3:9.1f} k/s   {v / base:5.2f}x")
        if cross:
            base = cross["loop.call_soon_threadsafe"]
            print(
                f"    cross-thread, 1 producer, {args.cross:,} def items (/ call_soon_threadsafe):"
            )
            for label, v in cross.items():
                print(f"      {label:28s} {v / 1e3:9.1f} k/s   {v / base:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
