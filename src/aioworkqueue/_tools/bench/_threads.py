"""Cross-thread submission: producer threads hand items to one event loop.

P producer threads (P = 1 and 4) wait on one event; when it is set, each queues its share of
``sizes.threads`` items as fast as it can. The clock runs from setting the event to the moment
the last item has run on the loop (the last item completes a future), so this is end-to-end
items/s, hand-off and execution included. Higher is better.

* aioworkqueue: ``queue_work`` from the threads onto a workqueue bound to the loop (pre-allocated
  items, one set per thread), with a plain ``def`` work function and with an ``async def`` one;
* the baseline: ``loop.call_soon_threadsafe(callback)`` per item, a plain ``def`` callback;
* the floor (``_floor.py``): the lean queue with a lock and 4 workers, ``def`` items, woken by
  one coalesced ``call_soon_threadsafe`` per burst as the library's are.

The ``def`` rows compare like with like (call_soon_threadsafe cannot run a coroutine function);
the ``async def`` row is what the rest of the suite measures.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import aioworkqueue as aw

from ._common import BenchError, Counter, Ctx, best, median
from ._floor import LeanItem, LeanQueue
from ._model import Cell

__all__ = ("BASELINE", "LABELS", "PRODUCERS", "run")

LABELS = {
    "aw_def": "aioworkqueue queue_work, def item",
    "aw_async": "aioworkqueue queue_work, async def item",
    "cst": "loop.call_soon_threadsafe, def callback",
    "floor": "floor: deque + 4 workers + lock, def item",
}
BASELINE = LABELS["cst"]
PRODUCERS = (1, 4)
_perf = time.perf_counter


class _Burst:
    """Counts the items of one burst and completes ``done`` when the last one has run."""

    def __init__(self, total: int) -> None:
        self.c = Counter()
        self.total = total
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def hit(self) -> None:
        c = self.c
        c.n += 1
        if c.n == self.total:
            self.done.set_result(None)


async def _burst(
    variant: str, producers: int, n: int, wq: aw.Workqueue, *, lean: LeanQueue, bound: float
) -> float:
    loop = asyncio.get_running_loop()
    per = n // producers
    b = _Burst(per * producers)
    go = threading.Event()
    errors: list[BaseException] = []
    jobs: list[Callable[[], None]] = []
    if variant == "cst":
        cb = b.hit
        cst = loop.call_soon_threadsafe

        def make(_k: int) -> Callable[[], None]:
            def produce() -> None:
                for _ in range(per):
                    cst(cb)

            return produce
    elif variant == "floor":
        hit = b.hit
        lq = lean.queue

        def make(_k: int) -> Callable[[], None]:
            items = [LeanItem(hit) for _ in range(per)]

            def produce() -> None:
                for w in items:
                    lq(w)

            return produce
    else:
        c, total, done = b.c, b.total, b.done
        fn: Callable[[Any], Any]
        if variant == "aw_def":

            def fn(_w: object) -> None:  # the same body as _Burst.hit, not one call more
                c.n += 1
                if c.n == total:
                    done.set_result(None)
        else:

            async def fn(_w: object) -> None:
                c.n += 1
                if c.n == total:
                    done.set_result(None)

        queue = aw.queue_work

        def make(_k: int) -> Callable[[], None]:
            items = [aw.Work(fn) for _ in range(per)]

            def produce() -> None:
                for w in items:
                    queue(wq, w)

            return produce

    for k in range(producers):
        jobs.append(make(k))

    def main(job: Callable[[], None]) -> None:
        go.wait()
        try:
            job()
        except BaseException as exc:  # reported by the loop thread
            errors.append(exc)

    threads = [
        threading.Thread(target=main, args=(j,), name=f"bench-producer-{i}", daemon=True)
        for i, j in enumerate(jobs)
    ]
    for th in threads:
        th.start()
    try:
        t0 = _perf()
        go.set()
        try:
            await asyncio.wait_for(asyncio.shield(b.done), bound)
        except TimeoutError:
            raise BenchError(
                f"cross-thread {LABELS[variant]}: {b.c.n} of {b.total} items ran in {bound} s"
                + (f"; a producer raised {errors[0]!r}" if errors else "")
            ) from None
        dt = _perf() - t0
    finally:
        go.set()
        for th in threads:
            th.join(bound)
    if errors:
        raise BenchError(f"cross-thread {LABELS[variant]}: a producer raised {errors[0]!r}")
    return dt


async def run(ctx: Ctx) -> None:
    """End-to-end items/s from 1 and from 4 producer threads, on this loop."""
    s = ctx.sizes
    n = s.threads
    timeout = max(10.0, n / 20_000)
    lean = LeanQueue(4, locked=True)
    await lean.start()
    try:
        async with aw.alloc_workqueue("bench-threads") as wq:
            # Bind the queue to this loop: first use from a coroutine on it.
            aw.queue_work(wq, aw.Work(lambda _w: None))
            await aw.flush_workqueue(wq)
            for p in PRODUCERS:
                g = ctx.results.group(
                    f"threads.{p}",
                    f"Cross-thread, {p} producer thread{'s' if p > 1 else ''}: {n:,} items per "
                    f"burst, end to end",
                    "items/s",
                    "higher",
                    BASELINE,
                )
                times: dict[str, list[float]] = {v: [] for v in LABELS}
                for rnd in range(s.thread_rounds + 1):  # round 0 warms up
                    for v, label in LABELS.items():
                        ctx.progress.show(f"{p} producer(s), {label} {rnd}/{s.thread_rounds}")
                        dt = await _burst(v, p, n, wq, lean=lean, bound=timeout)
                        if rnd:
                            times[v].append(dt)
                total = (n // p) * p
                for v, label in LABELS.items():
                    g.put(
                        ctx.loop_name,
                        label,
                        Cell(total / best(times[v]), extra={"median": total / median(times[v])}),
                    )
    finally:
        await lean.close()
