"""Core v2: delayed work on the lean pool (``_lean_timer.py``, ``LeanPool.arm`` / ``mod``).

R8 (never early, on a clock whose timers fire early), R9 (mod: pending or idle, moved onto the
inbox's tail), R10/R11 on armed items, R12 (flush_work ignores a timer, flush_delayed_work fires
it), R13/R14 (flush and drain ignore timers, destroy fires them), R20 (armed items at the loop's
end are reported), R21 (arming takes no room; a timer that fires queues over the bound), the
claim that makes a fire at once and the timer's own fire place an instance once, and arming from
other threads. Virtual time (``tests/vclock.py``) wherever the timing matters.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

import aioworkqueue as aw
from tests.conftest import ExpectedErrors, settle
from tests.vclock import run_virtual

from .test_core_v2 import lean_wq


class D(aw.DelayedWork):
    __slots__ = ("label",)

    def __init__(self, func: aw.WorkFunc, label: object = None) -> None:
        super().__init__(func)
        self.label = label


def test_r8_never_early_ties_in_arming_order_and_an_ordered_queue_takes_fire_order() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        wq = lean_wq("v2-t-order", max_active=1)
        runs: list[tuple[object, float]] = []

        async def fn(w: D) -> None:
            runs.append((w.label, loop.time()))

        t0 = loop.time()
        items = {k: D(fn, k) for k in "abcd"}
        assert aw.queue_delayed_work(wq, items["a"], 3.0)
        assert aw.queue_delayed_work(wq, items["b"], 1.0)
        assert aw.queue_delayed_work(wq, items["c"], 1.0)  # the same deadline: after b
        assert not aw.queue_delayed_work(wq, items["b"], 0.1)  # R1: armed is pending
        assert aw.delayed_work_pending(items["b"]) and items["b"].pending
        assert aw.queue_delayed_work(wq, items["d"], 0)  # 0: queued at once
        st = wq.stats()
        assert (st.queued, st.armed, st.in_flight) == (4, 3, 1)
        await asyncio.sleep(5)
        assert [r[0] for r in runs] == ["d", "b", "c", "a"]
        want = {"a": 3.0, "b": 1.0, "c": 1.0, "d": 0.0}
        for label, at in runs:
            assert at - t0 >= want[label]  # type: ignore[index]  # R8, although timers fire early
        st = wq.stats()
        assert (st.completed, st.armed, st.in_flight) == (4, 0, 0)
        await aw.destroy_workqueue(wq)

    run_virtual(main, early=0.4)


def test_r9_mod_moves_a_pending_instance_and_arms_an_idle_one() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        wq = lean_wq("v2-t-mod", max_active=1)
        runs: list[tuple[object, float]] = []
        gate = asyncio.Event()

        async def fn(w: D) -> None:
            runs.append((w.label, loop.time()))
            if w.label == "gate":
                await gate.wait()

        t0 = loop.time()
        a, b, g = D(fn, "a"), D(fn, "b"), D(fn, "gate")
        assert not aw.mod_delayed_work(wq, a, 5.0)  # idle: armed, False
        assert aw.mod_delayed_work(wq, a, 1.0)  # armed: re-armed, True
        await asyncio.sleep(2)
        assert runs == [("a", t0 + 1.0)]
        # Queued and not started, behind a running item: mod 0 moves it to the tail.
        assert aw.queue_work(wq, g)
        await settle()
        assert aw.queue_work(wq, a) and aw.queue_work(wq, b)
        assert aw.mod_delayed_work(wq, a, 0)
        # Queued, moved onto a timer: it leaves the line.
        assert aw.mod_delayed_work(wq, b, 10.0)
        st = wq.stats()
        assert (st.queued, st.armed, st.cancelled) == (4, 1, 0)  # a move is no cancel
        gate.set()
        await asyncio.sleep(1)
        assert [r[0] for r in runs] == ["a", "gate", "a"]
        await asyncio.sleep(20)
        assert [r[0] for r in runs] == ["a", "gate", "a", "b"]
        # Running and not pending is the idle case; disabled: nothing armed.
        hold = asyncio.Event()

        async def long(w: D) -> None:
            await hold.wait()

        c = D(long, "c")
        assert aw.queue_work(wq, c)
        await settle()
        assert not aw.mod_delayed_work(wq, c, 1.0) and c.pending
        assert aw.cancel_delayed_work(c)
        hold.set()
        await aw.flush_workqueue(wq)
        assert aw.disable_work(c) is False
        assert not aw.mod_delayed_work(wq, c, 1.0) and not c.pending
        assert aw.enable_work(c)
        st = wq.stats()
        assert (st.in_flight, st.armed, st.cancelled, st.completed) == (0, 0, 1, 5)
        await aw.destroy_workqueue(wq)

    run_virtual(main)


def test_r9_a_move_to_another_queue_is_in_flight_there_not_where_it_was() -> None:
    """The model test's counterexample: a moved instance is in flight on the queue it moved
    to (counted neither as a queue there nor as a cancel where it was), queued or armed."""

    async def main() -> None:
        m, o = lean_wq("v2-t-move-m", max_active=2), lean_wq("v2-t-move-o", max_active=1)
        gate = asyncio.Event()

        async def fn(w: D) -> None:
            await gate.wait()

        def flight() -> tuple[tuple[int, int, int, int], ...]:
            return tuple(
                (s.queued, s.cancelled, s.in_flight, s.armed) for s in (m.stats(), o.stats())
            )

        a, b = D(fn, "a"), D(fn, "b")
        assert not aw.mod_delayed_work(m, a, 0)  # idle: queued on m
        assert aw.mod_delayed_work(m, a, 0)  # moved along m: still one instance there
        assert aw.mod_delayed_work(o, a, 0)  # moved to o
        assert flight() == ((1, 0, 0, 0), (0, 0, 1, 0))
        assert not aw.mod_delayed_work(m, b, 5.0)  # armed on m
        assert aw.mod_delayed_work(o, b, 3.0)  # and re-armed on o
        assert flight() == ((2, 0, 0, 0), (0, 0, 1, 1))  # in flight: queued, not armed
        assert aw.cancel_delayed_work(a)  # the cancel counts where it is
        assert flight() == ((2, 0, 0, 0), (0, 1, 0, 1))
        await asyncio.sleep(4)  # b fires on o, and runs there
        assert flight() == ((2, 0, 0, 0), (0, 1, 1, 0))
        gate.set()
        await aw.flush_workqueue(o)
        assert flight() == ((2, 0, 0, 0), (0, 1, 0, 0))
        assert o.stats().completed == 1 and m.stats().completed == 0
        await aw.destroy_workqueue(m)
        await aw.destroy_workqueue(o)

    run_virtual(main)


def test_r10_r11_cancel_an_armed_item_counts_it_at_once_and_it_never_runs() -> None:
    async def main() -> None:
        wq = lean_wq("v2-t-cancel")
        runs: list[object] = []
        a, b = D(lambda w: runs.append("a")), D(lambda w: runs.append("b"))
        assert aw.queue_delayed_work(wq, a, 1.0) and aw.queue_delayed_work(wq, b, 1.0)
        assert aw.cancel_delayed_work(a) and not aw.cancel_delayed_work(a)
        assert await aw.cancel_delayed_work_sync(b) and not b.pending
        st = wq.stats()
        assert (st.cancelled, st.armed, st.in_flight) == (2, 0, 0)
        await asyncio.sleep(3)
        assert runs == []
        assert wq.stats().cancelled == 2  # the timers' garbage entries count nothing more
        assert aw.queue_delayed_work(wq, a, 1.0)  # may be queued again
        await asyncio.sleep(2)
        assert runs == ["a"]
        await aw.destroy_workqueue(wq)

    run_virtual(main)


def test_r12_flush_work_ignores_a_timer_and_flush_delayed_work_fires_it() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        wq = lean_wq("v2-t-flush")
        runs: list[float] = []
        a = D(lambda w: runs.append(loop.time()))
        t0 = loop.time()
        assert aw.queue_delayed_work(wq, a, 100.0)
        assert await aw.flush_work(a) is False  # only armed: not waited for
        assert runs == [] and a.pending
        assert await aw.flush_delayed_work(a) is True
        assert runs == [t0] and not a.pending
        await asyncio.sleep(200)
        assert runs == [t0]  # the timer's own entry is garbage: it never runs twice
        assert await aw.flush_delayed_work(a) is False  # idle
        await aw.destroy_workqueue(wq)

    run_virtual(main)


def test_a_timer_that_comes_while_its_fired_instance_waits_places_nothing() -> None:
    """The claim: flush_delayed_work placed the instance on the inbox, where it waits for a
    max_active slot; its timer then comes. Placing it again would run it twice."""

    async def main() -> None:
        wq = lean_wq("v2-t-claim", max_active=1)
        runs: list[str] = []
        gate = asyncio.Event()

        async def blocker(w: aw.Work) -> None:
            runs.append("blocker")
            await gate.wait()

        d = D(lambda w: runs.append("d"))
        assert aw.queue_work(wq, aw.Work(blocker))
        await settle()
        assert aw.queue_delayed_work(wq, d, 1.0)
        flush = asyncio.ensure_future(aw.flush_delayed_work(d))
        await settle()
        assert d.pending and not flush.done()
        await asyncio.sleep(5)  # its timer came meanwhile
        gate.set()
        assert await flush is True
        await aw.flush_workqueue(wq)
        assert runs == ["blocker", "d"]
        st = wq.stats()
        assert (st.queued, st.completed, st.cancelled, st.in_flight) == (2, 2, 0, 0)
        await aw.destroy_workqueue(wq)

    run_virtual(main)


def test_r13_r14_flush_and_drain_ignore_timers_destroy_fires_them() -> None:
    async def main() -> None:
        wq = lean_wq("v2-t-destroy")
        runs: list[object] = []
        a = D(lambda w: runs.append("a"))
        assert aw.queue_delayed_work(wq, a, 1000.0)
        await aw.flush_workqueue(wq)  # returns at once: an armed timer is not waited for
        await aw.drain_workqueue(wq)
        assert runs == [] and a.pending
        await aw.destroy_workqueue(wq)  # fires it, then drains
        assert runs == ["a"] and not a.pending
        with pytest.raises(aw.WorkqueueDestroyedError):
            aw.queue_delayed_work(wq, a, 1.0)

    run_virtual(main)


def test_r21_arming_takes_no_room_and_a_timer_that_fires_queues_over_the_bound() -> None:
    async def main() -> None:
        wq = lean_wq("v2-t-room", max_active=1, max_pending=2)
        link = wq._lean
        assert link is not None
        gate = asyncio.Event()
        runs: list[object] = []

        async def fn(w: Any) -> None:
            runs.append(w.label)
            if w.label == "g":
                await gate.wait()

        g = D(fn, "g")
        assert aw.queue_work(wq, g)
        await settle()  # running: it holds no room now
        armed = [D(fn, f"t{i}") for i in range(3)]
        for d in armed:
            assert aw.queue_delayed_work(wq, d, 1.0)  # arming is never refused for room
        x, y, z = D(fn, "x"), D(fn, "y"), D(fn, "z")
        assert aw.queue_work(wq, x) and aw.queue_work(wq, y)
        with pytest.raises(aw.WorkqueueFullError):
            aw.queue_work(wq, z)
        with pytest.raises(aw.WorkqueueFullError):
            aw.mod_delayed_work(wq, z, 0)  # idle, to be queued now: refused at the bound
        with pytest.raises(aw.WorkqueueFullError):
            aw.mod_delayed_work(wq, armed[0], 0)  # armed: it would take a room now
        assert not z.pending and armed[0].pending
        assert aw.mod_delayed_work(wq, x, 0)  # queued here already: it keeps its room
        assert aw.cancel_delayed_work(armed[2])  # armed: gives back no room it had not taken
        assert link.room_used() == 2
        await asyncio.sleep(2)  # two timers fire: queued over the bound, never dropped
        assert link.room_used() == 4
        with pytest.raises(aw.WorkqueueFullError):
            aw.queue_work(wq, z)
        gate.set()
        await aw.flush_workqueue(wq)
        assert runs == ["g", "y", "x", "t0", "t1"]
        assert link.room_used() == 0
        assert aw.queue_work(wq, z) and aw.queue_work(wq, g)
        m = D(fn, "m")
        assert not aw.mod_delayed_work(wq, m, 1.0)  # idle, armed: it takes no room either
        assert link.room_used() == 2
        with pytest.raises(aw.WorkqueueFullError):
            aw.queue_work(wq, D(fn, "w"))
        await aw.destroy_workqueue(wq)
        assert link.room_used() == 0

    run_virtual(main)


def test_r20_armed_items_at_the_loops_end_are_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    left: list[D] = []

    async def main() -> None:
        wq = lean_wq("v2-t-end")
        for i in range(3):
            d = D(lambda w: None, i)
            left.append(d)
            assert aw.queue_delayed_work(wq, d, 50.0)
        assert aw.cancel_delayed_work(left[0])

    with caplog.at_level(logging.WARNING, logger="aioworkqueue"):
        run_virtual(main)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "2 items on workqueue 'v2-t-end' did not finish (armed)" in text
    assert not any(d.pending for d in left)


def test_an_arm_that_races_the_loops_end_takes_its_claim_back() -> None:
    async def main() -> None:
        wq = lean_wq("v2-t-late")
        link = wq._lean
        assert link is not None
        link.pool.dead = True  # the end swept the claims before this arm's own look
        d = D(lambda w: None)
        with pytest.raises(aw.WorkqueueLoopError, match="has shut down"):
            link.pool.arm(link, d, 1.0)
        assert not d.pending and not link.armed
        link.pool.dead = False
        await aw.destroy_workqueue(wq)

    run_virtual(main)


def test_an_arm_that_interrupts_the_heap_posts_instead_and_still_fires() -> None:
    """A signal handler on the loop's thread that arms while the loop's task is moving arms
    into the heap (``busy`` held) must not touch the heap: it posts a kick."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        wq = lean_wq("v2-t-busy")
        link = wq._lean
        assert link is not None
        timers = link.pool.timers
        runs: list[float] = []
        t0 = loop.time()
        d = D(lambda w: runs.append(loop.time()))
        assert timers.busy.acquire(False)  # as the interrupted task holds it
        try:
            assert aw.queue_delayed_work(wq, d, 1.0)
            assert timers.heap == [] and len(timers.arming) == 1 and timers.kick_armed
        finally:
            timers.busy.release()
        await asyncio.sleep(2)
        assert runs == [t0 + 1.0]
        await aw.destroy_workqueue(wq)

    run_virtual(main)


