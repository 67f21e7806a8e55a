"""Delayed work: what arming, cancelling and re-arming cost, and how precisely timers fire.

Cost (ns per operation, lower is better), ``sizes.timer_ops`` items per timed round, best round:

* arm: ``queue_delayed_work(wq, dwork, 10 s)`` against ``loop.call_later(10 s, cb)`` (keeping the
  handle, as a caller that may cancel must);
* cancel: ``cancel_delayed_work(dwork)`` on an armed item against ``TimerHandle.cancel()``;
* re-arm: ``mod_delayed_work(wq, dwork, 20 s)`` on an armed item against ``handle.cancel()`` +
  ``loop.call_later(20 s, cb)``, which is how the same is done by hand.

Lateness: ``sizes.lateness`` timers armed at ``sizes.arm_rate`` per second (paced on the real
clock, the loop keeps running between arms) with delays spread over 1-10 ms. Each deadline is
``time.monotonic()`` read just before the arming call plus the delay; each item records
``time.monotonic()`` when it starts. Lateness is start - deadline; a negative one fired early,
which the kernel's rule (R8) forbids. Reported: p50, p99 and max lateness (microseconds) and the
share that fired early (percent), all lower is better, against ``loop.call_later``. The floor of
a timer that never fires early on the loop's own clock (R8): ``loop.call_at`` for the deadline,
rounded up to the loop's tick where its clock is coarser than ``time.monotonic()`` (uvloop: whole
milliseconds), and set again for the rest if it fires before the deadline.
"""

from __future__ import annotations

import asyncio
import gc
import math
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import aioworkqueue as aw

from ._common import BenchError, Ctx, best, median, percentile
from ._floor import LeanTimer, LeanTimers
from ._model import Cell

__all__ = ("AW", "BASE", "FLOOR", "run_cost", "run_lateness")

AW = "aioworkqueue"
BASE = "loop.call_later"
FLOOR = "floor: loop.call_at, never early"
_perf = time.perf_counter
_mono = time.monotonic
_FAR, _FARTHER = 10.0, 20.0


def _noop(_w: object = None) -> None:
    pass


async def run_cost(ctx: Ctx) -> None:
    """ns per arm, cancel and re-arm, aioworkqueue against the loop's own timers."""
    s = ctx.sizes
    n = s.timer_ops
    loop = asyncio.get_running_loop()
    rows = {
        "arm": ("queue_delayed_work", "loop.call_later"),
        "cancel": ("cancel_delayed_work", "TimerHandle.cancel"),
        "rearm": ("mod_delayed_work", "TimerHandle.cancel + call_later"),
    }
    groups = {
        op: ctx.results.group(
            f"timers.{op}",
            f"Timer {('re-arm' if op == 'rearm' else op)} cost ({n:,} timers per round)",
            "ns",
            "lower",
            f"{base} (baseline)",
        )
        for op, (_mine, base) in rows.items()
    }
    floor = {
        "arm": "floor: lock section + heap push",
        "cancel": "floor: lock section",
        "rearm": "floor: lock section + lock section + heap push",
    }
    who_all = ("aw", "lp", "fl")
    times: dict[str, list[float]] = {f"{who}.{op}": [] for op in rows for who in who_all}
    lean = LeanTimers()
    lean_items = [LeanTimer() for _ in range(n)]
    async with aw.alloc_workqueue("bench-timers") as wq:
        items = [aw.DelayedWork(_noop) for _ in range(n)]
        qd, cd, mod = aw.queue_delayed_work, aw.cancel_delayed_work, aw.mod_delayed_work
        call_later = loop.call_later
        for rnd in range(s.timer_rounds + 1):  # round 0 warms up
            ctx.progress.show(f"round {rnd}/{s.timer_rounds}")
            t = {}
            # aioworkqueue: arm, cancel; arm again (untimed), re-arm, cancel (untimed).
            t0 = _perf()
            for w in items:
                qd(wq, w, _FAR)
            t["aw.arm"] = _perf() - t0
            t0 = _perf()
            for w in items:
                cd(w)
            t["aw.cancel"] = _perf() - t0
            for w in items:
                qd(wq, w, _FAR)
            t0 = _perf()
            for w in items:
                mod(wq, w, _FARTHER)
            t["aw.rearm"] = _perf() - t0
            for w in items:
                if not cd(w):
                    raise BenchError("timers: an armed item could not be cancelled")
            await asyncio.sleep(0)
            # The loop's own timers, the same steps.
            handles: list[asyncio.TimerHandle] = []
            append = handles.append
            t0 = _perf()
            for _ in range(n):
                append(call_later(_FAR, _noop))
            t["lp.arm"] = _perf() - t0
            t0 = _perf()
            for h in handles:
                h.cancel()
            t["lp.cancel"] = _perf() - t0
            handles = [call_later(_FAR, _noop) for _ in range(n)]
            again: list[asyncio.TimerHandle] = []
            append = again.append
            t0 = _perf()
            for h in handles:
                h.cancel()
                append(call_later(_FARTHER, _noop))
            t["lp.rearm"] = _perf() - t0
            for h in again:
                h.cancel()
            del handles, again
            # The floor, the same steps.
            larm, lcancel = lean.arm, lean.cancel
            t0 = _perf()
            for lt in lean_items:
                larm(lt, _FAR)
            t["fl.arm"] = _perf() - t0
            t0 = _perf()
            for lt in lean_items:
                lcancel(lt)
            t["fl.cancel"] = _perf() - t0
            for lt in lean_items:
                larm(lt, _FAR)
            t0 = _perf()
            for lt in lean_items:
                lcancel(lt)
                larm(lt, _FARTHER)
            t["fl.rearm"] = _perf() - t0
            for lt in lean_items:
                lcancel(lt)
            lean.clear()
            await asyncio.sleep(0)
            if rnd:
                for k, v in t.items():
                    times[k].append(v)
        if wq.stats().armed:
            raise BenchError("timers: items still armed after the last cancel")
    for op, (mine, _base) in rows.items():
        g = groups[op]
        labels = (("aw", f"aioworkqueue {mine}"), ("lp", g.baseline), ("fl", floor[op]))
        for who, label in labels:
            ts = times[f"{who}.{op}"]
            g.put(
                ctx.loop_name,
                label,
                Cell(best(ts) / n * 1e9, extra={"median": median(ts) / n * 1e9}),
            )


