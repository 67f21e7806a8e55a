"""Opt-in timing statistics (SPEC §4): started, CPU time, queue-to-start latency.

Both clocks are replaced by manual ones (``_timing.clock``, ``_timing.cpu_clock``): the items
move them, so every number asserted here is exact and nothing depends on the machine's speed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

import aioworkqueue as aw
from aioworkqueue import _timing
from aioworkqueue._hooks import HOOKS


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class ThreadCPU(threading.local):
    """A CPU clock per thread, as ``time.thread_time`` is; items advance their own thread's."""

    t = 0.0

    def __call__(self) -> float:
        return self.t

    def burn(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clocks(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ManualClock, ThreadCPU]]:
    wall, cpu = ManualClock(), ThreadCPU()
    monkeypatch.setattr(_timing, "clock", wall)
    monkeypatch.setattr(_timing, "cpu_clock", cpu)
    aw.enable_timing()
    try:
        yield wall, cpu
    finally:
        aw.disable_timing()
    assert not HOOKS.on and HOOKS.run is None


@pytest.mark.asyncio
async def test_timing_off_reports_none() -> None:
    async with aw.alloc_workqueue("untimed") as wq:
        aw.queue_work(wq, aw.Work(lambda w: None))
        await wq.flush()
        st = wq.stats()
    assert (st.started, st.cpu_time, st.latency_p50, st.latency_max) == (None, None, None, None)
    assert HOOKS.run is None and not HOOKS.on


@pytest.mark.asyncio
async def test_latency_percentiles_come_from_log2_buckets(
    clocks: tuple[ManualClock, ThreadCPU],
) -> None:
    wall, _ = clocks
    async with aw.alloc_workqueue("lat") as wq:
        aw.queue_work(wq, aw.Work(lambda w: None))  # queued at 0.0: waits 2 s
        wall.t = 1.997
        aw.queue_work(wq, aw.Work(lambda w: None))  # waits 3 ms
        wall.t = 1.9997
        for _ in range(98):
            aw.queue_work(wq, aw.Work(lambda w: None))  # wait 300 us each
        wall.t = 2.0
        await wq.flush()
        st = wq.stats()
    assert st.started == 100
    # 300 us lies in [256, 512) us: reported as 512 us; 3 ms in [2048, 4096) us; max is exact.
    assert st.latency_p50 == st.latency_p90 == 512e-6
    assert st.latency_p99 == 4096e-6
    assert st.latency_max == pytest.approx(2.0)
    assert st.cpu_time == 0.0  # the manual CPU clock never moved


@pytest.mark.asyncio
async def test_a_coroutine_is_charged_for_its_own_steps_only(
    clocks: tuple[ManualClock, ThreadCPU],
) -> None:
    _, cpu = clocks
    gate = asyncio.Event()

    async def sleeper(w: aw.Work) -> None:
        cpu.burn(3.0)
        await gate.wait()  # suspended: the hog below runs on this thread meanwhile
        cpu.burn(1.0)

    async def hog(w: aw.Work) -> None:
        cpu.burn(5.0)
        gate.set()

    async with aw.alloc_workqueue("sleepy") as a, aw.alloc_workqueue("hoggy") as b:
        aw.queue_work(a, aw.Work(sleeper))
        aw.queue_work(b, aw.Work(hog))
        await a.flush()
        await b.flush()
        # Measured from execute_start to execute_end, sleeper would be charged 3 + 5 + 1.
        assert a.stats().cpu_time == 4.0
        assert b.stats().cpu_time == 5.0
        assert a.stats().started == b.stats().started == 1


