"""Throughput: bursts of items, each burst run to completion, against what users write instead.

A burst queues ``sizes.burst`` items and waits until every one of them has run:

* aioworkqueue, reused items: the same :class:`~aioworkqueue.Work` objects queued again every
  burst with ``queue_work``, then ``flush_workqueue``; the kernel's way (no allocation per item);
* aioworkqueue, fresh items: ``wq.submit(item)`` per item (a new Work each), then
  ``flush_workqueue``;
* ``asyncio.Queue`` with K long-lived worker tasks (K = 1, 4, 16): ``put_nowait`` per item, then
  ``Queue.join()``; Queue+4 is the baseline of both groups;
* a Task per item: ``create_task`` + ``gather``, and ``asyncio.TaskGroup``;
* aiojobs (when installed): ``Scheduler(limit=None)``, ``spawn`` per item, ``wait_and_close``;
* an anyio memory object stream (unbounded buffer) with 4 worker tasks, completion counted by
  the workers;
* the floors (``_floor.py``): a pending bit, a deque and 4 parked workers, without a lock and
  with the two lock sections per item that a thread-safe ``queue_work`` needs (reused items, and
  a fresh item per queue).

Every alternative is set up once; then one warm-up burst each, then ``sizes.rounds`` rounds in
which each alternative runs one burst in turn (so a slow moment of the machine hits all of them),
and the best burst of each is kept (the median is in the JSON). Items/s, higher is better.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

import aioworkqueue as aw

from ._common import (
    BenchError,
    Counter,
    Ctx,
    ItemFn,
    Kind,
    best,
    import_optional,
    make_item,
    make_work_fn,
    median,
)
from ._floor import LeanItem, LeanQueue
from ._model import Cell

__all__ = ("BASELINE", "LABELS", "run_plain", "run_sleep0")

BASELINE = "asyncio.Queue + 4 workers"
LABELS = {
    "reused": "aioworkqueue queue_work (reused Work)",
    "submit": "aioworkqueue wq.submit (fresh item)",
    "gather": "create_task per item + gather",
    "taskgroup": "asyncio.TaskGroup",
    "aiojobs": "aiojobs spawn + wait_and_close",
    "anyio": "anyio memory stream + 4 workers",
    "floor": "floor: deque + 4 workers, no lock",
    "floor_locked": "floor: deque + 4 workers + lock, reused item",
    "floor_fresh": "floor: deque + 4 workers + lock, fresh item",
}
_perf = time.perf_counter


class _Alt:
    """One alternative: set up once, then timed bursts of ``n`` items, then closed."""

    label = ""

    def __init__(self, kind: Kind, n: int) -> None:
        self.kind: Kind = kind
        self.n = n
        self.c = Counter()
        self.item: ItemFn = make_item(kind, self.c)

    async def setup(self) -> None:
        pass

    async def _burst(self) -> None:
        raise NotImplementedError

    async def burst(self) -> float:
        """Run one burst; return its wall time. Raises BenchError unless exactly n items ran."""
        before = self.c.n
        t0 = _perf()
        await self._burst()
        dt = _perf() - t0
        if self.c.n - before != self.n:
            raise BenchError(f"{self.label}: {self.c.n - before} of {self.n} items ran")
        return dt

    async def close(self) -> None:
        pass


class _Reused(_Alt):
    label = LABELS["reused"]

    async def setup(self) -> None:
        self.wq = aw.alloc_workqueue(f"bench-reused-{self.kind}")
        fn = make_work_fn(self.kind, self.c)
        self.items = [aw.Work(fn) for _ in range(self.n)]

    async def _burst(self) -> None:
        queue, wq = aw.queue_work, self.wq
        for w in self.items:
            queue(wq, w)
        await aw.flush_workqueue(wq)

    async def close(self) -> None:
        await aw.destroy_workqueue(self.wq)


class _Submit(_Alt):
    label = LABELS["submit"]

    async def setup(self) -> None:
        self.wq = aw.alloc_workqueue(f"bench-submit-{self.kind}")

    async def _burst(self) -> None:
        submit, item = self.wq.submit, self.item
        for _ in range(self.n):
            submit(item)
        await aw.flush_workqueue(self.wq)

    async def close(self) -> None:
        await aw.destroy_workqueue(self.wq)


async def _queue_worker(q: asyncio.Queue[ItemFn]) -> None:
    while True:
        job = await q.get()
        await job()
        q.task_done()


class _Queue(_Alt):
    def __init__(self, kind: Kind, n: int, workers: int) -> None:
        super().__init__(kind, n)
        self.k = workers
        self.label = queue_label(workers)

    async def setup(self) -> None:
        self.q: asyncio.Queue[ItemFn] = asyncio.Queue()
        self.tasks = [asyncio.create_task(_queue_worker(self.q)) for _ in range(self.k)]

    async def _burst(self) -> None:
        put, item = self.q.put_nowait, self.item
        for _ in range(self.n):
            put(item)
        await self.q.join()

    async def close(self) -> None:
        await cancel_all(self.tasks)


class _Gather(_Alt):
    label = LABELS["gather"]

    async def _burst(self) -> None:
        create, item = asyncio.create_task, self.item
        await asyncio.gather(*[create(item()) for _ in range(self.n)])


class _TaskGroup(_Alt):
    label = LABELS["taskgroup"]

    async def _burst(self) -> None:
        item = self.item
        async with asyncio.TaskGroup() as tg:
            create = tg.create_task
            for _ in range(self.n):
                create(item())


class _Aiojobs(_Alt):
    label = LABELS["aiojobs"]

    def __init__(self, kind: Kind, n: int, aiojobs: Any) -> None:
        super().__init__(kind, n)
        self.aiojobs = aiojobs

    async def _burst(self) -> None:
        scheduler = self.aiojobs.Scheduler(limit=None)
        spawn, item = scheduler.spawn, self.item
        for _ in range(self.n):
            await spawn(item())
        await scheduler.wait_and_close()


class _Anyio(_Alt):
    label = LABELS["anyio"]
    k = 4

    async def setup(self) -> None:
        self.send: MemoryObjectSendStream[ItemFn]
        self.recv: MemoryObjectReceiveStream[ItemFn]
        self.send, self.recv = anyio.create_memory_object_stream[ItemFn](math.inf)
        self.left = 0
        self.done: asyncio.Future[None] | None = None
        self.tasks = [asyncio.create_task(self._worker()) for _ in range(self.k)]

    async def _worker(self) -> None:
        async for job in self.recv:
            await job()
            self.left -= 1
            if not self.left and self.done is not None:
                self.done.set_result(None)

    async def _burst(self) -> None:
        self.done = done = asyncio.get_running_loop().create_future()
        self.left = self.n
        send, item = self.send.send_nowait, self.item
        for _ in range(self.n):
            send(item)
        await done

    async def close(self) -> None:
        self.send.close()  # the workers' ``async for`` ends
        try:
            await asyncio.wait_for(asyncio.gather(*self.tasks), 5.0)
        finally:
            await cancel_all(self.tasks)
            self.recv.close()


class _Floor(_Alt):
    """A floor (``_floor.py``): reused items, or (``fresh``) a new item per queue."""

    def __init__(self, kind: Kind, n: int, *, locked: bool, fresh: bool) -> None:
        super().__init__(kind, n)
        self.locked = locked
        self.fresh = fresh
        self.label = LABELS["floor_fresh" if fresh else "floor_locked" if locked else "floor"]

    async def setup(self) -> None:
        self.lq = LeanQueue(4, locked=self.locked)
        await self.lq.start()
        self.items = [LeanItem(self.item) for _ in range(self.n)]

    async def _burst(self) -> None:
        queue = self.lq.queue
        if self.fresh:
            item = self.item
            for _ in range(self.n):
                queue(LeanItem(item))
        else:
            for w in self.items:
                queue(w)
        await self.lq.flush()

    async def close(self) -> None:
        await self.lq.close()


def queue_label(workers: int) -> str:
    return f"asyncio.Queue + {workers} worker" + ("s" if workers != 1 else "")


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until they have ended."""
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _alternatives(kind: Kind, n: int, aiojobs: Any | None) -> list[_Alt]:
    alts: list[_Alt] = [_Reused(kind, n), _Submit(kind, n)]
    alts += [_Queue(kind, n, k) for k in (1, 4, 16)]
    alts += [_Gather(kind, n), _TaskGroup(kind, n)]
    if aiojobs is not None:
        alts.append(_Aiojobs(kind, n, aiojobs))
    alts.append(_Anyio(kind, n))
    alts += [
        _Floor(kind, n, locked=False, fresh=False),
        _Floor(kind, n, locked=True, fresh=False),
        _Floor(kind, n, locked=True, fresh=True),
    ]
    return alts


