"""R18 (freezing) and R19 (forward progress of WQ.MEM_RECLAIM queues)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import aioworkqueue as aw
from tests.conftest import settle


class Item(aw.Work):
    __slots__ = ("label",)

    def __init__(self, func: aw.WorkFunc, label: str) -> None:
        super().__init__(func)
        self.label = label


@pytest_asyncio.fixture
async def thawed() -> AsyncIterator[None]:
    """Never leave the process frozen, whatever the test did."""
    yield
    aw.thaw_workqueues()


@pytest.mark.asyncio
async def test_r18_freeze_waits_for_running_items_and_holds_queued_ones(thawed: None) -> None:
    gate = asyncio.Event()
    started: list[str] = []

    async def fn(w: Item) -> None:
        started.append(w.label)
        if w.label == "a":
            await gate.wait()

    async with (
        aw.alloc_workqueue("frz", aw.WQ.FREEZABLE, 4) as fq,
        aw.alloc_workqueue("plain") as pq,
    ):
        aw.queue_work(fq, Item(fn, "a"))
        await settle()
        assert started == ["a"]
        freezer = asyncio.create_task(aw.freeze_workqueues())
        await settle()
        assert not freezer.done()  # "a" still runs
        for label in ("b", "c"):
            assert aw.queue_work(fq, Item(fn, label))  # accepted, but waits
        aw.queue_work(pq, Item(fn, "x"))  # not freezable: runs
        await settle()
        assert started == ["a", "x"]
        gate.set()
        await asyncio.wait_for(freezer, 5)
        await settle()
        assert started == ["a", "x"]  # frozen: b and c wait, none lost
        assert fq.stats().pending == 2
        aw.thaw_workqueues()
        await fq.flush()
    assert started == ["a", "x", "b", "c"]


@pytest.mark.asyncio
async def test_r18_queue_first_used_while_frozen_starts_frozen(thawed: None) -> None:
    ran: list[str] = []
    await aw.freeze_workqueues()  # nothing runs: returns at once
    async with aw.alloc_workqueue("late", aw.WQ.FREEZABLE) as fq:
        aw.queue_work(fq, aw.Work(lambda w: ran.append("late")))
        aw.queue_work(aw.system_freezable_wq, aw.Work(lambda w: ran.append("sys")))
        await settle()
        assert ran == []
        aw.thaw_workqueues()
        await fq.flush()
        await aw.flush_workqueue(aw.system_freezable_wq)
    assert sorted(ran) == ["late", "sys"]


@pytest.mark.asyncio
async def test_r18_thaw_releases_a_freeze_that_still_waits(thawed: None) -> None:
    gate = asyncio.Event()

    async def fn(w: aw.Work) -> None:
        await gate.wait()

    async with aw.alloc_workqueue("frz2", aw.WQ.FREEZABLE) as fq:
        aw.queue_work(fq, aw.Work(fn))
        await settle()
        freezer = asyncio.create_task(aw.freeze_workqueues())
        await settle()
        aw.thaw_workqueues()
        await asyncio.wait_for(freezer, 5)
        gate.set()


@pytest.mark.asyncio
async def test_r19_mem_reclaim_queue_makes_progress_when_every_worker_is_stuck() -> None:
    aw.configure(max_workers=2)  # pools created from now on (this test's loop) get 2 workers
    try:
        block = asyncio.Event()
        started: list[str] = []

        async def stuck(w: Item) -> None:
            started.append(w.label)
            await block.wait()

        rescued = asyncio.Event()
        async with (
            aw.alloc_workqueue("normal", 0, 8) as normal,
            aw.alloc_workqueue("reclaim", aw.WQ.MEM_RECLAIM) as reclaim,
        ):
            aw.queue_work(normal, Item(stuck, "s1"))
            aw.queue_work(normal, Item(stuck, "s2"))
            await settle()
            assert started == ["s1", "s2"]  # both workers are stuck
            aw.queue_work(normal, Item(stuck, "s3"))
            aw.queue_work(reclaim, aw.Work(lambda w: rescued.set()))
            await asyncio.wait_for(rescued.wait(), 5)  # ran on the reserved worker
            await settle()
            assert started == ["s1", "s2"]  # max_workers still holds for the others
            block.set()
            await normal.flush()
            assert started == ["s1", "s2", "s3"]
            st = reclaim.stats()
            assert st.mayday == 1 and st.rescued == 1 and normal.stats().rescued == 0
    finally:
        aw.configure(max_workers=1024)


@pytest.mark.asyncio
async def test_r19_reclaim_item_waiting_before_saturation_is_rescued_too() -> None:
    """The MEM_RECLAIM item was queued while a worker was on its way, which then got stuck."""
    aw.configure(max_workers=1)
    try:
        block = asyncio.Event()
        rescued = asyncio.Event()

        async def stuck(w: aw.Work) -> None:
            await block.wait()

        async with (
            aw.alloc_workqueue("n1") as normal,
            aw.alloc_workqueue("r1", aw.WQ.MEM_RECLAIM) as reclaim,
        ):
            aw.queue_work(normal, aw.Work(stuck))  # the only worker will take this one...
            aw.queue_work(reclaim, aw.Work(lambda w: rescued.set()))  # ...and this waits
            await asyncio.wait_for(rescued.wait(), 5)
            block.set()
    finally:
        aw.configure(max_workers=1024)


@pytest.mark.asyncio
async def test_r18_overlapping_freezes_both_return(thawed: None) -> None:
    gate = asyncio.Event()

    async def fn(w: aw.Work) -> None:
        await gate.wait()

    async with aw.alloc_workqueue("frz3", aw.WQ.FREEZABLE) as fq:
        aw.queue_work(fq, aw.Work(fn))
        await settle()
        first = asyncio.create_task(aw.freeze_workqueues())
        await settle()
        second = asyncio.create_task(aw.freeze_workqueues())
        await settle()
        gate.set()
        await asyncio.wait_for(asyncio.gather(first, second), 5)


@pytest.mark.asyncio
async def test_r18_freeze_from_a_freezable_work_item_raises(thawed: None) -> None:
    caught: list[BaseException] = []

    async def fn(w: aw.Work) -> None:
        try:
            await aw.freeze_workqueues()
        except aw.WorkqueueDeadlockError as exc:
            caught.append(exc)

    async with aw.alloc_workqueue("frz4", aw.WQ.FREEZABLE) as fq:
        aw.queue_work(fq, aw.Work(fn))
        await fq.flush()
    assert len(caught) == 1 and "'frz4'" in str(caught[0])