@pytest.mark.asyncio
async def test_cpu_of_every_kind_of_item(clocks: tuple[ManualClock, ThreadCPU]) -> None:
    _, cpu = clocks
    loop = asyncio.get_running_loop()

    def plain(w: aw.Work) -> None:
        cpu.burn(1.0)

    def returns_a_future(w: aw.Work) -> asyncio.Future[None]:
        cpu.burn(2.0)
        fut = loop.create_future()
        loop.call_soon(fut.set_result, None)
        return fut

    async def fails(w: aw.Work) -> None:
        cpu.burn(4.0)
        await asyncio.sleep(0)
        raise ValueError("counted all the same")

    def in_a_thread(w: aw.Work) -> None:
        cpu.burn(8.0)  # the worker thread's own CPU clock

    async def submitted(x: float) -> None:
        cpu.burn(x)

    failures: list[BaseException] = []
    async with aw.alloc_workqueue(
        "kinds", exception_handler=lambda wq, w, exc: failures.append(exc)
    ) as wq:
        for fn in (plain, returns_a_future, fails):
            aw.queue_work(wq, aw.Work(fn))
        wq.submit(submitted, 16.0)
        await wq.flush()
        st = wq.stats()
    assert (st.started, st.cpu_time, st.failed) == (4, 1.0 + 2.0 + 4.0 + 16.0, 1)
    assert [type(e) for e in failures] == [ValueError]
    async with aw.alloc_workqueue("threaded", aw.WQ.CPU_INTENSIVE) as tq:
        aw.queue_work(tq, aw.Work(in_a_thread))
        await tq.flush()
        assert tq.stats().cpu_time == 8.0
    async with aw.alloc_workqueue("bh", aw.WQ.BH) as bq:
        aw.queue_work(bq, aw.Work(plain))  # no worker task: timed from start to end
        await bq.flush()
        assert (bq.stats().started, bq.stats().cpu_time) == (1, 1.0)


@pytest.mark.asyncio
async def test_a_delayed_item_waits_from_its_activation(
    clocks: tuple[ManualClock, ThreadCPU],
) -> None:
    wall, _ = clocks
    async with aw.alloc_workqueue("delayed") as wq:
        dw = aw.DelayedWork(lambda w: None)
        aw.queue_delayed_work(wq, dw, 1000)
        wall.t = 5.0
        await aw.flush_delayed_work(dw)  # fires the timer now, at 5.0: no latency
        st = wq.stats()
    assert st.started == 1 and st.latency_max == 0.0 and st.latency_p99 == 0.0


@pytest.mark.asyncio
async def test_switching_off_keeps_the_numbers_and_stops_counting(
    clocks: tuple[ManualClock, ThreadCPU],
) -> None:
    async with aw.alloc_workqueue("onoff") as wq:
        aw.queue_work(wq, aw.Work(lambda w: None))
        await wq.flush()
        aw.disable_timing()
        assert HOOKS.run is None
        aw.queue_work(wq, aw.Work(lambda w: None))
        await wq.flush()
        assert wq.stats().started == 1 and wq.stats().completed == 2
        aw.enable_timing()
        aw.enable_timing()  # twice: no effect
        assert HOOKS.instruments.count(_timing._STATE.instrument) == 1
        aw.queue_work(wq, aw.Work(lambda w: None))
        await wq.flush()
        assert wq.stats().started == 2


@pytest.mark.asyncio
async def test_stamps_of_cancelled_items_are_pruned(
    clocks: tuple[ManualClock, ThreadCPU], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_timing, "_PRUNE_MIN", 8)
    _timing._STATE.prune_at = 8
    gate = asyncio.Event()

    async def blocker(w: aw.Work) -> None:
        await gate.wait()

    async with aw.alloc_workqueue("pruned", 0, 1) as wq:
        try:
            aw.queue_work(wq, aw.Work(blocker))
            await asyncio.sleep(0)
            for _ in range(50):
                w = aw.Work(lambda w: None)
                aw.queue_work(wq, w)
                aw.cancel_work(w)
            assert len(_timing._STAMPS) <= 16
        finally:
            gate.set()


@pytest.mark.asyncio
async def test_runtime_pools_are_merged(
    clocks: tuple[ManualClock, ThreadCPU],
) -> None:
    _, cpu = clocks

    def item(w: aw.Work) -> None:
        cpu.burn(1.0)  # on whichever pool thread runs it

    async def aitem(w: aw.Work) -> None:
        cpu.burn(0.5)
        await asyncio.sleep(0)
        cpu.burn(0.5)

    async with aw.Runtime(cpus=2, loop_factory="asyncio"):
        wq = aw.alloc_workqueue("spread")
        uq = aw.alloc_workqueue("unbound", aw.WQ.UNBOUND)
        for i in range(20):
            aw.queue_work_on(i % 2, wq, aw.Work(item if i % 3 else aitem))
            aw.queue_work(uq, aw.Work(aitem))
        await wq.flush()
        await uq.flush()
        assert wq._timing is not None and len(wq._timing) == 2  # one per pool thread
        st, ust = wq.stats(), uq.stats()
    assert (st.started, st.cpu_time, st.latency_max) == (20, 20.0, 0.0)
    assert (ust.started, ust.cpu_time) == (20, 20.0)
