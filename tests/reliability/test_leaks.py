"""Leaks: a million operations later, everything is back where it was (R4 over time).

Many queue / run / cancel cycles, with fresh and reused items, immediate and delayed, plus
``submit``, ``mod_delayed_work``, flushes and short-lived workqueues that are destroyed — first in
the embedded mode, then on a ``Runtime(cpus=2)`` from the host loop and a plain thread at once.
After a warm-up of the same workload, a baseline is taken; after the main run (everything
flushed, timers fired or cancelled, ``gc.collect()``) these must be back to it, within a small
tolerance:

* Python heap: ``sys.getallocatedblocks()`` over the whole run, and ``tracemalloc``'s current size
  over a traced part of it (tracing costs 4x, so not all of it);
* RSS (``/proc/self/statm``);
* armed timers (``wq.stats().armed``) and in-flight instances;
* asyncio tasks, on the host loop and on every pool loop (``len(asyncio.all_tasks())``);
* threads;
* the library's side tables: flush waiters, interrupt replays, pool lists, armed-item maps.

Operation counts (library calls made) are asserted, so the figure in the report is real.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

import aioworkqueue as aw
from aioworkqueue import _barrier, _lock

from ._support import GUARD, guarded, runtime_threads

DELAY = 0.0005


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def noop(w: aw.Work) -> None:
    pass


async def anoop(w: aw.Work) -> None:
    if id(w) & 64:
        await asyncio.sleep(0)


def plain() -> None:
    pass


class Ops:
    """A counter of library calls, shared by the host loop and a thread (under a lock)."""

    def __init__(self) -> None:
        self.n = 0
        self.mu = threading.Lock()

    def add(self, k: int) -> None:
        with self.mu:
            self.n += k


def cycle_sync(wq: aw.Workqueue, reused: list[aw.Work], dws: list[aw.DelayedWork], k: int) -> int:
    """One iteration of the synchronous part; returns how many library calls it made."""
    n = 2
    aw.queue_work(wq, aw.Work(noop if k & 1 else anoop))  # fresh item
    r = reused[k % len(reused)]
    aw.queue_work(wq, r)  # reused item
    if k % 3 == 0:
        aw.cancel_work(r)
        n += 1
    d = dws[k % len(dws)]
    if k & 1:
        aw.queue_delayed_work(wq, d, DELAY if k & 2 else 0)
    else:
        aw.mod_delayed_work(wq, d, DELAY)
    n += 1
    if k % 5 == 0:
        aw.cancel_delayed_work(d)
        n += 1
    if k % 7 == 0:
        wq.submit(plain)
        n += 1
    return n


async def cycles(
    wq: aw.Workqueue, reused: list[aw.Work], dws: list[aw.DelayedWork], count: int, ops: Ops
) -> None:
    n = 0
    for k in range(count):
        n += cycle_sync(wq, reused, dws, k)
        if k % 64 == 63:
            await aw.flush_work(reused[k % len(reused)])
            n += 1
        if k % 256 == 255:
            await aw.flush_workqueue(wq)
            n += 1
        if k % 5000 == 4999:  # a short-lived workqueue, used and destroyed
            async with aw.alloc_workqueue("leak-tmp", 0, 2) as tmp:
                tmp.submit(plain)
                aw.queue_delayed_work(tmp, aw.DelayedWork(noop), 10)  # destroy fires it
            n += 4
    ops.add(n)


def thread_cycles(
    wq: aw.Workqueue, reused: list[aw.Work], dws: list[aw.DelayedWork], count: int, ops: Ops
) -> None:
    n = 0
    for k in range(count):
        n += cycle_sync(wq, reused, dws, k)
        if k % 64 == 63:
            os.sched_yield()
    ops.add(n)


async def quiesce(wqs: list[aw.Workqueue], items: list[aw.Work]) -> None:
    """Flush until nothing is pending, running, armed or in flight anywhere."""

    async def loop() -> None:
        while True:
            for w in items:
                if isinstance(w, aw.DelayedWork):
                    await aw.flush_delayed_work(w)
            for wq in wqs:
                await aw.flush_workqueue(wq)
            if not any(aw.work_busy(w) for w in items) and not any(
                wq.stats().armed or wq.stats().in_flight for wq in wqs
            ):
                return
            await asyncio.sleep(0.001)

    await guarded(loop(), "everything to go idle")


@dataclass
class Snapshot:
    blocks: int
    traced: int
    rss: float
    tasks: list[int]  # per loop (host, then each pool loop): tasks that are not pool workers
    workers: list[int]  # per pool: its worker tasks (they park and are reused)
    threads: int
    tables: dict[str, int]


def our_threads() -> int:
    """Threads, not counting the host loop's default executor (``asyncio.to_thread``; asyncio
    names its threads ``asyncio_N``, uvloop ``uvloop_N``)."""
    executor = ("asyncio_", "uvloop_", "ThreadPoolExecutor-")
    return sum(1 for t in threading.enumerate() if not t.name.startswith(executor))


def tables(pools: list[Any]) -> dict[str, int]:
    t = {
        "flush waiters": len(_barrier._WAITERS),
        "interrupt replays": len(_lock.INTR.ops) + len(_lock.INTR.shadow) + len(_lock._REDO),
    }
    for p in pools:
        t[f"pool {p.cpu} lists"] = len(p.worklist) + len(p.hi) + len(p.bh) + len(p.ub)
        t[f"pool {p.cpu} links"] = len(p.pwqs)
    return t


async def snapshot(pools: list[Any]) -> Snapshot:
    workers = {id(w.task) for p in pools for w in p.workers}

    async def count_tasks() -> int:
        return sum(1 for t in asyncio.all_tasks() if id(t) not in workers)

    tasks = [await count_tasks()]
    for p in pools:
        if p.loop is not asyncio.get_running_loop():
            cf = asyncio.run_coroutine_threadsafe(count_tasks(), p.loop)
            tasks.append(await asyncio.wrap_future(cf))
    for _ in range(3):
        gc.collect()
    return Snapshot(
        blocks=sys.getallocatedblocks(),
        traced=tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0,
        rss=rss_mib(),
        tasks=tasks,
        workers=[len(p.workers) for p in pools],
        threads=our_threads(),
        tables=tables(pools),
    )


def compare(before: Snapshot, after: Snapshot, *, traced: bool) -> list[str]:
    problems = []
    if after.blocks - before.blocks > 3000:
        problems.append(f"allocated blocks {before.blocks} -> {after.blocks}")
    if traced and after.traced - before.traced > 256 * 1024:
        problems.append(f"tracemalloc current {before.traced} -> {after.traced} bytes")
    if after.rss - before.rss > 16:
        problems.append(f"RSS {before.rss:.1f} -> {after.rss:.1f} MiB")
    if after.tasks != before.tasks:
        problems.append(f"tasks per loop (host, pools) {before.tasks} -> {after.tasks}")
    # Worker tasks park and are reused; a pool may keep a few more parked ones than after the
    # warm-up (as many as items ran at once), but not one per item.
    for i, (b, a) in enumerate(zip(before.workers, after.workers, strict=True)):
        if a > max(b, 16) + 8:
            problems.append(f"pool {i} worker tasks {b} -> {a}")
    if after.threads != before.threads:
        problems.append(f"threads {before.threads} -> {after.threads}")
    if after.tables != before.tables:
        problems.append(f"side tables {before.tables} -> {after.tables}")
    return problems


async def measure(
    run: Callable[[int], Awaitable[None]],
    settle: Callable[[], Awaitable[None]],
    pools: Callable[[], list[Any]],
    *,
    warmup: int,
    bulk: int,
    traced_part: int,
) -> tuple[list[str], dict[str, Any]]:
    """Warm up, take a baseline, run ``bulk`` untraced then ``traced_part`` traced cycles."""
    await run(warmup)
    await settle()
    base = await snapshot(pools())
    await run(bulk)
    await settle()
    mid = await snapshot(pools())
    problems = compare(base, mid, traced=False)
    tracemalloc.start()
    try:
        await settle()
        tbase = await snapshot(pools())
        await run(traced_part)
        await settle()
        tend = await snapshot(pools())
    finally:
        tracemalloc.stop()
    problems += compare(tbase, tend, traced=True)
    return problems, {
        "blocks": mid.blocks - base.blocks,
        "traced_bytes": tend.traced - tbase.traced,
        "rss_mib": round(mid.rss - base.rss, 2),
        "tasks": (base.tasks, mid.tasks),
        "workers": (base.workers, mid.workers),
        "threads": (base.threads, mid.threads),
    }


@pytest.mark.asyncio
async def test_embedded_a_half_million_operations_leave_nothing_behind() -> None:
    ops = Ops()
    wq = aw.alloc_workqueue("leak-embedded", 0, 16)
    reused: list[aw.Work] = [aw.Work(noop) for _ in range(64)]
    dws = [aw.DelayedWork(anoop) for _ in range(64)]
    items = reused + dws  # type: ignore[operator]

    async def run(count: int) -> None:
        await cycles(wq, reused, dws, count, ops)

    def pools() -> list[Any]:
        assert wq._pwq is not None
        return [wq._pwq.pool]

    problems, figures = await measure(
        run, lambda: quiesce([wq], items), pools, warmup=10_000, bulk=100_000, traced_part=15_000
    )
    await guarded(aw.destroy_workqueue(wq), "destroy")
    assert not problems, (problems, figures)
    assert ops.n > 300_000, ops.n
    print(f"embedded: {ops.n} operations; {figures}")


@pytest.mark.asyncio
async def test_runtime_a_half_million_operations_from_two_threads_leave_nothing_behind() -> None:
    ops = Ops()
    loop_kind = "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"
    threads_before = our_threads()
    async with aw.Runtime(cpus=2, loop_factory=loop_kind, shutdown_timeout=GUARD) as rt:
        wqs = [
            aw.alloc_workqueue("leak-percpu", 0, 16),
            aw.alloc_workqueue("leak-unbound", aw.WQ.UNBOUND, 8),
        ]
        host_items: list[aw.Work] = [aw.Work(noop) for _ in range(32)]
        host_dws = [aw.DelayedWork(anoop) for _ in range(32)]
        th_items: list[aw.Work] = [aw.Work(anoop) for _ in range(32)]
        th_dws = [aw.DelayedWork(noop) for _ in range(32)]
        items = host_items + host_dws + th_items + th_dws  # type: ignore[operator]

        async def run(count: int) -> None:
            th = threading.Thread(
                target=thread_cycles, args=(wqs[1], th_items, th_dws, count // 2, ops)
            )
            th.start()
            await cycles(wqs[0], host_items, host_dws, count, ops)
            await asyncio.to_thread(th.join, GUARD)
            assert not th.is_alive()

        problems, figures = await measure(
            run,
            lambda: quiesce(wqs, items),
            lambda: list(rt.pools),
            warmup=8_000,
            bulk=70_000,
            traced_part=8_000,
        )
        for wq in wqs:
            await guarded(aw.destroy_workqueue(wq), "destroy")
    assert rt.unfinished == []
    assert not runtime_threads()
    assert our_threads() == threads_before
    assert not problems, (problems, figures)
    assert ops.n > 250_000, ops.n
    print(f"runtime ({loop_kind}): {ops.n} operations; {figures}")
