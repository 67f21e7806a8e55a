"""A stopping worker in this process: the stop deadline made now, and a run that will not stop
(docs/redis.md, "Stopping a worker: the hand-back")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import aioworkqueue.redis as awr


@pytest_asyncio.fixture
async def app(redis_url: str, key_prefix: str) -> AsyncIterator[awr.App]:
    a = awr.App(url=redis_url, prefix=key_prefix)
    try:
        yield a
    finally:
        await a.aclose()


@pytest.mark.asyncio
async def test_stop_now_hands_back_without_waiting_for_the_stop_timeout(app: awr.App) -> None:
    started = asyncio.Event()

    @app.function
    async def long() -> None:
        started.set()
        await asyncio.Event().wait()

    wq = app.workqueue("n")
    w = app.worker(queues=["n"], concurrency=1, lease=600, stop_timeout=600)
    await w.__aenter__()
    await wq.queue(app.work(long))
    await asyncio.wait_for(started.wait(), 10)
    w.stop_now()
    await asyncio.wait_for(w.__aexit__(None, None, None), 10)  # not the 600 s stop timeout
    assert (w.handed_back, w.left) == (1, 0)
    st = await wq.stats()
    assert (st["handedback"], st["active"], st["completed"]) == (1, 1, 0)  # its slot is kept


@pytest.mark.asyncio
async def test_a_run_that_ignores_its_cut_is_left_to_the_lease_not_handed_back(
    app: awr.App,
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    @app.function
    async def stubborn() -> None:
        started.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            await release.wait()  # goes on: handing it back could run it twice at once (R3)

    wq = app.workqueue("s")
    w = app.worker(queues=["s"], concurrency=1, lease=600, stop_timeout=0.05)
    await w.__aenter__()
    await wq.queue(app.work(stubborn))
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.wait_for(w.__aexit__(None, None, None), 10)
    assert (w.handed_back, w.left) == (0, 1)
    assert (await wq.stats())["handedback"] == 0
    release.set()  # it ends on its own; the worker's finisher still sends its finish
    await asyncio.wait_for(wq.flush(), 10)
    st = await wq.stats()
    assert (st["completed"], st["redelivered"], st["active"]) == (1, 0, 0)
