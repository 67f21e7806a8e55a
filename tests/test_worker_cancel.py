"""A worker task cancelled from outside at any await it makes between items loses nothing.

A worker yields to the loop every few hundred items (the kernel's ``cond_resched``). A cancel
delivered there (``asyncio.run`` ending the loop, a test runner, anyone holding the task) must
not take an item with it: the item it had taken, marked running and then dropped with the
worker, was neither run nor reported (issue 13; the shutdown ledger caught it, 3 in 4648).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

import aioworkqueue as aw

N = 1000  # several worker batches


def test_items_of_a_worker_cancelled_between_them_all_run_once() -> None:
    ran: list[int] = []

    def job(i: int) -> None:
        ran.append(i)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # the worker's own task: delivered at its next await, whichever that is

    async def main() -> None:
        wq = aw.alloc_workqueue("worker-cancel", max_active=1)
        for i in range(N):
            wq.submit(job, i)
        async with asyncio.timeout(10):
            await aw.flush_workqueue(wq)
        await aw.destroy_workqueue(wq)

    asyncio.run(main())
    assert sorted(ran) == list(range(N))


def test_a_loop_ending_mid_batch_reports_every_item_it_did_not_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The loop ends (every task cancelled, as ``asyncio.run`` does) while a worker is between
    two items of a long burst: what did not run is reported, nothing goes silent (R20)."""
    ran: list[int] = []
    wqs: list[aw.Workqueue] = []
    total = 3 * N

    def job(i: int) -> None:
        ran.append(i)
        if i == N // 2:  # mid-burst: end the loop the way asyncio.run does
            for t in asyncio.all_tasks():
                t.cancel()

    async def main() -> None:
        wq = aw.alloc_workqueue("worker-cancel-end", max_active=1)
        wqs.append(wq)
        for i in range(total):
            wq.submit(job, i)
        await asyncio.Event().wait()  # until the loop ends

    caplog.set_level(logging.WARNING, logger="aioworkqueue")
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    stats = wqs[0].stats()
    assert len(set(ran)) == len(ran)
    assert len(ran) + stats.cancelled == total, (len(ran), stats.cancelled)


def test_a_work_requeueing_itself_still_lets_the_loop_run() -> None:
    """A sync item requeueing itself is a burst that never empties; the worker still yields to
    the loop every batch (now before it takes an item, no longer while holding one)."""
    turns: list[int] = []
    runs: list[int] = []

    def again(w: aw.Work) -> None:
        runs.append(len(turns))
        if len(runs) < N:
            assert aw.queue_work(wq, w)

    async def ticker() -> None:
        while len(runs) < N:
            turns.append(len(runs))
            await asyncio.sleep(0)

    async def main() -> None:
        nonlocal wq
        wq = aw.alloc_workqueue("worker-rerun")
        assert aw.queue_work(wq, aw.Work(again))
        t = asyncio.create_task(ticker())
        async with asyncio.timeout(10):
            await aw.flush_workqueue(wq)
        await t

    wq: aw.Workqueue
    asyncio.run(main())
    assert len(runs) == N
    # the ticker ran between reruns, not only before the first and after the last
    assert len({r for r in runs}) > 2, sorted(set(runs))
