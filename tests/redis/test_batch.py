"""The batched calls: ``queue_work_many`` and the worker's batched start and finish scripts.

Each batch is one script call; these tests check that a batch answers exactly what the same
calls one by one would have (R1 per item, R3, R7), and what it does when the queue refuses.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

import aioworkqueue
import aioworkqueue.redis as awr
from aioworkqueue.redis import _ops, _worker
from aioworkqueue.redis._scripts import Scripts

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


# -- the worker's batched scripts, driven by hand (as test_ops' fake workers) ------------------

LEASE = 60_000


async def take(wq: awr.RemoteWorkqueue, consumer: str, count: int) -> tuple[int, list[Any]]:
    """The **take** script: returns (entries read, [(answer, id, key)] for run / wait)."""
    _nxt, n, _last, *got = await wq.call("take", consumer, LEASE, count)
    return int(n), [(a.decode(), i.decode(), k.decode()) for a, i, k, _f, _a in got]


async def finish_many(
    wq: awr.RemoteWorkqueue, consumer: str, runs: list[tuple[str, str]], handoff: str = "1"
) -> list[tuple[str, str]]:
    """The **finish_many** script with no free slot to take into: returns the hand-offs."""
    args: list[str | int] = [consumer, LEASE, handoff, 0]
    for eid, key in runs:
        args += (eid, key, "ok")
    _nxt, n, *got = await wq.call("finish_many", *args)
    assert int(n) == 0  # nothing read: no free slot was offered
    return [(i.decode(), k.decode()) for a, i, k, _f, _a in got if a == b"run"]


@pytest.mark.asyncio
async def test_take_starts_up_to_max_active_and_finish_many_hands_on_in_order(
    app: awr.App,
) -> None:
    wq = app.workqueue("m", max_active=2)
    await wq.queue_many([app.work(f, key=f"k{i}") for i in range(5)])
    n, got = await take(wq, "A", 10)
    assert n == 5  # all five read in one script...
    assert [(a, k) for a, _i, k in got] == [("run", "k0"), ("run", "k1")]  # ...two may run (R7)
    assert (await wq.stats())["active"] == 2
    assert await app.client.llen(wq.keys.inactive) == 3
    # B finds nothing new: the inactive ones wait for a finish, not for a reader
    assert await take(wq, "B", 10) == (0, [])
    handed = await finish_many(wq, "A", [(i, k) for _a, i, k in got])
    assert [k for _i, k in handed] == ["k2", "k3"]  # FIFO, one per freed slot
    st = await wq.stats()
    assert (st["active"], st["completed"], st["started"]) == (2, 2, 4)
    handed = await finish_many(wq, "A", handed)
    assert [k for _i, k in handed] == ["k4"]
    assert await finish_many(wq, "A", handed) == []
    st = await wq.stats()
    assert (st["active"], st["completed"], st["pending"]) == (0, 5, 0)
    assert await wq.call("stream_len") == 0  # nothing live: finished entries are acked


@pytest.mark.asyncio
async def test_batch_start_keeps_r3_a_running_key_is_deferred_to_its_runner(app: awr.App) -> None:
    wq = app.workqueue("r")
    await wq.queue(app.work(f, key="k"))
    _n, [(ans, first, _k)] = await take(wq, "A", 10)
    assert ans == "run"
    # queued again while it runs (R2), then read by B with another item, in one start_many
    assert await wq.queue_many([app.work(f, key="k"), app.work(f, key="o")]) == [True, True]
    ids = await read(wq, "B")
    args: list[str | int] = ["B", LEASE, "1"]
    for eid, key in ids:
        args += (eid, key)
    answers = [a.decode() for a in await wq.call("start_many", *args)]
    assert answers == ["deferred", "run"]  # never two runs of k at once (R3)
    assert (await wq.stats())["active"] == 2
    # A's finish hands the deferred instance of k to A, in the same script
    handed = await finish_many(wq, "A", [(first, "k")])
    assert handed == [(ids[0][0], "k")]
    run = await app.client.hget(wq.keys.run, "k")
    assert run.decode().split()[:2] == [ids[0][0], "A"]


@pytest.mark.asyncio
async def test_finish_many_of_a_stopping_worker_hands_nothing(app: awr.App) -> None:
    wq = app.workqueue("s", max_active=1)
    await wq.queue_many([app.work(f, key="a"), app.work(f, key="b")])
    _n, got = await take(wq, "A", 10)
    assert [(a, k) for a, _i, k in got] == [("run", "a")]
    assert await finish_many(wq, "A", [(got[0][1], "a")], handoff="0") == []
    assert (await wq.stats())["active"] == 0
    _n, got = await take(wq, "B", 10)  # nothing new to read: b waits on the inactive list
    assert got == []
    assert await app.client.llen(wq.keys.inactive) == 1


@pytest.mark.asyncio
async def test_take_promotes_due_items_and_keeps_r6_order(app: awr.App) -> None:
    wq = app.workqueue("o", ordered=True)
    await wq.queue(app.work(f, key="q"))
    await wq.queue_delayed(app.work(f, key="d"), 0.001)
    deadline = asyncio.get_running_loop().time() + 10
    read_n, seen = 0, []
    while read_n < 2:  # only take promotes d here, once the server's clock says it is due
        assert asyncio.get_running_loop().time() < deadline
        n, got = await take(wq, "A", 10)
        read_n, seen = read_n + n, seen + got
    assert [(a, k) for a, _i, k in seen] == [("run", "q")]  # queued first, runs first (R6)
    (waiting,) = await app.client.lrange(wq.keys.inactive, 0, -1)  # d: next, max_active 1
    assert (await app.client.hget(wq.keys.pend, "d")) == waiting


@pytest.mark.asyncio
async def test_finish_many_takes_new_entries_into_the_slots_left(app: awr.App) -> None:
    wq = app.workqueue("t", max_active=3)
    await wq.queue_many([app.work(f, key=f"k{i}") for i in range(2)])
    _n, got = await take(wq, "A", 2)
    assert [k for _a, _i, k in got] == ["k0", "k1"]
    await wq.queue_many([app.work(f, key=f"n{i}") for i in range(4)])
    # A finishes k0 with 2 free slots (k0's and one more): it reads two new entries and starts
    # them, still within max_active 3 (k1 runs)
    _nxt, n, *rest = await wq.call("finish_many", "A", LEASE, "1", 2, got[0][1], "k0", "ok")
    assert int(n) == 2
    assert [(a.decode(), k.decode()) for a, _i, k, _f, _a in rest] == [("run", "n0"), ("run", "n1")]
    st = await wq.stats()
    assert (st["active"], st["completed"], st["started"]) == (3, 1, 4)
    # B reads n2 while 3 run: it waits on the inactive list (R7)
    assert await take(wq, "B", 1) == (1, [])
    # the hand-off comes first: k1's slot goes to n2, which leaves no slot to read n3 into
    _nxt, n, *rest = await wq.call("finish_many", "A", LEASE, "1", 1, got[1][1], "k1", "ok")
    assert int(n) == 0
    assert [(a.decode(), k.decode()) for a, _i, k, _f, _a in rest] == [("run", "n2")]
    assert (await wq.stats())["active"] == 3
    assert await take(wq, "A", 0) == (0, [])
    assert await wq.call("stream_len") == 4  # n0, n1, n2 running; n3 not read yet


@pytest.mark.asyncio
async def test_a_worker_pays_far_less_than_two_scripts_per_item(app: awr.App) -> None:
    n = 200
    ran: list[int] = []

    def job(i: int) -> None:
        ran.append(i)

    app.function(job, name="job")
    wq = app.workqueue("w")
    assert all(await wq.queue_many([app.work(job, i) for i in range(n)]))
    before = await _commands(app, "evalsha")
    async with app.worker(queues=["w"], concurrency=10):
        await asyncio.wait_for(wq.flush(), 30)
    scripts = await _commands(app, "evalsha") - before
    assert sorted(ran) == list(range(n))
    # one start and one finish per item would be 2n; batches of up to 10 make it about n / 5
    assert scripts < n, scripts


@pytest.mark.asyncio
async def test_finished_entries_are_trimmed_not_left_and_not_xdeled_one_by_one(
    app: awr.App,
) -> None:
    n = 1000
    wq = app.workqueue("t")
    assert all(await wq.queue_many([app.work(f, key=f"k{i}") for i in range(n)]))
    xdel = await _commands(app, "xdel")
    _nxt, _n, _last, *got = await wq.call("take", "A", LEASE, 50)
    done = 0
    while got:
        args: list[str | int] = ["A", LEASE, "1", 50]
        for _a, i, k, _f, _a2 in got:
            args += (i.decode(), k.decode(), "ok")
        done += len(got)
        _nxt, _n, *got = await wq.call("finish_many", *args)
    assert done == n
    assert await _commands(app, "xdel") == xdel  # a finish acks; it does not XDEL
    assert await wq.call("stream_len") == 0
    # XTRIM MINID ~ cut whole nodes below the oldest live entry: at most a few nodes are left
    assert await app.client.xlen(wq.keys.stream) < 300
    await asyncio.wait_for(wq.flush(), 5)
    assert (await wq.stats())["completed"] == n


@pytest.mark.asyncio
async def test_a_cancelled_inactive_entry_leaves_its_readers_pel_so_flush_does_not_wait(
    app: awr.App,
) -> None:
    wq = app.workqueue("c", max_active=1)
    a, b = app.work(f, key="a"), app.work(f, key="b")
    assert await wq.queue_many([a, b]) == [True, True]
    _n, got = await take(wq, "A", 2)
    assert [(x, k) for x, _i, k in got] == [("run", "a")]  # b read by A, inactive (R7)
    assert await b.cancel() is True
    flusher = asyncio.create_task(wq.flush())
    assert await finish_many(wq, "A", [(got[0][1], "a")]) == []  # nothing handed: b is gone
    # b was read by A: only the cancel's XACK takes it out of A's PEL; else flush waits a lease
    await asyncio.wait_for(flusher, 5)
    assert await wq.call("stream_len") == 0


class _FinishBatches:
    """Records the size of every **finish_many** the worker sends (in call order)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        call = Scripts.call

        async def counting(scripts: Scripts, name: str, keys: Any, *args: Any) -> Any:
            if name == "finish_many":
                self.sizes.append((len(args) - 4) // 3)  # consumer, lease, hand-off, free
            return await call(scripts, name, keys, *args)

        monkeypatch.setattr(Scripts, "call", counting)

    async def until(self, n: int) -> None:
        async def wait() -> None:
            while len(self.sizes) < n:
                await asyncio.sleep(0.001)

        await asyncio.wait_for(wait(), 10)


async def _gated_jobs(app: awr.App, n: int) -> tuple[list[asyncio.Event], asyncio.Event]:
    """``n`` queued jobs that each run until their event is set; the second event is set once
    all of them run."""
    gates = [asyncio.Event() for _ in range(n)]
    running = asyncio.Event()
    started: list[int] = []

    async def job(i: int) -> None:
        started.append(i)
        if len(started) == n:
            running.set()
        await gates[i].wait()

    app.function(job, name="gated")
    wq = app.workqueue("g")
    assert all(await wq.queue_many([app.work(job, i) for i in range(n)]))
    return gates, running


@pytest.mark.asyncio
async def test_a_busy_worker_gathers_finishes_until_half_its_runs_ended(
    app: awr.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Jobs that end one by one (each awaiting its own I/O) would each pay a script of their
    # own; a busy worker holds their finishes until half of its runs ended (here without the
    # deadline, so that the batches depend on nothing but the order of the ends).
    monkeypatch.setattr(_worker, "GATHER_S", 60.0)
    batches = _FinishBatches(monkeypatch)
    gates, running = await _gated_jobs(app, 10)
    async with app.worker(queues=["g"], concurrency=10):
        await asyncio.wait_for(running.wait(), 10)
        gates[0].set()
        for _ in range(50):
            await asyncio.sleep(0)
        assert batches.sizes == []  # 1 of 10 ended: held back
        for i in range(1, 5):
            gates[i].set()
        await batches.until(1)
        assert batches.sizes == [5]  # half of 10: one script for the five
        for i in (5, 6, 7):  # 3 of the 5 left make half
            gates[i].set()
        await batches.until(2)
        gates[8].set()  # 1 of 2: half, sent at once
        await batches.until(3)
        gates[9].set()  # the last run: an idle worker finishes at once
        await batches.until(4)
    assert batches.sizes == [5, 3, 1, 1]


@pytest.mark.asyncio
async def test_a_finish_held_back_is_sent_by_the_deadline(
    app: awr.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = _FinishBatches(monkeypatch)
    gates, running = await _gated_jobs(app, 10)
    async with app.worker(queues=["g"], concurrency=10):
        await asyncio.wait_for(running.wait(), 10)
        gates[0].set()  # 1 of 10: held back for at most GATHER_S, not until 4 more end
        await batches.until(1)
        assert batches.sizes == [1]
        for g in gates[1:]:
            g.set()
