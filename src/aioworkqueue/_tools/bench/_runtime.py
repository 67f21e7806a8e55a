"""The per-CPU runtime against the embedded mode, on a mixed workload.

Half of the items are plain, half await ``asyncio.sleep(0)`` once; ``sizes.runtime_burst``
reused :class:`~aioworkqueue.Work` items are queued from the host loop and flushed, as in the
throughput scenario. Embedded (the items run on the host loop itself) is the baseline; then
``Runtime(cpus=1)`` and ``Runtime(cpus=2)``, whose pools are event loops of the same kind as the
host's, each in its own thread: every item crosses a thread on its way in, and the pools share
one interpreter lock, so this shows what the hand-off costs and what, if anything, a second
pool buys for Python-level work on this machine. Items/s, higher is better.
"""

from __future__ import annotations

import gc
import time

import aioworkqueue as aw

from ._common import BenchError, Counter, Ctx, best, make_work_fn, median
from ._model import Cell

__all__ = ("BASELINE", "CPUS", "run")

BASELINE = "embedded (host loop)"
CPUS = (1, 2)
_perf = time.perf_counter


async def _bursts(ctx: Ctx, label: str) -> list[float]:
    s = ctx.sizes
    n = s.runtime_burst
    c = Counter()
    plain, sleep0 = make_work_fn("plain", c), make_work_fn("sleep0", c)
    items = [aw.Work(plain if i % 2 == 0 else sleep0) for i in range(n)]
    times: list[float] = []
    async with aw.alloc_workqueue(f"bench-runtime-{label}") as wq:
        queue = aw.queue_work
        for rnd in range(s.runtime_rounds + 1):  # round 0 warms up
            ctx.progress.show(f"{label} {rnd}/{s.runtime_rounds}")
            done = wq.stats().completed
            gc.collect()
            t0 = _perf()
            for w in items:
                queue(wq, w)
            await aw.flush_workqueue(wq)
            dt = _perf() - t0
            ran = wq.stats().completed - done
            if ran != n:
                raise BenchError(f"runtime, {label}: {ran} of {n} items completed")
            if rnd:
                times.append(dt)
    return times


async def run(ctx: Ctx) -> None:
    """Mixed-workload items/s: embedded, then Runtime(cpus=1) and Runtime(cpus=2)."""
    s = ctx.sizes
    g = ctx.results.group(
        "runtime",
        f"Per-CPU runtime, mixed items (half plain, half sleep0), bursts of "
        f"{s.runtime_burst:,} queued from the host loop",
        "items/s",
        "higher",
        BASELINE,
    )
    n = s.runtime_burst
    ts = await _bursts(ctx, BASELINE)
    g.put(ctx.loop_name, BASELINE, Cell(n / best(ts), extra={"median": n / median(ts)}))
    for cpus in CPUS:
        label = f"aw.Runtime(cpus={cpus})"
        async with aw.Runtime(cpus=cpus, loop_factory=ctx.loop_name) as rt:
            ts = await _bursts(ctx, label)
        if rt.unfinished:
            raise BenchError(f"runtime, {label}: {len(rt.unfinished)} items did not finish")
        g.put(ctx.loop_name, label, Cell(n / best(ts), extra={"median": n / median(ts)}))
