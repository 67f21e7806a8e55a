"""The batched calls: ``queue_work_many`` and the worker's batched start and finish scripts.

Each batch is one script call; these tests check that a batch answers exactly what the same
calls one by one would have (R1 per item, R3, R7), and what it does when the queue refuses.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

import aioworkqueue
import aioworkqueue.redis as awr
from aioworkqueue.redis import _ops

from .test_ops import read


def f(*args: Any) -> None:
    pass


@pytest_asyncio.fixture
async def app(redis_url: str, key_prefix: str) -> AsyncIterator[awr.App]:
    a = awr.App(url=redis_url, prefix=key_prefix)
    a.function(f, name="f")
    try:
        yield a
    finally:
        await a.aclose()


async def _commands(app: awr.App, name: str) -> int:
    """How many times the server ran command ``name`` so far (INFO commandstats)."""
    info: Any = await app.client.info("commandstats")
    return int(info.get(f"cmdstat_{name}", {}).get("calls", 0))


@pytest.mark.asyncio
async def test_queue_work_many_answers_r1_per_item_in_one_script(app: awr.App) -> None:
    wq = app.workqueue("q")
    already = app.work(f, key="p")
    assert await wq.queue(already) is True
    works = [
        app.work(f, key="a"),
        app.work(f, key="p"),  # pending before the batch
        app.work(f, key="b"),
        app.work(f, key="a"),  # the same key earlier in this batch
        app.work(f, 1),
        app.work(f, 1),  # equal calls are one item
    ]
    await app.client.script_load(app.scripts._src["queue_many"])  # no NOSCRIPT retry counted
    before = await _commands(app, "evalsha")
    answers = await awr.queue_work_many(wq, works)
    assert await _commands(app, "evalsha") - before == 1  # one script for the whole batch
    assert answers == [True, False, True, False, True, False]
    assert [k for _, k in await read(wq, "A")] == ["p", "a", "b", works[4].key]
    assert (await wq.stats())["queued"] == 4
    assert all(w.workqueue is wq for w in works)
    assert await works[3].pending() is True  # it asks the queue it was handed to
    assert await wq.queue_many([app.work(f, key="b"), app.work(f, key="c")]) == [False, True]
    assert await awr.queue_work_many(wq, []) == []


@pytest.mark.asyncio
async def test_queue_work_many_on_a_destroyed_queue_raises_and_queues_nothing(
    app: awr.App,
) -> None:
    wq = app.workqueue("gone")
    await wq.destroy()  # nothing queued: it returns at once
    works = [app.work(f, key="a"), app.work(f, key="b")]
    with pytest.raises(aioworkqueue.WorkqueueDestroyedError, match="a batch of 2"):
        await awr.queue_work_many(wq, works)
    assert await app.client.exists(wq.keys.stream) == 0
    assert all(w.workqueue is None for w in works)


@pytest.mark.asyncio
async def test_queue_work_many_draining_refuses_outside_its_items(app: awr.App) -> None:
    wq = app.workqueue("d")
    await wq.call("set_state", "draining")
    with pytest.raises(aioworkqueue.WorkqueueDrainingError):
        await wq.queue_many([app.work(f, key="a")])
    token = awr._app.RUNNING_IN.set((app.prefix, "d"))  # as inside one of its own items
    try:
        assert await wq.queue_many([app.work(f, key="a")]) == [True]
    finally:
        awr._app.RUNNING_IN.reset(token)


@pytest.mark.asyncio
async def test_queue_work_many_max_pending_counts_the_whole_batch(app: awr.App) -> None:
    wq = app.workqueue("b", max_pending=3)
    assert await wq.queue(app.work(f, key="a")) is True
    over = [app.work(f, key=k) for k in ("b", "c", "d")]
    with pytest.raises(aioworkqueue.WorkqueueFullError):
        await wq.queue_many(over)
    assert await app.client.xlen(wq.keys.stream) == 1  # nothing of the batch went in
    # duplicates and items already pending take no room: this one fits exactly
    fits = [app.work(f, key=k) for k in ("a", "b", "b", "c", "a")]
    assert await wq.queue_many(fits) == [False, True, False, True, False]
    assert (await wq.stats())["pending"] == 3
    assert await wq.queue_many([app.work(f, key="a")]) == [False]  # pending first, as queue_work


@pytest.mark.asyncio
async def test_queue_work_many_bad_arguments(app: awr.App) -> None:
    wq = app.workqueue("t")
    with pytest.raises(TypeError, match="iterable"):
        await awr.queue_work_many(wq, app.work(f, key="a"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RemoteWork"):
        await awr.queue_work_many(wq, [app.work(f, key="a"), object()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="RemoteWorkqueue"):
        await awr.queue_work_many(object(), [])  # type: ignore[arg-type]
    assert await app.client.exists(wq.keys.stream) == 0


def test_running_in_has_a_value_in_any_context(app: awr.App) -> None:
    # A loop started in a context the import never saw (a second asyncio.Runner, as the bench's
    # uvloop pass) must find "not inside an item", not a LookupError.
    wq = app.workqueue("c")
    assert contextvars.Context().run(_ops._chained, wq) == "0"
