"""The per-pool timer heap of ``_timer.py`` (R8, R9, R10), on the virtual clock.

One heap of ``(deadline, gen, dwork)`` per pool and one loop timer for its earliest deadline:
deadlines fire in order (ties in arming order), a cancelled or re-armed entry is garbage that is
skipped and compacted away, the loop timer moves when an earlier deadline arrives (also from
another thread), and a loop whose timers fire early never gets an item queued early.
"""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import pytest

import aioworkqueue as aw
from aioworkqueue._pool import Pool
from tests.vclock import VirtualClockLoop, run_virtual


class Stamped(aw.DelayedWork):
    __slots__ = ("due", "label", "log")

    def __init__(self, log: list[tuple[object, float]], label: object) -> None:
        super().__init__(Stamped.run)
        self.log = log
        self.label = label
        self.due = 0.0

    @staticmethod
    def run(w: Stamped) -> None:
        w.log.append((w.label, asyncio.get_running_loop().time()))


def pool_of(wq: aw.Workqueue) -> Pool:
    pwq = wq._pwq
    assert pwq is not None
    pool = pwq.pool
    assert isinstance(pool, Pool)
    return pool


async def until_idle(wq: aw.Workqueue) -> None:
    while wq.stats().armed:
        await asyncio.sleep(0.0001)
    await wq.flush()


@pytest.mark.parametrize("early", [0.0, 0.001])
def test_many_deadlines_fire_in_order_and_never_early(early: float) -> None:
    rng = random.Random(7)

    async def main() -> tuple[list[tuple[object, float]], dict[object, float]]:
        loop = asyncio.get_running_loop()
        log: list[tuple[object, float]] = []
        due: dict[object, float] = {}
        async with aw.alloc_workqueue("heap-order", max_active=1) as wq:
            for i in range(400):
                # Few distinct delays: many equal deadlines, which keep their arming order.
                delay = rng.choice((0.001, 0.0025, 0.01, 0.3, 2.0)) * rng.choice((1, 1, 3))
                w = Stamped(log, i)
                due[i] = loop.time() + delay
                assert aw.queue_delayed_work(wq, w, delay)
                if i % 50 == 49:
                    await asyncio.sleep(0.0007)  # arm some while others are due
            assert pool_of(wq).timers.heap  # one heap holds them
            await until_idle(wq)
        return log, due

    log, due = run_virtual(main, early=early)
    assert len(log) == 400
    order = [label for label, _ in log]
    assert order == sorted(order, key=lambda i: (due[i], i))  # deadline, then arming order
    assert all(t >= due[label] for label, t in log)  # R8, on this loop's clock


def test_cancel_and_rearm_leave_garbage_that_is_skipped_and_compacted() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        log: list[tuple[object, float]] = []
        async with aw.alloc_workqueue("heap-lazy") as wq:
            items = [Stamped(log, i) for i in range(10)]
            t0 = loop.time()
            for i, w in enumerate(items):
                assert aw.queue_delayed_work(wq, w, 1.0 + i)
            pool = pool_of(wq)
            assert (len(pool.timers.heap), pool.timers.dead) == (10, 0)
            for w in items[:5]:  # five of ten: garbage is not more than half yet
                assert aw.cancel_delayed_work(w)
            assert (len(pool.timers.heap), pool.timers.dead) == (10, 5)
            assert not aw.cancel_delayed_work(items[0])  # not pending any more
            # Re-arm one: its old entry is garbage too, which makes more than half: compacted.
            assert aw.mod_delayed_work(wq, items[5], 0.5) is True
            assert (len(pool.timers.heap), pool.timers.dead) == (5, 0)
            assert sorted(e[2].label for e in pool.timers.heap) == [5, 6, 7, 8, 9]
            # Cancel the earliest: the loop timer set for it finds garbage and moves on.
            assert aw.cancel_delayed_work(items[5])
            await until_idle(wq)
            assert [label for label, _ in log] == [6, 7, 8, 9]
            for label, t in log:
                assert t >= t0 + 1.0 + label  # type: ignore[operator]
            assert pool.timers.heap == [] and pool.timers.dead == 0
            # A cancelled item can be armed again, and fires once.
            assert aw.queue_delayed_work(wq, items[0], 0.25)
            await until_idle(wq)
            assert [label for label, _ in log] == [6, 7, 8, 9, 0]

    run_virtual(main)


