"""The floors of Core v2's latency and per-CPU runtime targets, with the lock-free pending bit.

``pending_floor.py`` costs the throughput targets. This script costs the two targets where the
lock is expected to cost most, each against the alternative the target names, in one run:

* **latency**, ``queue_work`` to the start of an ``async def`` item on an idle loop, median and
  p99, against ``loop.call_soon``. The floor is the inlined pending bit (``_queue_inline``), a
  deque and one parked worker task woken through its future: the least a design can do whose
  items run in a worker task (so ``current_task()`` and ``asyncio.timeout()`` work in them).
  ``loop.create_task`` per item is shown too.
* **runtime**, mixed items (half plain, half await ``sleep(0)`` once), bursts queued from the
  host loop and waited for, as ``aioworkqueue bench``'s runtime scenario: the floor embedded
  (4 workers on the host loop) against 1 and 2 pools, each an event loop in its own thread with
  4 workers, fed without a lock: the pending bit, one ``deque.append`` and a
  ``call_soon_threadsafe`` only when the pool's workers sleep (the flag protocol of
  ``pending_floor._Cross``). On the host's own loop a producer wakes a parked worker itself, one
  per entry while any sleep, so that items which await run side by side there too. Each pool
  reports its share of the burst back with one ``call_soon_threadsafe``.

Usage: ``python benchmarks/core_v2_floors.py [--samples N] [--burst N] [--rounds R]``. Prints
the figures and ratios; no assertion (ratios move by 20-30 % between runs here).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pending_floor import Item, _queue_inline

from aioworkqueue._pending import _RUN, PendingTable

N_WORKERS = 4
_ns = time.perf_counter_ns
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class Pool:
    """A deque fed without a lock, ``N_WORKERS`` worker tasks on ``loop``; ``queue`` from any
    thread (the host's loop included). ``share``/``done``/``fut``: the part of a burst this pool
    runs and the host's future it completes when that part has run."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.host = host
        self.dq: deque[Any] = deque()
        self.idle: list[asyncio.Future[None]] = []
        self.sleeping = False
        self.table = PendingTable()
        self.share = 0
        self.done = 0
        self.fut: asyncio.Future[None] | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Context: on ``loop``."""
        self.tasks = [self.loop.create_task(self.worker()) for _ in range(N_WORKERS)]

    def queue(self, item: Item) -> bool:
        if not _queue_inline(self.table, self.dq, item):
            return False
        if self.sleeping:
            if self.loop is self.host:  # the producer is on this loop: wake one worker now
                idle = self.idle
                if idle:
                    idle.pop().set_result(None)
                self.sleeping = bool(idle)
            else:
                self.sleeping = False
                self.loop.call_soon_threadsafe(self._kick)
        return True

    def _kick(self) -> None:
        idle, k = self.idle, len(self.dq)
        while idle and k > 0:
            idle.pop().set_result(None)
            k -= 1
        if idle:
            self.sleeping = True  # some still sleep: the next producer must kick again

    def _reported(self) -> None:
        fut = self.fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def worker(self) -> None:
        dq, loop = self.dq, self.loop
        popleft = dq.popleft
        while True:
            if dq:
                tok = popleft()
                tok.append(_RUN)
                if tok[1] is not _RUN:
                    continue  # stale: cancelled
                item = tok[0]
                tok[0] = None
                await item.fn()
                self.done += 1
                if self.done == self.share:
                    if loop is self.host:
                        self._reported()
                    else:
                        self.host.call_soon_threadsafe(self._reported)
            else:
                fut = loop.create_future()
                self.idle.append(fut)
                self.sleeping = True  # before the last look: a producer reads it after its append
                if dq:
                    self.sleeping = False
                    self.idle.remove(fut)
                    continue
                await fut

    async def close(self) -> None:
        """Context: on ``loop``."""
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def set_done(fut: asyncio.Future[None]) -> None:
    """Complete ``fut`` unless it is done. Context: its loop (as a ``call_soon_threadsafe``
    callback from elsewhere)."""
    if not fut.done():
        fut.set_result(None)


def start_loop_thread(
    factory: LoopFactory, make: Callable[[asyncio.AbstractEventLoop], Any]
) -> tuple[Any, threading.Thread, Callable[[], None]]:
    """A pool ``make(loop)`` on a new loop in its own thread, as a runtime's per-CPU pool: its
    ``start()`` runs there, and ``close()`` when it is stopped. Returns once its workers are
    parked: the pool, its thread, and a callable (any thread) that stops it."""
    ready = threading.Event()
    box: list[Any] = []

    def run() -> None:
        loop = factory()

        async def main() -> None:
            pool = make(loop)
            pool.start()
            stop = loop.create_future()
            box[:] = [pool, stop]
            await asyncio.sleep(0)
            ready.set()
            await stop
            await pool.close()

        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    th = threading.Thread(target=run, name="floor-pool", daemon=True)
    th.start()
    if not ready.wait(10):
        raise RuntimeError("a pool thread did not start")
    pool, stop = box
    return pool, th, lambda: pool.loop.call_soon_threadsafe(set_done, stop)


async def _plain() -> None:
    return None


async def _sleep0() -> None:
    await asyncio.sleep(0)


async def run_bursts(
    factory: LoopFactory, cpus: int, items: list[Item], rounds: int
) -> tuple[float, list[Pool]]:
    """Items/s (median of ``rounds`` bursts after a warm-up): ``cpus`` 0 is embedded, else that
    many pools in threads. Returns the rate and the pools (stopped by then)."""
    host = asyncio.get_running_loop()
    threads: list[tuple[threading.Thread, Callable[[], None]]] = []
    if cpus == 0:
        pool = Pool(host, host)
        pool.start()
        await asyncio.sleep(0)
        pools = [pool]
    else:
        pools = []
        for _ in range(cpus):
            p, th, stop = start_loop_thread(factory, lambda loop: Pool(loop, host))
            pools.append(p)
            threads.append((th, stop))
    k = len(pools)
    times: list[float] = []
    try:
        for rnd in range(rounds + 1):
            futs = []
            for i, p in enumerate(pools):
                p.done = 0
                p.share = len(range(i, len(items), k))
                p.fut = host.create_future()
                futs.append(p.fut)
            t0 = time.perf_counter()
            for i, it in enumerate(items):
                if not pools[i % k].queue(it):
                    raise RuntimeError("an item of the burst was still pending")
            for f in futs:
                await asyncio.wait_for(f, 60)
            if rnd:
                times.append(time.perf_counter() - t0)
    finally:
        if cpus == 0:
            await pools[0].close()
        for th, stop in threads:
            stop()
            th.join(10)
    return len(items) / statistics.median(times), pools


def mixed_items(n: int) -> list[Item]:
    return [Item(_plain if i % 2 == 0 else _sleep0) for i in range(n)]


async def _runtime(factory: LoopFactory, burst: int, rounds: int) -> dict[str, float]:
    items = mixed_items(burst)
    out: dict[str, float] = {}
    for label, cpus in (
        ("embedded floor (host loop)", 0),
        ("1 pool thread", 1),
        ("2 pool threads", 2),
    ):
        out[label] = (await run_bursts(factory, cpus, items, rounds))[0]
    return out


class Probe:
    """What a latency sample starts: ``hit`` (a callback) or ``item`` (a coroutine function of
    any arguments) stamps the clock and completes the sample's future."""

    def __init__(self) -> None:
        self.stamp = 0
        self.done: asyncio.Future[None] | None = None

    def hit(self, *_: Any) -> None:
        self.stamp = _ns()
        if self.done is not None:
            self.done.set_result(None)

    async def item(self, *_: Any) -> None:
        self.hit()


async def sample_starts(
    probe: Probe, starts: dict[str, Callable[[], Any]], samples: int
) -> dict[str, list[float]]:
    """Microseconds from each ``start()`` to the probe's stamp on an idle loop, ``samples``
    each after 20 warm-ups, the variants in turn (each waits for the loop to go idle first)."""
    loop = asyncio.get_running_loop()
    out: dict[str, list[float]] = {k: [] for k in starts}
    for i in range(samples + 20):
        for key, start in starts.items():
            for _ in range(2):
                await asyncio.sleep(0)  # the workers park again
            probe.done = loop.create_future()
            t0 = _ns()
            res = start()
            await probe.done
            if isinstance(res, asyncio.Task):
                await res
            if i >= 20:
                out[key].append((probe.stamp - t0) / 1e3)
    return out


async def _latency(samples: int) -> dict[str, list[float]]:
    loop = asyncio.get_running_loop()
    probe = Probe()
    pool = Pool(loop, loop)
    pool.start()
    item = Item(probe.item)
    try:
        return await sample_starts(
            probe,
            {
                "loop.call_soon": lambda: loop.call_soon(probe.hit),
                "loop.create_task": lambda: loop.create_task(probe.item()),
                "floor": lambda: pool.queue(item),
            },
            samples,
        )
    finally:
        await pool.close()


def loops() -> list[tuple[str, LoopFactory]]:
    loops: list[tuple[str, LoopFactory]] = [("asyncio", asyncio.new_event_loop)]
    try:
        import uvloop

        loops.append(("uvloop", uvloop.new_event_loop))
    except ImportError:
        pass
    return loops


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=2000, help="latency samples per variant")
    ap.add_argument("--burst", type=int, default=3000, help="items of a runtime burst")
    ap.add_argument("--rounds", type=int, default=7, help="runtime bursts (median)")
    args = ap.parse_args(argv)
    print(f"core_v2_floors: Python {platform.python_version()}, {sys.platform}")
    for name, factory in loops():
        print(f"  {name}:")
        with asyncio.Runner(loop_factory=factory) as runner:
            lat = runner.run(_latency(args.samples))
        print(f"    latency to start on an idle loop, {args.samples:,} samples (/ call_soon):")
        for q, qname in ((0.5, "median"), (0.99, "p99")):
            base = _quantile(lat["loop.call_soon"], q)
            for label, xs in lat.items():
                v = _quantile(xs, q)
                print(f"      {qname:6s} {label:44s} {v:6.2f} us   {v / base:5.2f}x")
        with asyncio.Runner(loop_factory=factory) as runner:
            rt = runner.run(_runtime(factory, args.burst, args.rounds))
        print(f"    runtime, mixed items, bursts of {args.burst:,} from the host (/ embedded):")
        base = rt["embedded floor (host loop)"]
        for label, v in rt.items():
            print(f"      {label:51s} {v / 1e3:7.1f} k/s   {v / base:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
