"""Memory per pending item: what an item costs while it waits to run.

``sizes.memory`` items are queued from a coroutine that does not yield, so none of them can run;
``tracemalloc`` measures the traced memory before and after, while they are all pending; then
tracing stops and the items run (and each case checks that exactly that many ran, and none
before the second measurement). The cyclic garbage collector is off during the measurement so a
collection cannot make the difference smaller.

What is counted is what the alternative allocates per item at that moment:

* aioworkqueue ``queue_work`` of an already allocated :class:`~aioworkqueue.Work`: queueing only
  (the item exists anyway; the kernel's pattern). Target: at most 16 bytes more.
* ``Work(fn)`` + ``queue_work`` and ``wq.submit(fn)``: a fresh item each. Target: at most 100 B.
* ``asyncio.Queue.put_nowait(fn)`` / anyio ``send_nowait(fn)``: a slot in a deque (the function
  object is shared); the worker tasks exist before.
* ``create_task(item())``, ``TaskGroup.create_task``, aiojobs ``spawn``: a coroutine and a Task
  (and a scheduled handle) per item; ``create_task`` is the baseline.

Bytes per item, lower is better.
"""

from __future__ import annotations

import asyncio
import gc
import math
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

import aioworkqueue as aw

from ._common import BenchError, Counter, Ctx, ItemFn, import_optional, make_item, make_work_fn
from ._model import Cell
from ._throughput import cancel_all

__all__ = ("BASELINE", "LABELS", "run")

LABELS = {
    "reused": "aioworkqueue queue_work (already allocated Work)",
    "fresh": "aioworkqueue Work(fn) + queue_work",
    "submit": "aioworkqueue wq.submit(fn)",
    "queue": "asyncio.Queue put_nowait (workers exist)",
    "task": "create_task(item())",
    "taskgroup": "asyncio.TaskGroup create_task(item())",
    "aiojobs": "aiojobs spawn(item())",
    "anyio": "anyio memory stream send_nowait",
}
BASELINE = LABELS["task"]


async def traced(n: int, c: Counter, body: Callable[[], Awaitable[object]]) -> float:
    """Bytes per item that ``body`` leaves allocated; ``body`` must queue ``n`` items of ``c``
    without yielding to the loop (checked: none of them may have run by the second look)."""
    gc.collect()
    gc_was_on = gc.isenabled()
    gc.disable()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        ran = c.n
        before = tracemalloc.get_traced_memory()[0]
        keep = await body()
        after = tracemalloc.get_traced_memory()[0]
        if c.n != ran:
            raise BenchError("memory: items ran while they were being measured")
        del keep
    finally:
        if started:
            tracemalloc.stop()
        if gc_was_on:
            gc.enable()
    return (after - before) / n


def _check(label: str, c: Counter, start: int, n: int) -> None:
    if c.n - start != n:
        raise BenchError(f"memory, {label}: {c.n - start} of {n} items ran")


async def _aw(kind: str, n: int) -> float:
    c = Counter()
    fn = make_work_fn("plain", c)
    async with aw.alloc_workqueue(f"bench-mem-{kind}") as wq:
        queue = aw.queue_work
        # Warm up: bind the queue to this loop and let its lists grow once.
        warm = [aw.Work(fn) for _ in range(n)]
        for w in warm:
            queue(wq, w)
        await aw.flush_workqueue(wq)
        start = c.n
        items = [aw.Work(fn) for _ in range(n)] if kind == "reused" else []
        item = make_item("plain", c)

        async def body() -> object:
            if kind == "reused":
                for w in items:
                    queue(wq, w)
            elif kind == "fresh":
                work = aw.Work
                for _ in range(n):
                    queue(wq, work(fn))
            else:
                submit = wq.submit
                for _ in range(n):
                    submit(item)
            return None

        per = await traced(n, c, body)
        await aw.flush_workqueue(wq)
        _check(LABELS[kind], c, start, n)
    return per


