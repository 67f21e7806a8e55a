"""Statistics and show_state() (SPEC §4)."""

from __future__ import annotations

import asyncio

import pytest

import aioworkqueue as aw


async def settle(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


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
