"""Latency to start on an idle loop, and flushing while a producer keeps queueing.

Latency: the loop has nothing else to do; the clock (``time.perf_counter_ns``) is read just
before the call that schedules the item and again as the first thing the item does. Samples of
the alternatives are interleaved, and the loop goes idle (the worker parks) between samples.

* aioworkqueue: ``queue_work(wq, work)``, an ``async def`` item, a parked worker;
* ``loop.call_soon(callback)``: the baseline, the least the loop can do;
* ``loop.create_task(item())``: a Task per item;
* the floor (``_floor.py``): the lean queue with a lock, one parked worker task woken by its
  future, as the library's is.

Median and p99, microseconds, lower is better.

Flush under load: a producer task keeps ``sizes.backlog`` items outstanding (after every loop
iteration it tops the backlog up again), forever. While it runs, ``flush_workqueue`` must still
return once the items queued before it have run (R13); ``asyncio.Queue.join()`` waits until the
queue is empty, which a producer that keeps going may never let happen. Each wait is bounded
(``asyncio.wait_for``, ``sizes.flush_wait``): one that is cut is reported as "did not return".
Measured with items that await once (``sleep0``, the queue never empties) and with plain items
(a worker drains the whole queue in one step, so ``join()`` can see it empty). Milliseconds until
the call returned, lower is better.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aioworkqueue as aw

from ._common import BenchError, Ctx, ItemFn, Kind, median, percentile
from ._floor import LeanItem, LeanQueue
from ._model import Cell
from ._throughput import cancel_all

__all__ = ("FLUSH_BASELINE", "LATENCY_BASELINE", "LATENCY_LABELS", "run_flush", "run_latency")

LATENCY_LABELS = {
    "aw": "aioworkqueue queue_work",
    "soon": "loop.call_soon",
    "task": "loop.create_task",
    "floor": "floor: parked worker + lock",
}
LATENCY_BASELINE = LATENCY_LABELS["soon"]
FLUSH_BASELINE = "asyncio.Queue + 4 workers: join()"
_ns = time.perf_counter_ns


class _Probe(aw.Work):
    __slots__ = ("fut", "started")

    def __init__(self) -> None:
        super().__init__(_Probe.run)
        self.started = 0
        self.fut: asyncio.Future[None] | None = None

    @staticmethod
    async def run(w: _Probe) -> None:
        w.started = _ns()
        if w.fut is not None:
            w.fut.set_result(None)


async def run_latency(ctx: Ctx) -> None:
    """Median and p99 latency from scheduling to start, on an idle loop."""
    m = ctx.sizes.latency
    loop = asyncio.get_running_loop()
    samples: dict[str, list[float]] = {k: [] for k in LATENCY_LABELS}
    stamp = [0]
    done: list[asyncio.Future[None]] = []

    def callback() -> None:
        stamp[0] = _ns()
        done[0].set_result(None)

    async def item() -> None:
        stamp[0] = _ns()
        done[0].set_result(None)

    lean = LeanQueue(1, locked=True)
    await lean.start()
    lean_item = LeanItem(item)
    async with aw.alloc_workqueue("bench-latency") as wq:
        probe = _Probe()
        aw.queue_work(wq, aw.Work(lambda _w: None))  # bind, start a worker
        await aw.flush_workqueue(wq)
        for i in range(m + 20):  # the first 20 of each warm up
            if i % 100 == 0:
                ctx.progress.show(f"sample {i}/{m + 20}")
            for key in LATENCY_LABELS:
                for _ in range(2):
                    await asyncio.sleep(0)  # let the worker park again
                fut = loop.create_future()
                if key == "aw":
                    probe.fut = fut
                    t0 = _ns()
                    aw.queue_work(wq, probe)
                    await fut
                    t1 = probe.started
                else:
                    done[:] = [fut]
                    if key == "soon":
                        t0 = _ns()
                        loop.call_soon(callback)
                        await fut
                    elif key == "floor":
                        t0 = _ns()
                        lean.queue(lean_item)
                        await fut
                    else:
                        t0 = _ns()
                        task = loop.create_task(item())
                        await fut
                        await task
                    t1 = stamp[0]
                if i >= 20:
                    samples[key].append((t1 - t0) / 1e3)
        await aw.flush_workqueue(wq)
    await lean.close()
    for q, name in ((0.5, "median"), (0.99, "p99")):
        g = ctx.results.group(
            f"latency.{name}",
            f"Latency from the call to the start of the item on an idle loop, {name} "
            f"({m:,} samples)",
            "us",
            "lower",
            LATENCY_BASELINE,
        )
        for key, label in LATENCY_LABELS.items():
            xs = sorted(samples[key])
            g.put(ctx.loop_name, label, Cell(percentile(xs, q)))


class _Load:
    """A producer task that keeps ``backlog`` items outstanding, whatever runs them."""

    def __init__(self, backlog: int, kind: Kind, put: Callable[[ItemFn], object]) -> None:
        self.backlog = backlog
        self.put = put
        self.outstanding = 0
        self.produced = 0
        self.running = True
        if kind == "plain":

            async def item() -> None:
                self.outstanding -= 1

        else:

            async def item() -> None:
                await asyncio.sleep(0)
                self.outstanding -= 1

        self.item: ItemFn = item

    async def produce(self) -> None:
        put, item = self.put, self.item
        while self.running:
            k = self.backlog - self.outstanding
            for _ in range(k):
                put(item)
            self.outstanding += k
            self.produced += k
            await asyncio.sleep(0)


async def _timed(wait: float, call: Callable[[], Awaitable[Any]]) -> float | None:
    """Milliseconds until ``call()`` returned, or None if it had not within ``wait`` seconds."""
    t0 = _ns()
    try:
        await asyncio.wait_for(call(), wait)
    except TimeoutError:
        return None
    return (_ns() - t0) / 1e6


async def _flush_aw(ctx: Ctx, kind: Kind) -> list[float | None]:
    s = ctx.sizes
    out: list[float | None] = []
    async with aw.alloc_workqueue(f"bench-flush-{kind}") as wq:
        load = _Load(s.backlog, kind, wq.submit)
        producer = asyncio.create_task(load.produce())
        try:
            await asyncio.sleep(0.01)
            for _ in range(s.flush_samples):
                out.append(await _timed(s.flush_wait, lambda: aw.flush_workqueue(wq)))
            if not load.produced:
                raise BenchError("flush under load: the producer did not run")
        finally:
            load.running = False
            await producer
        await asyncio.wait_for(aw.flush_workqueue(wq), 10.0)
    return out


async def _flush_queue(ctx: Ctx, kind: Kind) -> list[float | None]:
    s = ctx.sizes
    q: asyncio.Queue[ItemFn] = asyncio.Queue()

    async def worker() -> None:
        while True:
            job = await q.get()
            await job()
            q.task_done()

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    load = _Load(s.backlog, kind, q.put_nowait)
    producer = asyncio.create_task(load.produce())
    out: list[float | None] = []
    try:
        await asyncio.sleep(0.01)
        for _ in range(s.flush_samples):
            out.append(await _timed(s.flush_wait, q.join))
    finally:
        load.running = False
        await producer
        try:
            await asyncio.wait_for(q.join(), 10.0)
        finally:
            await cancel_all(workers)
    return out


async def run_flush(ctx: Ctx) -> None:
    """flush_workqueue against Queue.join() while a producer keeps queueing."""
    s = ctx.sizes
    kinds: tuple[Kind, ...] = ("sleep0", "plain")
    for kind in kinds:
        what = "items that await once" if kind == "sleep0" else "plain items"
        g = ctx.results.group(
            f"flush.{kind}",
            f"Waiting for what was queued while a producer keeps {s.backlog:,} {what} "
            f"outstanding (each wait bounded at {s.flush_wait * 1e3:.0f} ms)",
            "ms",
            "lower",
            FLUSH_BASELINE,
        )
        for label, fn in (
            ("aioworkqueue flush_workqueue", _flush_aw),
            (FLUSH_BASELINE, _flush_queue),
        ):
            ctx.progress.show(f"{label}, {kind} load")
            got = await fn(ctx, kind)
            returned = [x for x in got if x is not None]
            extra = {"returned": float(len(returned)), "tries": float(len(got))}
            if len(returned) == len(got):
                cell = Cell(median(returned), extra=extra)
            elif not returned:
                cell = Cell(None, "did not return", extra=extra)
            else:
                cell = Cell(None, f"{len(got) - len(returned)}/{len(got)} did not return", extra)
            g.put(ctx.loop_name, label, cell)
