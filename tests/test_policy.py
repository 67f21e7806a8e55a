"""The policy predicates of pools and workers (``_pool.py``): each decision, asked of the
predicate, and made by the path that takes it inline (the worker loop, queue_work)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import aioworkqueue as aw
from aioworkqueue._lock import LOCK
from aioworkqueue._pool import (
    _BATCH,
    Pool,
    may_activate,
    may_activate_inactive,
    need_resched,
)
from aioworkqueue._pwq import Pwq


def _link(wq: aw.Workqueue) -> Pwq:
    pwq = wq._pwq
    assert pwq is not None
    return pwq


async def _until(cond: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(10):
            while not cond():
                await asyncio.sleep(0)
    except TimeoutError:
        raise AssertionError(f"not reached within 10 s: {what}") from None


def test_need_resched_after_a_batch() -> None:
    assert not need_resched(0)
    assert not need_resched(_BATCH - 1)
    assert need_resched(_BATCH)


@pytest.mark.asyncio
async def test_a_worker_keeps_working_through_a_batch_then_lets_the_loop_run() -> None:
    """keep_working and need_resched, inline in the worker loop: items that never await run
    back to back on one worker, and after a batch the worker yields to the loop."""
    loop = asyncio.get_running_loop()
    ran: list[asyncio.Task[object] | None] = []
    seen: list[int] = []
    wq = aw.alloc_workqueue("policy-batch")
    for _ in range(2 * _BATCH + 10):
        aw.queue_work(wq, aw.Work(lambda w: ran.append(asyncio.current_task())))
    loop.call_soon(lambda: seen.append(len(ran)))  # runs at the worker's first yield
    async with asyncio.timeout(10):
        await aw.flush_workqueue(wq)
    assert seen == [_BATCH]
    assert len(set(ran[:_BATCH])) == 1  # one worker, back to back
    pool = _link(wq).pool
    with LOCK:
        assert not pool.keep_working()  # nothing left: the worker parks
        assert pool.may_start_working()  # and a parked worker can be woken
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_need_more_worker_leaves_a_successor_for_items_that_await() -> None:
    """need_more_worker, inline after a take: items that await fan out over several workers."""
    gate = asyncio.Event()
    started = 0

    async def job(w: aw.Work) -> None:
        nonlocal started
        started += 1
        await gate.wait()

    wq = aw.alloc_workqueue("policy-fanout", max_active=3)
    works = [aw.Work(job) for _ in range(3)]
    for w in works:
        assert aw.queue_work(wq, w)
    await _until(lambda: started == 3, "three running at once")
    pool = _link(wq).pool
    with LOCK:
        assert pool.nr_workers >= 3
        assert not pool.need_more_worker()  # nothing waits
    gate.set()
    async with asyncio.timeout(10):
        await aw.flush_workqueue(wq)
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_pool_predicates_decide_on_the_pools_state() -> None:
    pool = Pool(asyncio.get_running_loop(), 0, max_workers=2)
    with LOCK:
        assert not pool.need_more_worker() and not pool.keep_working()
        pool.worklist.append(aw.Work(lambda w: None))
        assert pool.need_more_worker() and pool.keep_working()
        pool.nr_waking = 1  # a worker is on its way: no second one
        assert not pool.need_more_worker() and pool.keep_working()
        pool.nr_waking = 0
        pool.stopping = True  # a runtime shutdown: nothing new starts
        assert not pool.need_more_worker() and not pool.keep_working()
        pool.stopping = False
        pool.worklist.clear()
        pool.ub.append(aw.Work(lambda w: None))  # a runtime's shared unbound list counts too
        assert pool.need_more_worker() and pool.keep_working()

        assert not pool.may_start_working()  # no parked worker
        assert pool.may_create_worker()
        pool.nr_workers = 2
        assert not pool.may_create_worker()  # max_workers reached


@pytest.mark.asyncio
async def test_a_parked_worker_is_woken_rather_than_a_new_one_started() -> None:
    """may_start_working in Pool._wake_local (and inline in queue_work)."""
    wq = aw.alloc_workqueue("policy-idle")
    assert aw.queue_work(wq, aw.Work(lambda w: None))
    async with asyncio.timeout(10):
        await aw.flush_workqueue(wq)
    pool = _link(wq).pool
    await _until(lambda: len(pool.idle) == pool.nr_workers, "every worker parked")
    n = pool.nr_workers
    for _ in range(5):
        assert aw.queue_work(wq, aw.Work(lambda w: None))
        async with asyncio.timeout(10):
            await aw.flush_workqueue(wq)
    assert pool.nr_workers == n
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_max_active_predicates_decide_activation_and_hand_on_r7() -> None:
    """may_activate (queue_work inline, Pwq.insert) and may_activate_inactive (the worker's
    end of a run inline, Pwq._release_slot)."""
    gates = [asyncio.Event() for _ in range(3)]
    order: list[int] = []

    def make(i: int) -> aw.Work:
        async def job(w: aw.Work) -> None:
            order.append(i)
            await gates[i].wait()

        return aw.Work(job)

    wq = aw.alloc_workqueue("policy-r7", max_active=2)
    works = [make(i) for i in range(3)]
    assert aw.queue_work(wq, works[0])
    pwq = _link(wq)
    with LOCK:
        assert may_activate(pwq)
    assert aw.queue_work(wq, works[1])
    with LOCK:
        assert not may_activate(pwq)  # both slots taken
        assert not may_activate_inactive(pwq)  # nothing waits for a slot
    assert aw.queue_work(wq, works[2])
    with LOCK:
        assert list(pwq.inactive) == [works[2]]
        assert may_activate_inactive(pwq)  # the next slot that frees goes on to it
    await _until(lambda: order == [0, 1], "two running")
    gates[0].set()
    await _until(lambda: order == [0, 1, 2], "the third on the freed slot")
    with LOCK:
        assert pwq.nr_active == 2 and not pwq.inactive
    gates[1].set()
    gates[2].set()
    async with asyncio.timeout(10):
        await aw.flush_workqueue(wq)
    with LOCK:
        assert pwq.nr_active == 0 and may_activate(pwq)
    await aw.destroy_workqueue(wq)