def test_an_earlier_deadline_moves_the_loop_timer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        log: list[tuple[object, float]] = []
        async with aw.alloc_workqueue("heap-retime") as wq:
            late, soon = Stamped(log, "late"), Stamped(log, "soon")
            t0 = loop.time()
            assert aw.queue_delayed_work(wq, late, 10.0)
            pool = pool_of(wq)
            assert pool.timers.when == late._deadline
            first = pool.timers.handle
            assert aw.queue_delayed_work(wq, soon, 1.0)
            assert pool.timers.when == soon._deadline  # moved to the earlier deadline
            assert first is not None and first.cancelled()
            third = Stamped(log, "third")
            assert aw.queue_delayed_work(wq, third, 5.0)  # not the earliest: timer untouched
            assert pool.timers.when == soon._deadline
            await until_idle(wq)
            assert log == [("soon", t0 + 1.0), ("third", t0 + 5.0), ("late", t0 + 10.0)]

    run_virtual(main)


def test_an_earlier_deadline_armed_from_another_thread_moves_the_loop_timer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        log: list[tuple[object, float]] = []
        async with aw.alloc_workqueue("heap-thread") as wq:
            late = Stamped(log, "late")
            assert aw.queue_delayed_work(wq, late, 100.0)
            pool = pool_of(wq)
            soon = Stamped(log, "soon")
            armed_at: list[float] = []

            def other() -> None:
                armed_at.append(loop.time())
                assert aw.queue_delayed_work(wq, soon, 2.0)
                assert pool.timers.kick  # the loop is asked to move its timer; not touched here

            th = threading.Thread(target=other)
            th.start()
            th.join()
            assert pool.timers.when == late._deadline
            while not log:
                await asyncio.sleep(0.5)
            # Had the timer stayed at 100 s, the virtual clock would have jumped there.
            assert log == [("soon", armed_at[0] + 2.0)]
            assert not pool.timers.kick
            assert aw.cancel_delayed_work(late)

    run_virtual(main)


def test_a_loop_timer_that_fires_early_never_queues_early() -> None:
    """VirtualClockLoop(early=...) fires loop timers up to that much before their time, as
    uvloop does: the heap's timer finds nothing due and is set again for the remainder."""
    fired: list[float] = []

    async def main() -> list[tuple[object, float]]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualClockLoop)
        log: list[tuple[object, float]] = []
        async with aw.alloc_workqueue("heap-early") as wq:
            items = []
            for i, delay in enumerate((0.0005, 0.003, 0.003, 0.0101, 1.0)):
                w = Stamped(log, i)
                w.due = loop.time() + delay
                items.append(w)
                assert aw.queue_delayed_work(wq, w, delay)
            pool = pool_of(wq)
            real = loop.call_at

            def spy(when: float, cb: Any, *args: Any, **kw: Any) -> asyncio.TimerHandle:
                if getattr(cb, "__name__", "") == "_expire":  # the heap's timer, not a sleep
                    fired.append(when)
                return real(when, cb, *args, **kw)

            loop.call_at = spy  # type: ignore[method-assign]
            try:
                await until_idle(wq)
            finally:
                del loop.call_at
            assert pool.timers.heap == []
            assert {label for label, _ in log} == set(range(5))
            for label, t in log:
                assert t >= items[label].due  # type: ignore[index]  # never early (R8)
        return log

    run_virtual(main, early=0.004)
    # The timer was set again for a deadline it had already been set for: it fired early.
    assert len(fired) > len(set(fired))
