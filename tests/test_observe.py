"""Statistics and show_state() (SPEC §4)."""

from __future__ import annotations

import asyncio

import pytest

import aioworkqueue as aw
from tests.conftest import settle


@pytest.mark.asyncio
async def test_max_active_hits_are_counted() -> None:
    gate = asyncio.Event()

    async def fn(w: aw.Work) -> None:
        await gate.wait()

    async with aw.alloc_workqueue("hits", 0, 1) as wq:
        for _ in range(3):
            aw.queue_work(wq, aw.Work(fn))
        await settle()
        st = wq.stats()
        assert (st.max_active_hits, st.running, st.pending) == (2, 1, 2)
        gate.set()


@pytest.mark.asyncio
async def test_show_state_names_running_items_and_waiting_flushes() -> None:
    gate = asyncio.Event()

    async def blocker(w: aw.Work) -> None:
        await gate.wait()

    async with aw.alloc_workqueue("stuckq", 0, 1) as wq:
        aw.queue_work(wq, aw.Work(blocker))
        aw.queue_work(wq, aw.Work(blocker))
        await settle()
        flusher = asyncio.create_task(wq.flush())
        await settle()
        dump = aw.show_state()
        assert "pool cpu=0:" in dump
        assert "running <Work fn=" in dump and "blocker" in dump and "'stuckq'" in dump
        assert "workqueue 'stuckq': in_flight=2 pending=1 running=1 armed=0 flushers=1" in dump
        gate.set()
        await flusher
    assert "stuckq" not in aw.show_state()


@pytest.mark.asyncio
async def test_runtime_stats_report_pools_and_queues() -> None:
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def blocker(w: aw.Work) -> None:
        while not gate.is_set():
            await asyncio.sleep(0.001)

    async with aw.Runtime(cpus=2, loop_factory="asyncio") as rt:
        wq = aw.alloc_workqueue("rts", 0, 1)
        aw.queue_work_on(0, wq, aw.Work(blocker))
        aw.queue_work_on(0, wq, aw.Work(blocker))
        for _ in range(1000):
            st = rt.stats()
            if st.pools[0].running == 1:
                break
            await asyncio.sleep(0.001)
        st = rt.stats()
        assert [p.cpu for p in st.pools] == [0, 1]
        assert st.pools[0].running == 1 and st.pools[1].running == 0
        (qs,) = [q for q in st.workqueues if q.name == "rts"]
        assert (qs.in_flight, qs.running, qs.max_active_hits) == (2, 1, 1)
        assert "pool cpu=1:" in aw.show_state()
        loop.call_soon(gate.set)
        await aw.flush_workqueue(wq)


@pytest.mark.asyncio
async def test_show_state_says_how_long_items_run_while_timing_is_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aioworkqueue import _timing

    gate = asyncio.Event()
    wall = [100.0]
    monkeypatch.setattr(_timing, "clock", lambda: wall[0])

    async def blocker(w: aw.Work) -> None:
        await gate.wait()

    async with aw.alloc_workqueue("slowq") as wq:
        try:
            aw.queue_work(wq, aw.Work(blocker))
            await settle()
            dump = aw.show_state()
            assert "running <Work fn=" in dump and " for " not in dump
            assert "shown while timing is on: aioworkqueue.enable_timing()" in dump
            gate.set()
            await wq.flush()
            gate.clear()
            aw.enable_timing()
            aw.queue_work(wq, aw.Work(blocker))
            await settle()
            wall[0] = 102.5
            dump = aw.show_state()
            assert "blocker" in dump and "on workqueue 'slowq' for 2.500 s" in dump
            assert "enable_timing()" not in dump
        finally:
            aw.disable_timing()
            gate.set()


@pytest.mark.asyncio
async def test_show_state_counts_pending_armed_and_every_kind_of_waiter() -> None:
    gate = asyncio.Event()

    async def blocker(w: aw.Work) -> None:
        await gate.wait()

    async with aw.alloc_workqueue("waitq", 0, 1) as wq:
        running, pending = aw.Work(blocker), aw.Work(blocker)
        dw = aw.DelayedWork(lambda w: None)
        waits: list[asyncio.Task[object]] = []
        try:
            aw.queue_work(wq, running)
            aw.queue_work(wq, pending)  # waits for the only slot
            aw.queue_delayed_work(wq, dw, 1000)
            await settle()
            waits += [
                asyncio.create_task(aw.flush_work(running)),
                asyncio.create_task(aw.flush_work(running)),
                asyncio.create_task(aw.flush_work(pending)),
                asyncio.create_task(wq.flush()),
            ]
            await settle()
            dump = aw.show_state()
            lines = dump.splitlines()
            assert (
                "workqueue 'waitq': in_flight=2 pending=1 running=1 armed=1 flushers=1 "
                "flush_work_waiters=3"
            ) in lines, dump
            assert any(
                line.startswith("  running <Work fn=")
                and line.endswith("(2 waiting for its run in flush_work/cancel_*_sync)")
                for line in lines
            ), dump
            assert (
                f"  waited on: {pending!r} (1 waiting for its pending instance in "
                "flush_work/cancel_*_sync)"
            ) in lines
            assert (
                f"  waited on: {running!r} (2 waiting for its run in flush_work/cancel_*_sync)"
            ) in lines
            assert "flush_work/cancel_*_sync calls waiting in all: 3" in lines
        finally:
            gate.set()
            aw.cancel_delayed_work(dw)
            await asyncio.gather(*waits)
    assert "waitq" not in aw.show_state()