class _Tick(aw.DelayedWork):
    __slots__ = ("deadline", "fired")

    def __init__(self) -> None:
        super().__init__(_Tick.fire)
        self.deadline = 0.0
        self.fired = -1.0

    @staticmethod
    def fire(w: _Tick) -> None:
        w.fired = _mono()


class _Stamp:
    __slots__ = ("deadline", "fired")

    def __init__(self) -> None:
        self.deadline = 0.0
        self.fired = -1.0

    def fire(self) -> None:
        self.fired = _mono()


async def _paced(m: int, rate: float, arm: Callable[[int], None]) -> float:
    """Call ``arm(i)`` for i in 0..m-1 at ``rate`` per second; return the achieved rate."""
    i = 0
    t0 = _mono()
    while i < m:
        due = min(m, int((_mono() - t0) * rate) + 1)
        while i < due:
            arm(i)
            i += 1
        await asyncio.sleep(0)
    return m / max(_mono() - t0, 1e-9)


async def _until_fired(stamps: Sequence[_Tick] | Sequence[_Stamp], bound: float) -> None:
    end = _mono() + bound
    while any(x.fired < 0 for x in stamps):
        if _mono() > end:
            left = sum(1 for x in stamps if x.fired < 0)
            raise BenchError(f"timer lateness: {left} of {len(stamps)} timers never fired")
        await asyncio.sleep(0.002)


def _stats(stamps: Sequence[_Tick] | Sequence[_Stamp]) -> dict[str, float]:
    late = sorted((x.fired - x.deadline) * 1e6 for x in stamps)
    early = sum(1 for v in late if v < 0)
    return {
        "p50": percentile(late, 0.50),
        "p99": percentile(late, 0.99),
        "max": late[-1],
        "early": 100.0 * early / len(late),
        "min": late[0],
    }


async def _lateness_aw(m: int, rate: float, delays: list[float]) -> tuple[dict[str, float], float]:
    async with aw.alloc_workqueue("bench-lateness") as wq:
        aw.queue_work(wq, aw.Work(_noop))  # bind to this loop, start a worker
        await aw.flush_workqueue(wq)
        ticks = [_Tick() for _ in range(m)]
        qd = aw.queue_delayed_work

        def arm(i: int) -> None:
            w = ticks[i]
            d = delays[i]
            t = _mono()
            qd(wq, w, d)
            w.deadline = t + d

        achieved = await _quiet_gc(_paced(m, rate, arm))
        await _until_fired(ticks, 10.0)
        return _stats(ticks), achieved