async def _run(ctx: Ctx, kind: Kind) -> None:
    s = ctx.sizes
    aiojobs = import_optional("aiojobs")
    what = "plain items" if kind == "plain" else "items that await asyncio.sleep(0) once"
    g = ctx.results.group(
        f"throughput.{kind}",
        f"Throughput, {kind}: bursts of {s.burst:,} {what}, each run to completion",
        "items/s",
        "higher",
        BASELINE,
    )
    alts = _alternatives(kind, s.burst, aiojobs)
    times: dict[str, list[float]] = {a.label: [] for a in alts}
    ready: list[_Alt] = []
    try:
        for a in alts:
            ctx.progress.show(f"set up {a.label}")
            await a.setup()
            ready.append(a)
        gc.collect()
        for rnd in range(s.rounds + 1):  # round 0 warms up
            for a in alts:
                ctx.progress.show(f"{a.label} {rnd}/{s.rounds}")
                dt = await a.burst()
                if rnd:
                    times[a.label].append(dt)
    finally:
        for a in reversed(ready):
            await a.close()
    for a in alts:
        if aiojobs is None and isinstance(a, _Anyio):
            g.put(ctx.loop_name, LABELS["aiojobs"], Cell(None, "not installed"))
        ts = times[a.label]
        g.put(
            ctx.loop_name,
            a.label,
            Cell(s.burst / best(ts), extra={"median": s.burst / median(ts)}),
        )


async def run_plain(ctx: Ctx) -> None:
    """Throughput of plain items (no await)."""
    await _run(ctx, "plain")


async def run_sleep0(ctx: Ctx) -> None:
    """Throughput of items that await ``asyncio.sleep(0)`` once."""
    await _run(ctx, "sleep0")
