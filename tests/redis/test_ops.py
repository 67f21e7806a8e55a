"""The operations against a real server, driven step by step (docs/redis.md, "The scripts").

Two fake workers ("A" and "B") read with XREADGROUP and call the start / finish / promote
scripts themselves, so every interleaving here is chosen by the test, with no sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

import aioworkqueue
import aioworkqueue.redis as awr
from aioworkqueue.redis._keys import GROUP

LEASE = 60_000


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


async def read(wq: awr.RemoteWorkqueue, consumer: str, count: int = 10) -> list[tuple[str, str]]:
    """A fake worker reads: returns (entry id, key) of what it got."""
    resp: Any = await wq.app.client.xreadgroup(GROUP, consumer, {wq.keys.stream: ">"}, count=count)
    out = []
    for _s, entries in resp or ():
        for eid, fields in entries:
            out.append((eid.decode(), fields[b"k"].decode()))
    return out


async def start(wq: awr.RemoteWorkqueue, e: tuple[str, str], consumer: str) -> str:
    return (await wq.call("start", e[0], e[1], consumer, LEASE)).decode()


async def finish(
    wq: awr.RemoteWorkqueue, e: tuple[str, str], consumer: str, outcome: str = "ok"
) -> tuple[str, str] | None:
    nxt = await wq.call("finish", e[0], e[1], consumer, outcome, LEASE, "1")
    return (nxt[0].decode(), nxt[1].decode()) if nxt else None


@pytest.mark.asyncio
async def test_r1_second_queue_work_is_false_and_changes_nothing(app: awr.App) -> None:
    wq = app.workqueue("q")
    w = app.work(f, 1)
    assert await awr.queue_work(wq, w) is True
    assert await wq.queue(app.work(f, 1)) is False  # same key: the same item
    assert await app.client.xlen(wq.keys.stream) == 1
    assert (await wq.stats())["queued"] == 1
    assert await w.pending() is True
    assert await awr.work_busy(w) == aioworkqueue.WorkBusy.PENDING
    assert await wq.queue(app.work(f, 2)) is True  # other arguments, other item


@pytest.mark.asyncio
async def test_r2_pending_clears_at_start_and_may_queue_again(app: awr.App) -> None:
    wq = app.workqueue("q")
    w = app.work(f, key="k")
    await wq.queue(w)
    (e,) = await read(wq, "A")
    assert await w.pending() is True
    assert await start(wq, e, "A") == "run"
    assert await w.pending() is False
    assert await w.busy() == aioworkqueue.WorkBusy.RUNNING
    assert await wq.queue(w) is True  # R2
    assert await w.busy() == aioworkqueue.WorkBusy.RUNNING | aioworkqueue.WorkBusy.PENDING
    # R3 across consumers: B reads the second instance while A still runs the first
    (e2,) = await read(wq, "B")
    assert await start(wq, e2, "B") == "deferred"
    assert await finish(wq, e, "A") == e2  # handed to A, started in the same script
    assert await w.busy() == aioworkqueue.WorkBusy.RUNNING
    assert await finish(wq, e2, "A") is None
    assert await w.busy() == aioworkqueue.WorkBusy(0)
    st = await wq.stats()
    assert (st["started"], st["completed"], st["active"]) == (2, 2, 0)


@pytest.mark.asyncio
async def test_r10_cancel_of_queued_and_armed_and_it_never_runs(app: awr.App) -> None:
    wq = app.workqueue("q")
    a, b = app.work(f, key="a"), app.work(f, key="b")
    await wq.queue(a)
    assert await wq.queue_delayed(b, 1000) is True
    assert await awr.cancel_work(a) is True
    assert await b.cancel() is True
    assert await a.cancel() is False  # not pending any more
    assert await read(wq, "A") == []  # the cancelled entry is gone from the stream
    await wq.call("promote", "1")  # even firing every timer finds nothing
    assert await read(wq, "A") == []
    assert (await wq.stats())["cancelled"] == 2


@pytest.mark.asyncio
async def test_cancel_after_read_before_start_skips(app: awr.App) -> None:
    wq = app.workqueue("q")
    w = app.work(f, key="a")
    await wq.queue(w)
    (e,) = await read(wq, "A")
    assert await w.cancel() is True
    assert await start(wq, e, "A") == "skip"
    assert (await wq.stats())["started"] == 0
    assert await app.client.xpending(wq.keys.stream, GROUP) == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


@pytest.mark.asyncio
async def test_r8_delayed_never_promotes_before_the_server_clock_says(app: awr.App) -> None:
    wq = app.workqueue("q")
    far = app.work(f, key="far")
    assert await wq.queue_delayed(far, 3600) is True
    assert await wq.queue_delayed(far, 1) is False  # R8: pending, nothing changes
    n, wait = await wq.call("promote", "0")
    assert n == 0 and wait > 3_500_000  # measured on the server's TIME
    assert await read(wq, "A") == []
    # a due time already past (written as the script would, 1 s ago on the server's clock)
    t = await app.client.time()
    now_ms = t[0] * 1000 + t[1] // 1000
    await app.client.hset(wq.keys.pend, "due", "d")
    await app.client.zadd(wq.keys.delayed, {"due": now_ms - 1000})
    await app.client.hset(wq.keys.dpay, "due", "1:f[[], {}]")
    n, _ = await wq.call("promote", "0")
    assert n == 1
    assert [k for _, k in await read(wq, "A")] == ["due"]
    assert await far.pending() is True


@pytest.mark.asyncio
async def test_r9_mod_delayed_work_answers(app: awr.App) -> None:
    wq = app.workqueue("q")
    w = app.work(f, key="m")
    assert await awr.mod_delayed_work(wq, w, 3600) is False  # idle: armed, False
    assert await w.pending() is True
    assert await wq.mod_delayed(w, 7200) is True  # armed: moved, True
    score = await app.client.zscore(wq.keys.delayed, "m")
    assert await wq.mod_delayed(w, 0) is True  # delay 0: queued at once
    assert score is not None
    assert [k for _, k in await read(wq, "A")] == ["m"]
    # queued, not started (read by A): taken back and armed again
    assert await wq.mod_delayed(w, 3600) is True
    assert await app.client.xlen(wq.keys.stream) == 0
    # a queued entry nobody read yet
    v = app.work(f, key="v")
    await wq.queue(v)
    assert await wq.mod_delayed(v, 3600) is True
    assert await read(wq, "B") == []


@pytest.mark.asyncio
async def test_r13_flush_waits_for_exactly_what_was_queued_before(app: awr.App) -> None:
    wq = app.workqueue("q")
    for i in range(3):
        await wq.queue(app.work(f, key=f"k{i}"))
    ea = await read(wq, "A", 2)
    eb = await read(wq, "B", 1)
    flusher = asyncio.create_task(awr.flush_workqueue(wq))
    await asyncio.sleep(0)
    await wq.queue(app.work(f, key="later"))  # after the barrier: not waited for
    for e in ea:
        assert await start(wq, e, "A") == "run"
    assert await start(wq, eb[0], "B") == "run"
    await finish(wq, ea[0], "A")
    await finish(wq, eb[0], "B")
    await asyncio.sleep(0.05)
    assert not flusher.done()  # ea[1] still runs
    await finish(wq, ea[1], "A")
    await asyncio.wait_for(flusher, 5)  # returns though "later" never ran
    assert await wq.call("stream_len") == 1  # "later" alone is live


@pytest.mark.asyncio
async def test_r12_flush_work(app: awr.App) -> None:
    wq = app.workqueue("q")
    w = app.work(f, key="x")
    assert await w.flush() is False  # idle
    await wq.queue(w)
    (e,) = await read(wq, "A")
    await start(wq, e, "A")
    t = asyncio.create_task(awr.flush_work(w))
    await asyncio.sleep(0.05)
    assert not t.done()
    await finish(wq, e, "A")
    assert await asyncio.wait_for(t, 5) is True


@pytest.mark.asyncio
async def test_r6_ordered_starts_strictly_fifo_across_two_consumers(app: awr.App) -> None:
    wq = app.workqueue("o", ordered=True)
    for i in range(3):
        await wq.queue(app.work(f, key=f"k{i}"))
    (e0,) = await read(wq, "A", 1)
    (e1,) = await read(wq, "B", 1)
    (e2,) = await read(wq, "B", 1)
    assert await start(wq, e1, "B") == "wait"  # e0 has not started
    assert await start(wq, e2, "B") == "wait"
    assert await start(wq, e0, "A") == "run"
    assert await start(wq, e2, "B") == "wait"  # still not next
    assert await start(wq, e1, "B") == "inactive"  # next, but one runs (max_active 1)
    assert await finish(wq, e0, "A") == e1
    assert await start(wq, e2, "B") == "inactive"
    assert await finish(wq, e1, "A") == e2
    assert await finish(wq, e2, "A") is None


@pytest.mark.asyncio
async def test_r7_max_active_across_two_consumers(app: awr.App) -> None:
    wq = app.workqueue("m", max_active=2)
    for i in range(4):
        await wq.queue(app.work(f, key=f"k{i}"))
    ea = await read(wq, "A", 2)
    eb = await read(wq, "B", 2)
    assert [await start(wq, e, "A") for e in ea] == ["run", "run"]
    assert [await start(wq, e, "B") for e in eb] == ["inactive", "inactive"]
    assert (await wq.stats())["active"] == 2
    assert await finish(wq, ea[0], "A") == eb[0]  # FIFO
    assert (await wq.stats())["active"] == 2
    assert await finish(wq, ea[1], "A") == eb[1]
    await finish(wq, eb[0], "A")
    await finish(wq, eb[1], "A")
    assert (await wq.stats())["active"] == 0


@pytest.mark.asyncio
async def test_r21_max_pending_full(app: awr.App) -> None:
    wq = app.workqueue("b", max_pending=2)
    await wq.queue(app.work(f, key="a"))
    await wq.queue_delayed(app.work(f, key="b"), 60)
    with pytest.raises(aioworkqueue.WorkqueueFullError, match="'b'"):
        await wq.queue(app.work(f, key="c"))
    with pytest.raises(aioworkqueue.WorkqueueFullError):
        await wq.queue_delayed(app.work(f, key="c"), 1)
    assert await app.client.hlen(wq.keys.pend) == 2  # nothing changed
    assert await wq.queue(app.work(f, key="a")) is False  # pending: R1 answer, not full


@pytest.mark.asyncio
async def test_r14_drain_refuses_outside_and_destroy_refuses_all(app: awr.App) -> None:
    wq = app.workqueue("d")
    w = app.work(f, key="a")
    await wq.queue(w)
    await wq.queue_delayed(app.work(f, key="t"), 3600)
    drainer = asyncio.create_task(awr.drain_workqueue(wq))
    await asyncio.sleep(0.05)
    with pytest.raises(aioworkqueue.WorkqueueDrainingError):
        await wq.queue(app.work(f, key="b"))
    (e,) = await read(wq, "A")
    await start(wq, e, "A")
    await finish(wq, e, "A")
    await asyncio.wait_for(drainer, 5)  # the armed timer is not waited for
    assert await wq.queue(app.work(f, key="b")) is True  # live again
    destroyer = asyncio.create_task(awr.destroy_workqueue(wq))
    await asyncio.sleep(0.05)
    got = await read(wq, "A")
    assert sorted(k for _, k in got) == ["b", "t"]  # the armed one was fired at once
    for e in got:
        await start(wq, e, "A")
        await finish(wq, e, "A")
    await asyncio.wait_for(destroyer, 5)
    with pytest.raises(aioworkqueue.WorkqueueDestroyedError, match="destroyed"):
        await wq.queue(w)
    with pytest.raises(aioworkqueue.WorkqueueDestroyedError):
        await wq.queue_delayed(w, 1)
    await wq.destroy()  # again: at once


@pytest.mark.asyncio
async def test_bad_input_raises_and_leaves_other_items(app: awr.App) -> None:
    wq = app.workqueue("x")
    ok = app.work(f, key="ok")
    await wq.queue(ok)

    def unregistered() -> None:
        pass

    with pytest.raises(TypeError, match="not registered"):
        app.work(unregistered)
    with pytest.raises(TypeError, match="registered"):
        app.work(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no function"):
        app.work("nope")
    w = app.work(f, key="w")
    with pytest.raises(ValueError, match="delay"):
        await wq.queue_delayed(w, -1)
    with pytest.raises(ValueError, match="delay"):
        await wq.mod_delayed(w, float("nan"))
    with pytest.raises(TypeError, match="delay"):
        await wq.queue_delayed(w, "1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RemoteWork"):
        await awr.queue_work(wq, object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RemoteWorkqueue"):
        await awr.flush_workqueue(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_active"):
        app.workqueue("y", max_active=-1)
    assert await w.pending() is False
    assert await ok.pending() is True
    assert [k for _, k in await read(wq, "A")] == ["ok"]


@pytest.mark.asyncio
async def test_default_key_is_stable_over_arguments(app: awr.App) -> None:
    a = app.work(f, 1, x=2, y=3)
    b = app.work(f, 1, y=3, x=2)
    assert a.key == b.key and a.key.startswith("f:")
    assert app.work(f, 2).key != a.key


@pytest.mark.asyncio
async def test_scripts_reload_after_script_flush(app: awr.App) -> None:
    wq = app.workqueue("s")
    await wq.queue(app.work(f, key="a"))
    await app.client.script_flush()
    assert await wq.queue(app.work(f, key="b")) is True


@pytest.mark.asyncio
async def test_r6_an_entry_behind_an_earlier_one_is_not_deferred_to_be_lost(app: awr.App) -> None:
    """Ordered queue: ``a`` runs, ``b`` waits for the slot, ``a`` is queued again. The new
    instance of ``a`` must wait for ``b`` (R6), so it answers 'wait' (its worker keeps it and
    retries), not 'deferred': the finish of ``a`` hands ``b`` on, and a deferred entry that
    must still wait had nowhere to go: it was left to a claim after the lease (found while
    modelling the backend for tests/redis/test_refmodel.py)."""
    wq = app.workqueue("o", ordered=True)
    a, b = app.work(f, key="a"), app.work(f, key="b")
    await wq.queue(a)
    (ea,) = await read(wq, "A")
    assert await start(wq, ea, "A") == "run"
    await wq.queue(b)
    (eb,) = await read(wq, "B")
    assert await start(wq, eb, "B") == "inactive"
    assert await wq.queue(a) is True  # R2
    (ea2,) = await read(wq, "B")
    assert await start(wq, ea2, "B") == "wait"  # was 'deferred'
    assert await finish(wq, ea, "A") == eb  # R6: b first
    assert await start(wq, ea2, "B") == "inactive"  # B's retry: next in order now
    assert await finish(wq, eb, "A") == ea2
    assert await finish(wq, ea2, "A") is None
    assert await a.busy() == aioworkqueue.WorkBusy(0)


@pytest.mark.asyncio
async def test_r11_the_calling_apps_queue_is_false_while_its_cancel_work_sync_waits(
    app: awr.App, redis_url: str
) -> None:
    """R11 for the calling client (docs/spec.md, "Beyond one process"): while its
    ``cancel_work_sync`` waits for the run, every ``queue_*`` of the item from the same App
    answers False; another App may queue it (the documented deviation). It answered True
    before the App kept a mark (found while modelling the backend for test_refmodel.py)."""
    wq = app.workqueue("q")
    w = app.work(f, key="k")
    await wq.queue(w)
    (e,) = await read(wq, "A")
    assert await start(wq, e, "A") == "run"
    sync = asyncio.create_task(awr.cancel_work_sync(w))
    other = awr.App(url=redis_url, prefix=app.prefix)
    other.function(f, name="f")
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while (await app.client.pubsub_numsub(wq.keys.done))[0][1] == 0:  # it waits for the run
            assert asyncio.get_running_loop().time() < deadline, "cancel_work_sync never waited"
            await asyncio.sleep(0.001)
        assert await wq.queue(w) is False
        assert await wq.queue_delayed(w, 10) is False
        assert await wq.mod_delayed(w, 0) is False
        assert await wq.queue_many([w, app.work(f, key="other")]) == [False, True]
        assert await w.pending() is False
        assert await other.workqueue("q").queue(other.work(f, key="k")) is True
        assert await w.cancel() is True  # the other App's instance
        assert not sync.done()
        await finish(wq, e, "A")
        assert await asyncio.wait_for(sync, 10) is False  # it was running, not pending
    finally:
        sync.cancel()
        await other.aclose()
    assert app._syncing == {}
    assert await wq.queue(w) is True  # may be queued again