async def _queue(n: int) -> float:
    c = Counter()
    item = make_item("plain", c)
    q: asyncio.Queue[ItemFn] = asyncio.Queue()

    async def worker() -> None:
        while True:
            job = await q.get()
            await job()
            q.task_done()

    tasks = [asyncio.create_task(worker()) for _ in range(4)]
    try:
        await asyncio.sleep(0)  # the workers wait in get()
        for _ in range(n):  # warm-up: the deque grows once
            q.put_nowait(item)
        await q.join()
        start = c.n
        put = q.put_nowait

        async def body() -> object:
            for _ in range(n):
                put(item)
            return None

        per = await traced(n, c, body)
        await q.join()
        _check(LABELS["queue"], c, start, n)
    finally:
        await cancel_all(tasks)
    return per


async def _tasks(n: int) -> float:
    c = Counter()
    item = make_item("plain", c)
    tasks: list[asyncio.Task[None]] = []
    create = asyncio.create_task

    async def body() -> object:
        append = tasks.append
        for _ in range(n):
            append(create(item()))
        return None

    # The list that keeps the tasks is part of what create_task + gather needs anyway.
    per = await traced(n, c, body)
    await asyncio.gather(*tasks)
    _check(LABELS["task"], c, 0, n)
    return per


async def _taskgroup(n: int) -> float:
    c = Counter()
    item = make_item("plain", c)
    per = math.nan
    async with asyncio.TaskGroup() as tg:
        create = tg.create_task

        async def body() -> object:
            for _ in range(n):
                create(item())
            return None

        per = await traced(n, c, body)
    _check(LABELS["taskgroup"], c, 0, n)
    return per


async def _aiojobs(n: int, aiojobs: Any) -> float:
    c = Counter()
    item = make_item("plain", c)
    scheduler = aiojobs.Scheduler(limit=None)
    try:
        spawn = scheduler.spawn

        async def body() -> object:
            for _ in range(n):
                await spawn(item())  # does not suspend with limit=None
            return None

        per: float = await traced(n, c, body)
    finally:
        await scheduler.wait_and_close()
    _check(LABELS["aiojobs"], c, 0, n)
    return per


async def _anyio(n: int) -> float:
    c = Counter()
    item = make_item("plain", c)
    send, recv = anyio.create_memory_object_stream[ItemFn](math.inf)
    left = [0]
    done: list[asyncio.Future[None]] = []

    async def worker() -> None:
        async for job in recv:
            await job()
            left[0] -= 1
            if not left[0]:
                done[0].set_result(None)

    tasks = [asyncio.create_task(worker()) for _ in range(4)]
    try:

        async def burst(measure: bool) -> float:
            done[:] = [asyncio.get_running_loop().create_future()]
            left[0] = n
            put = send.send_nowait

            async def body() -> object:
                for _ in range(n):
                    put(item)
                return None

            per = 0.0
            if measure:
                per = await traced(n, c, body)
            else:
                await body()
            await asyncio.wait_for(done[0], 10.0)
            return per

        await burst(False)  # warm-up: the buffer grows once
        start = c.n
        per = await burst(True)
        _check(LABELS["anyio"], c, start, n)
    finally:
        send.close()
        await cancel_all(tasks)
        recv.close()
    return per


async def run(ctx: Ctx) -> None:
    """Bytes per pending item for every alternative, on this loop."""
    n = ctx.sizes.memory
    g = ctx.results.group(
        "memory",
        f"Memory per pending item ({n:,} items queued, none run yet; tracemalloc)",
        "B",
        "lower",
        BASELINE,
    )
    aiojobs = import_optional("aiojobs")
    cases: list[tuple[str, Callable[[], Awaitable[float]]]] = [
        ("reused", lambda: _aw("reused", n)),
        ("fresh", lambda: _aw("fresh", n)),
        ("submit", lambda: _aw("submit", n)),
        ("queue", lambda: _queue(n)),
        ("task", lambda: _tasks(n)),
        ("taskgroup", lambda: _taskgroup(n)),
        ("aiojobs", lambda: _aiojobs(n, aiojobs)),
        ("anyio", lambda: _anyio(n)),
    ]
    for key, case in cases:
        label = LABELS[key]
        if key == "aiojobs" and aiojobs is None:
            g.put(ctx.loop_name, label, Cell(None, "not installed"))
            continue
        ctx.progress.show(label)
        g.put(ctx.loop_name, label, Cell(await case()))
