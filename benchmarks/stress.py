"""Multi-thread stress of the per-CPU runtime, with exact accounting (SPEC R1-R4, R9-R11).

``threads`` plain threads each make ``ops`` random calls (``queue_work``, ``queue_work_on``,
``queue_delayed_work[_on]``, ``mod_delayed_work[_on]``, ``cancel_work``, ``cancel_delayed_work``)
on ``items`` shared :class:`aioworkqueue.DelayedWork` items spread over three workqueues of a
``Runtime(cpus=2)``: a per-CPU one with ``max_active`` 4, a ``WQ.UNBOUND`` one and an ordered
one. The work function sometimes queues its own item again and sometimes awaits. Every return
value is tallied per thread and per item; once the threads are done and every item is idle, each
item must satisfy R4 exactly::

    runs == queue_* True + mod_delayed_work False (it armed an idle item) + requeues True
            - cancel_* True

(``mod_delayed_work`` returning True re-armed an instance that was already pending: no new run.)
A lock in each item checks R3: an item never runs concurrently with itself.

Seeded and bounded: the operation sequence of thread ``t`` comes from ``random.Random(seed + t)``
(the interleaving of threads is up to the scheduler), and every wait has a timeout that, if hit,
is reported as a failure instead of hanging.

Run: ``python benchmarks/stress.py --threads 8 --ops 50000 --items 64 --loop both --seed 1``.
Exit status 1 if anything was lost, duplicated, overlapped, stuck, or raised.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aioworkqueue as aw

__all__ = ("StressResult", "main", "run_stress")

#: A running item queues itself again on every REQUEUE_EVERY-th run, and awaits on every
#: SLEEP_EVERY-th run (so runs fan out over workers and pools, and R3 has something to guard).
REQUEUE_EVERY = 5
SLEEP_EVERY = 3
#: Delays of the delayed operations: 0 (queue at once) half of the time, else this range.
DELAY_MIN, DELAY_MAX = 0.0005, 0.002
#: How many mismatching items ``StressResult.problems`` describes in detail.
MAX_DETAILS = 10


class Item(aw.DelayedWork):
    """A shared work item that counts its runs and detects overlapping runs of itself."""

    __slots__ = (
        "active",
        "index",
        "mu",
        "overlaps",
        "pending_at_end",
        "requeues",
        "runs",
        "where",
        "wqs",
    )

    def __init__(self, index: int, wqs: list[aw.Workqueue]) -> None:
        super().__init__(Item.run)
        self.index = index
        self.wqs = wqs
        self.mu = threading.Lock()  # guards every counter below: pool threads all touch them
        self.active = 0
        self.overlaps = 0
        self.runs = 0
        self.requeues = 0
        self.pending_at_end = 0  # runs at whose end the item was queued again (R2 at work)
        self.where: list[str] = []  # first overlaps: which threads ran it at once

    @staticmethod
    async def run(w: Item) -> None:
        me = threading.current_thread().name
        with w.mu:
            w.active += 1
            if w.active > 1:
                w.overlaps += 1
                if len(w.where) < 4:
                    w.where.append(f"run {w.runs + 1} on {me} while {w.active - 1} other(s) ran")
            w.runs += 1
            n = w.runs
        try:
            if n % REQUEUE_EVERY == 0 and aw.queue_work(w.wqs[n % len(w.wqs)], w):
                with w.mu:
                    w.requeues += 1
            if n % SLEEP_EVERY == 0:
                await asyncio.sleep(0)
        finally:
            pending = aw.work_pending(w)
            with w.mu:
                w.active -= 1
                w.pending_at_end += pending


@dataclass
class StressResult:
    """What one stress run did and what it found (all counts are totals over the items)."""

    loop: str
    threads: int
    ops_total: int
    items: int
    seed: int
    runs: int = 0
    successful_queues: int = 0  # queue_* True + mod_delayed_work False + requeues True
    successful_cancels: int = 0
    mod_rearms: int = 0  # mod_delayed_work returned True: a pending instance re-armed
    mod_arms: int = 0  # mod_delayed_work returned False: an idle item armed (a queue)
    requeues: int = 0  # queue_work from the item's own run returned True
    lost: int = 0  # successful queues - cancels that never ran
    duplicated: int = 0  # runs beyond that
    overlaps: int = 0  # runs that started while the same item was running
    pending_at_end: int = 0  # runs that ended with their item pending again (queued meanwhile)
    stuck: int = 0  # items still busy when the final wait timed out
    errors: int = 0  # exceptions in work functions or in the producer threads
    unfinished: int = 0  # what the runtime's shutdown reported as not finished
    elapsed: float = 0.0  # seconds, the whole run (start of the runtime to its end)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.overlaps
            or self.stuck
            or self.errors
            or self.unfinished
        )

    def line(self) -> str:
        return (
            f"loop={self.loop} threads={self.threads} ops={self.ops_total} runs={self.runs} "
            f"queues={self.successful_queues} cancels={self.successful_cancels} "
            f"mod_rearms={self.mod_rearms} mod_arms={self.mod_arms} requeues={self.requeues} "
            f"pending_at_end={self.pending_at_end} lost={self.lost} "
            f"duplicated={self.duplicated} overlaps={self.overlaps} "
            f"stuck={self.stuck} errors={self.errors} elapsed={self.elapsed:.2f}s"
        )


class _Tally:
    """One producer thread's counts per item (touched by that thread only)."""

    __slots__ = ("arms", "cancels", "queues", "rearms")

    def __init__(self, n: int) -> None:
        self.queues = [0] * n  # queue_* returned True
        self.cancels = [0] * n  # cancel_* returned True
        self.rearms = [0] * n  # mod_delayed_work returned True
        self.arms = [0] * n  # mod_delayed_work returned False


