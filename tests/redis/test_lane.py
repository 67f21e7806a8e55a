"""The scripts' pipelined connection (``_scripts._Lane``): every call gets its own reply, in
any interleaving of callers, and a lost connection fails only the calls in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from redis.exceptions import ConnectionError as RedisConnectionError

import aioworkqueue.redis as awr


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


async def _lane_clients(app: awr.App) -> list[int]:
    """The server's client ids of the lane's connection (named by CLIENT SETNAME below)."""
    out = []
    for c in await app.client.client_list():
        if c.get("name") == "lane":
            out.append(int(c["id"]))
    return out


@pytest.mark.asyncio
async def test_concurrent_calls_each_get_their_own_answer(app: awr.App) -> None:
    wq = app.workqueue("q")
    works = [app.work(f, key=f"k{i % 50}") for i in range(200)]  # each key 4 times
    answers = await asyncio.gather(*(wq.queue(w) for w in works))
    # R1 per key whatever the interleaving: exactly one True per key, and the stream agrees
    per_key: dict[str, int] = {}
    for w, a in zip(works, answers, strict=True):
        per_key[w.key] = per_key.get(w.key, 0) + int(a)
    assert set(per_key.values()) == {1}
    assert await app.client.xlen(wq.keys.stream) == 50
    # errors go to their own caller only
    await app.workqueue("gone").destroy()
    gone = app.workqueue("gone")
    res = await asyncio.gather(
        wq.queue(app.work(f, key="x")),
        gone.queue(app.work(f, key="y")),
        wq.queue(app.work(f, key="z")),
        return_exceptions=True,
    )
    assert res[0] is True and res[2] is True
    assert isinstance(res[1], awr._ops.WorkqueueDestroyedError)


@pytest.mark.asyncio
async def test_a_cancelled_caller_does_not_shift_the_replies(app: awr.App) -> None:
    wq = app.workqueue("c")
    await wq.declare()
    first = asyncio.ensure_future(wq.queue(app.work(f, key="a")))
    await asyncio.sleep(0)  # it has written its command
    first.cancel()
    assert await wq.queue(app.work(f, key="a")) is False  # the first one was queued by then
    assert await wq.queue(app.work(f, key="b")) is True
    assert (await wq.stats())["queued"] == 2


@pytest.mark.asyncio
async def test_a_lost_connection_fails_in_flight_calls_then_reconnects(app: awr.App) -> None:
    wq = app.workqueue("l")
    await wq.declare()
    lane = app.scripts._lane
    conn, _ = await lane._connection()
    await conn.send_command("CLIENT", "SETNAME", "lane")  # its reply goes to the next future
    fut = asyncio.get_running_loop().create_future()
    lane._pending.append(fut)
    assert await fut == b"OK"
    (cid,) = await _lane_clients(app)
    # a call in flight when the connection dies: a BLPOP that would wait 30 s for its reply
    blpop = b"*3\r\n$5\r\nBLPOP\r\n$4\r\nnone\r\n$2\r\n30\r\n"
    blocked = asyncio.ensure_future(lane.call(blpop))
    deadline = time.monotonic() + 10
    while not any(c.get("cmd") == "blpop" for c in await app.client.client_list()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await app.client.client_kill_filter(_id=cid)
    with pytest.raises(RedisConnectionError, match="connection lost"):
        await asyncio.wait_for(blocked, 10)
    assert await wq.queue(app.work(f, key="after")) is True  # a new connection
    assert await _lane_clients(app) == []  # the old one is gone


def test_an_app_used_on_two_loops_reconnects(redis_url: str, key_prefix: str) -> None:
    app = awr.App(url=redis_url, prefix=key_prefix)
    app.function(f, name="f")
    wq = app.workqueue("two")

    async def once(k: str) -> bool:
        return await wq.queue(app.work(f, key=k))

    assert asyncio.run(once("a")) is True
    assert asyncio.run(once("b")) is True  # the first loop's connection is not reused

    async def close() -> None:
        await app.aclose()

    asyncio.run(close())