def test_garbage_of_cancelled_timers_is_compacted() -> None:
    async def main() -> None:
        wq = lean_wq("v2-t-garbage")
        link = wq._lean
        assert link is not None
        keep = D(lambda w: None)
        assert aw.queue_delayed_work(wq, keep, 10_000.0)
        for _ in range(2000):
            d = D(lambda w: None)
            assert aw.queue_delayed_work(wq, d, 10_000.0)
            assert aw.cancel_delayed_work(d)
        assert link.pool.timers.size() <= 130  # compacted at twice the live entries (>= 64)
        assert wq.stats().armed == 1 and wq.stats().cancelled == 2000
        await aw.destroy_workqueue(wq)

    run_virtual(main)


def test_threads_arm_and_cancel_every_true_runs_once_never_early(
    expect_errors: ExpectedErrors,
) -> None:
    n_threads, per = 4, 300
    done: dict[int, int] = {}
    early: list[float] = []
    armed_at: dict[int, float] = {}

    async def main() -> None:
        wq = lean_wq("v2-t-threads")
        loop = asyncio.get_running_loop()
        lock = threading.Lock()
        cancelled = 0

        def fn(w: D) -> None:
            k = w.label
            assert isinstance(k, int)
            lag = time.monotonic() - armed_at[k]
            if lag < 0.002 - 1e-9:
                early.append(lag)
            done[k] = done.get(k, 0) + 1

        def producer(t: int) -> None:
            nonlocal cancelled
            for i in range(per):
                k = t * per + i
                d = D(fn, k)
                armed_at[k] = time.monotonic()
                assert aw.queue_delayed_work(wq, d, 0.002)
                if i % 3 == 0 and aw.cancel_delayed_work(d):
                    with lock:
                        cancelled += 1
                    done[k] = done.get(k, 0) - 1  # cancelled: it must not run

        threads = [threading.Thread(target=producer, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        while any(th.is_alive() for th in threads):
            await asyncio.sleep(0.005)
        for th in threads:
            th.join()
        deadline = loop.time() + 10
        while wq.stats().armed or wq.stats().in_flight:
            assert loop.time() < deadline
            await asyncio.sleep(0.005)
        await aw.flush_workqueue(wq)
        st = wq.stats()
        assert st.cancelled == cancelled
        assert st.completed + st.cancelled == n_threads * per
        await aw.destroy_workqueue(wq)

    asyncio.run(main())
    assert not early
    assert set(done.values()) <= {1, -1}  # ran once, or cancelled and never ran
    assert len(done) == n_threads * per
    assert not expect_errors.records


def test_lean_delayed_work_is_served_only_on_cpu_0() -> None:
    async def main() -> None:
        wq = lean_wq("v2-t-cpu")
        d = D(lambda w: None)
        with pytest.raises(ValueError, match="only cpu 0"):
            aw.queue_delayed_work_on(1, wq, d, 1.0)
        with pytest.raises(ValueError, match="only cpu 0"):
            aw.queue_work_on(1, wq, d)
        assert not d.pending
        assert aw.queue_delayed_work_on(0, wq, d, 1.0)
        assert aw.mod_delayed_work_on(0, wq, d, 0)
        await aw.flush_work(d)
        assert aw.queue_work_on(0, wq, d)
        await aw.destroy_workqueue(wq)

    run_virtual(main)