@dataclass
class _Setup:
    """What every producer thread shares (read-only, except ``failures``: list.append)."""

    seed: int
    ops: int
    cpus: int
    items: list[Item]
    wqs: list[aw.Workqueue]
    failures: list[str]


def _producer(t: int, su: _Setup, tally: _Tally) -> None:
    rng = random.Random(su.seed + t)
    rand, randrange, uniform = rng.random, rng.randrange, rng.uniform
    items, wqs, cpus = su.items, su.wqs, su.cpus
    n, nwq = len(items), len(wqs)
    queues, cancels, rearms, arms = tally.queues, tally.cancels, tally.rearms, tally.arms
    queue_work, queue_work_on = aw.queue_work, aw.queue_work_on
    queue_delayed, queue_delayed_on = aw.queue_delayed_work, aw.queue_delayed_work_on
    mod, mod_on = aw.mod_delayed_work, aw.mod_delayed_work_on
    cancel_work, cancel_delayed = aw.cancel_work, aw.cancel_delayed_work
    sleep = time.sleep
    try:
        for k in range(su.ops):
            if not k & 15:
                sleep(0)  # let the pool threads have the GIL now and then
            i = randrange(n)
            w = items[i]
            wq = wqs[randrange(nwq)]
            r = rand()
            if r < 0.45:
                d = 0.0 if rand() < 0.5 else uniform(DELAY_MIN, DELAY_MAX)
                if r < 0.15:
                    queues[i] += queue_work(wq, w)
                elif r < 0.22:
                    queues[i] += queue_work_on(randrange(cpus), wq, w)
                elif r < 0.38:
                    queues[i] += queue_delayed(wq, w, d)
                else:
                    queues[i] += queue_delayed_on(randrange(cpus), wq, w, d)
            elif r < 0.65:
                d = 0.0 if rand() < 0.5 else uniform(DELAY_MIN, DELAY_MAX)
                ok = mod(wq, w, d) if r < 0.58 else mod_on(randrange(cpus), wq, w, d)
                if ok:
                    rearms[i] += 1
                else:
                    arms[i] += 1
            elif r < 0.83:
                cancels[i] += cancel_work(w)
            else:
                cancels[i] += cancel_delayed(w)
    except BaseException as exc:
        su.failures.append(f"producer thread {t} raised {exc!r}")


async def _all_idle(items: list[Item], wqs: list[aw.Workqueue]) -> None:
    """Flush until no item is pending or running (armed timers are fired by the flushes)."""
    while True:
        for it in items:
            await aw.flush_delayed_work(it)
        for wq in wqs:
            await aw.flush_workqueue(wq)
        if not any(aw.work_busy(it) for it in items):
            return
        await asyncio.sleep(0.001)