async def _lateness_lp(m: int, rate: float, delays: list[float]) -> tuple[dict[str, float], float]:
    stamps = [_Stamp() for _ in range(m)]
    call_later = asyncio.get_running_loop().call_later

    def arm(i: int) -> None:
        x = stamps[i]
        d = delays[i]
        t = _mono()
        call_later(d, x.fire)
        x.deadline = t + d

    achieved = await _quiet_gc(_paced(m, rate, arm))
    await _until_fired(stamps, 10.0)
    return _stats(stamps), achieved


class _FloorStamp(_Stamp):
    __slots__ = ("loop", "ms")

    def __init__(self, loop: asyncio.AbstractEventLoop, ms: bool) -> None:
        super().__init__()
        self.loop = loop
        self.ms = ms

    def set(self) -> None:
        when = self.deadline
        if self.ms:
            when = math.ceil(when * 1000.0) / 1000.0
        self.loop.call_at(when, self.check)

    def check(self) -> None:
        if _mono() < self.deadline:
            self.set()  # the loop's timer fired early: never run early (R8)
        else:
            self.fire()


async def _lateness_floor(
    m: int, rate: float, delays: list[float]
) -> tuple[dict[str, float], float]:
    loop = asyncio.get_running_loop()
    # The library's test (TimerHeap.clock): a loop without a declared float clock resolution
    # (uvloop) has a millisecond clock; deadlines are on time.monotonic(), as this module's are.
    ms = not isinstance(getattr(loop, "_clock_resolution", None), float)
    stamps = [_FloorStamp(loop, ms) for _ in range(m)]

    def arm(i: int) -> None:
        x = stamps[i]
        x.deadline = _mono() + delays[i]
        x.set()

    achieved = await _quiet_gc(_paced(m, rate, arm))
    await _until_fired(stamps, 10.0)
    return _stats(stamps), achieved


async def _quiet_gc(coro: Coroutine[Any, Any, float]) -> float:
    """Run ``coro`` with the objects that exist now frozen out of the collector's way.

    The collector stays on (allocations during the run still trigger it), but a full
    collection does not walk the bench's own pre-allocated items: the stalls it would cause
    come from the bench, not from the timers measured.
    """
    gc.collect()
    gc.freeze()
    try:
        return await coro
    finally:
        gc.unfreeze()


async def run_lateness(ctx: Ctx) -> None:
    """Firing lateness at ``sizes.arm_rate`` arms per second, on the real clock.

    aioworkqueue and ``call_later`` take turns, ``sizes.lateness_rounds`` rounds each; the round
    with the lowest p99 of each is reported (the least disturbed by the rest of the machine).
    """
    s = ctx.sizes
    m = s.lateness
    rng = random.Random(1)
    delays = [rng.uniform(0.001, 0.010) for _ in range(m)]
    rate = s.arm_rate
    runs: dict[str, list[tuple[dict[str, float], float]]] = {AW: [], BASE: [], FLOOR: []}
    for rnd in range(s.lateness_rounds):
        for who, fn in ((AW, _lateness_aw), (BASE, _lateness_lp), (FLOOR, _lateness_floor)):
            ctx.progress.show(
                f"{who}, {m:,} timers at {rate:,.0f}/s, round {rnd + 1}/{s.lateness_rounds}"
            )
            runs[who].append(await fn(m, rate, delays))
    results = {who: min(rs, key=lambda r: r[0]["p99"]) for who, rs in runs.items()}

    titles = {
        "p50": ("us", "Timer lateness, median"),
        "p99": ("us", "Timer lateness, p99"),
        "max": ("us", "Timer lateness, max"),
        "early": ("%", "Timers that fired early (before their delay had passed)"),
    }
    for key, (unit, title) in titles.items():
        g = ctx.results.group(
            f"lateness.{key}",
            f"{title}: {m:,} timers (1-10 ms) armed at {rate:,.0f}/s",
            unit,
            "lower",
            f"{BASE} (baseline)",
        )
        rows = ((AW, "aioworkqueue queue_delayed_work"), (BASE, g.baseline), (FLOOR, FLOOR))
        for who, label in rows:
            st, achieved = results[who]
            g.put(
                ctx.loop_name,
                label,
                Cell(st[key], extra={"arms_per_s": achieved, "min_us": st["min"]}),
            )