async def _host(res: StressResult, ops: int, cpus: int, loop_factory: str, limit: float) -> None:
    errors: list[str] = []
    errors_mu = threading.Lock()

    def on_error(wq: Any, work: Any, exc: BaseException) -> None:
        with errors_mu:
            errors.append(f"{work!r} on {getattr(wq, 'name', wq)!r} raised {exc!r}")

    rt = aw.Runtime(cpus=cpus, loop_factory=loop_factory, exception_handler=on_error)
    async with rt:
        wqs = [
            aw.alloc_workqueue("stress-percpu", 0, 4),
            aw.alloc_workqueue("stress-unbound", aw.WQ.UNBOUND),
            aw.alloc_ordered_workqueue("stress-ordered"),
        ]
        items = [Item(i, wqs) for i in range(res.items)]
        tallies = [_Tally(res.items) for _ in range(res.threads)]
        failures: list[str] = []
        threads = [
            threading.Thread(
                target=_producer,
                args=(t, _Setup(res.seed, ops, cpus, items, wqs, failures), tallies[t]),
                name=f"stress/{t}",
                daemon=True,
            )
            for t in range(res.threads)
        ]
        for th in threads:
            th.start()
        deadline = time.monotonic() + limit
        for th in threads:
            await asyncio.to_thread(th.join, max(0.0, deadline - time.monotonic()))
        hung = [th.name for th in threads if th.is_alive()]
        if hung:
            # A producer that does not finish in time is stuck in the library (its calls never
            # block). The threads are daemons; report and go no further.
            res.problems.append(f"producer threads still running after {limit}s: {hung}")
            res.stuck = len(hung)
            res.errors = len(errors) + len(failures)
            return
        try:
            async with asyncio.timeout(limit):
                await _all_idle(items, wqs)
        except TimeoutError:
            busy = [it for it in items if aw.work_busy(it)]
            res.stuck = len(busy)
            res.problems += [
                f"item {it.index} still busy after {limit}s: {aw.work_busy(it)!r} "
                f"state={it._state:#x} runs={it.runs}"
                for it in busy[:MAX_DETAILS]
            ]
        _account(res, items, tallies)
    res.unfinished = len(rt.unfinished)
    res.problems += [
        f"unfinished at shutdown: {w!r} on {q.name!r} ({s})"
        for w, q, s in rt.unfinished[:MAX_DETAILS]
    ]
    res.errors = len(errors) + len(failures)
    res.problems += (failures + errors)[:MAX_DETAILS]


def _account(res: StressResult, items: list[Item], tallies: list[_Tally]) -> None:
    details = 0
    for i, it in enumerate(items):
        q = sum(t.queues[i] for t in tallies)
        c = sum(t.cancels[i] for t in tallies)
        rearm = sum(t.rearms[i] for t in tallies)
        arm = sum(t.arms[i] for t in tallies)
        with it.mu:
            runs, rq, overlaps, where = it.runs, it.requeues, it.overlaps, list(it.where)
            res.pending_at_end += it.pending_at_end
        expected = q + arm + rq - c
        res.runs += runs
        res.successful_queues += q + arm + rq
        res.successful_cancels += c
        res.mod_rearms += rearm
        res.mod_arms += arm
        res.requeues += rq
        res.overlaps += overlaps
        res.lost += max(0, expected - runs)
        res.duplicated += max(0, runs - expected)
        if (runs != expected or overlaps) and details < MAX_DETAILS:
            details += 1
            res.problems.append(
                f"item {i}: runs={runs} expected={expected} (queue_* True={q}, mod False={arm}, "
                f"requeues={rq}, cancel True={c}; mod True={rearm}) overlaps={overlaps} {where}"
            )


def run_stress(
    *,
    threads: int,
    ops: int,
    items: int,
    loop_factory: str,
    seed: int,
    cpus: int = 2,
    timeout: float = 60.0,
    switch_interval: float | None = None,
) -> StressResult:
    """Run one stress round on a fresh ``Runtime(cpus, loop_factory)`` and return the figures.

    ``ops`` is per thread. ``timeout`` bounds each wait (the producers, the final flushes); a
    timeout is reported in ``stuck`` and ``problems``, never a hang. The host loop is of the same
    kind as the pools' (``asyncio`` or ``uvloop``). ``switch_interval``, if given, is the
    interpreter's thread switch interval during the run (``sys.setswitchinterval``; smaller means
    finer interleaving of the threads); it is restored afterwards.
    """
    res = StressResult(
        loop=loop_factory, threads=threads, ops_total=threads * ops, items=items, seed=seed
    )
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if loop_factory == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    old_interval = sys.getswitchinterval()
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    start = time.perf_counter()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_host(res, ops, cpus, loop_factory, timeout))
    finally:
        res.elapsed = time.perf_counter() - start
        sys.setswitchinterval(old_interval)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--ops", type=int, default=50_000, help="operations per thread")
    p.add_argument("--items", type=int, default=64)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="both")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0, help="bound of each wait, seconds")
    p.add_argument(
        "--switch-interval", type=float, default=None, help="sys.setswitchinterval during runs"
    )
    a = p.parse_args(argv)
    loops = ["asyncio", "uvloop"] if a.loop == "both" else [a.loop]
    failed = False
    for lf in loops:
        r = run_stress(
            threads=a.threads,
            ops=a.ops,
            items=a.items,
            loop_factory=lf,
            seed=a.seed,
            cpus=a.cpus,
            timeout=a.timeout,
            switch_interval=a.switch_interval,
        )
        print(r.line(), flush=True)
        for prob in r.problems:
            print(f"  {prob}", flush=True)
        failed |= not r.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
