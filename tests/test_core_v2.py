"""Core v2, stage A: the lean pool (``aioworkqueue._lean``) serves queues through the public API
and keeps the rules it claims. The rest of the suite runs on it too under
``AIOWORKQUEUE_CORE=v2`` (``.ci/run`` runs ``tests/test_rules.py`` that way); these tests
run it in the default suite, each queue allocated under ``_lean.use()``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import aioworkqueue as aw
from aioworkqueue import _lean
from tests.conftest import ExpectedErrors, settle


class Item(aw.Work):
    __slots__ = ("label",)

    def __init__(self, func: aw.WorkFunc, label: object = None) -> None:
        super().__init__(func)
        self.label = label


def lean_wq(name: str, max_active: int = 0, **kw: Any) -> aw.Workqueue:
    with _lean.use():
        wq = aw.alloc_workqueue(name, max_active=max_active, **kw)
    assert wq._lean is not None and wq._pwq is None  # bound at allocation, to the lean pool
    return wq


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        async with asyncio.timeout(30):
            await body()

    asyncio.run(main())


@pytest.mark.asyncio
async def test_r1_r2_r4_queue_once_requeue_while_running_and_count() -> None:
    wq = lean_wq("v2-r1")
    runs: list[object] = []
    go = asyncio.Event()

    async def fn(w: Item) -> None:
        runs.append(w.label)
        if len(runs) == 1:
            await go.wait()

    a = Item(fn, "a")
    assert aw.queue_work(wq, a)
    assert not aw.queue_work(wq, a)  # R1
    assert aw.work_pending(a) and a.pending
    await settle()
    assert aw.work_busy(a) == aw.WorkBusy.RUNNING and not a.pending
    assert aw.queue_work(wq, a)  # R2: its pending bit cleared before the call
    assert aw.work_busy(a) == aw.WorkBusy.PENDING | aw.WorkBusy.RUNNING
    flush = asyncio.ensure_future(aw.flush_workqueue(wq))
    await settle()
    assert not flush.done()  # R13: the run in progress was queued before it
    go.set()
    await flush
    assert runs == ["a", "a"]
    st = wq.stats()
    assert (st.queued, st.completed, st.in_flight) == (2, 2, 0)
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_an_item_queued_while_every_worker_awaits_starts_without_waiting_for_them() -> None:
    wq = lean_wq("v2-busy")
    gate = asyncio.Event()
    ran: list[str] = []

    async def slow(w: aw.Work) -> None:
        await gate.wait()

    aw.queue_work(wq, aw.Work(slow))
    await settle()  # its worker took it and awaits: nobody is on the way to the inbox
    aw.queue_work(wq, aw.Work(lambda w: ran.append("next")))
    await settle()
    assert ran == ["next"]
    gate.set()
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_r3_an_item_requeued_while_it_runs_never_overlaps_itself() -> None:
    wq = lean_wq("v2-r3")
    active = 0
    peak = 0
    runs = 0

    async def fn(w: aw.Work) -> None:
        nonlocal active, peak, runs
        active += 1
        peak = max(peak, active)
        runs += 1
        for _ in range(3):
            await asyncio.sleep(0)
        active -= 1
        if runs < 20:
            aw.queue_work(wq, w)  # from inside itself: runs next on this worker

    w = aw.Work(fn)
    assert aw.queue_work(wq, w)
    for _ in range(200):
        aw.queue_work(wq, w)  # while it runs: a second worker takes the entry and defers it
        await asyncio.sleep(0)
    await aw.drain_workqueue(wq)
    assert peak == 1 and runs >= 20
    await aw.destroy_workqueue(wq)


async def _bounded_fifo(wq: aw.Workqueue, max_active: int) -> None:
    active = 0
    peak = 0
    started: list[object] = []

    async def fn(w: Item) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        started.append(w.label)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        active -= 1

    items = [Item(fn, i) for i in range(30)]
    for it in items:
        assert aw.queue_work(wq, it)
    await settle(3)
    assert aw.queue_work(wq, items[0])  # queued again behind the rest, once it has run
    await aw.flush_workqueue(wq)
    assert peak == max_active
    assert started[:30] == list(range(30)) and started[30:] == [0]
    assert wq.stats().max_active_hits > 0
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_r7_max_active_bounds_and_keeps_fifo() -> None:
    await _bounded_fifo(lean_wq("v2-r7", max_active=3), 3)


@pytest.mark.asyncio
async def test_r6_an_ordered_queue_runs_one_at_a_time_in_order() -> None:
    with _lean.use():
        wq = aw.alloc_ordered_workqueue("v2-r6")
    await _bounded_fifo(wq, 1)


@pytest.mark.asyncio
async def test_r10_cancel_takes_back_pending_anywhere_and_barriers_still_end() -> None:
    wq = lean_wq("v2-r10", max_active=1)
    gate = asyncio.Event()
    ran: list[object] = []

    async def fn(w: Item) -> None:
        ran.append(w.label)
        if w.label == "first":
            await gate.wait()

    first, waiting, inbox = Item(fn, "first"), Item(fn, "waiting"), Item(fn, "inbox")
    assert aw.queue_work(wq, first) and aw.queue_work(wq, waiting)
    await settle()  # first runs, waiting waits for the slot (R7)
    assert aw.queue_work(wq, inbox)
    flush = asyncio.ensure_future(aw.flush_workqueue(wq))
    assert aw.cancel_work(waiting) and aw.cancel_work(inbox)
    assert not aw.cancel_work(waiting) and not waiting.pending
    st = wq.stats()  # counted as the cancels answered, before the loop meets the entries
    assert (st.cancelled, st.in_flight) == (2, 1)
    await settle()
    assert not flush.done()  # first still runs
    gate.set()
    await flush
    assert ran == ["first"]
    st = wq.stats()
    assert (st.completed, st.cancelled, st.in_flight) == (1, 2, 0)
    assert aw.queue_work(wq, waiting)  # idle again: queues as a new instance
    await aw.drain_workqueue(wq)
    assert ran == ["first", "waiting"]
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_r11_r12_cancel_sync_stops_self_requeueing_and_flush_work_waits() -> None:
    wq = lean_wq("v2-r11")
    runs = 0

    async def again(w: aw.Work) -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0)
        aw.queue_work(wq, w)

    w = aw.Work(again)
    aw.queue_work(wq, w)
    await settle(10)
    await aw.cancel_work_sync(w)  # pending or running at the call, as it happens: either way
    n = runs
    await settle(10)
    assert runs == n and not w.pending and aw.work_busy(w) == aw.WorkBusy(0)
    assert aw.queue_work(wq, w)  # enabled again after cancel_work_sync
    assert await aw.cancel_work_sync(w)

    done: list[int] = []

    async def slow(w: aw.Work) -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        done.append(1)

    s = aw.Work(slow)
    assert not await aw.flush_work(s)  # idle: nothing to wait for
    aw.queue_work(wq, s)
    assert await aw.flush_work(s) and done == [1]
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_r13_flush_does_not_wait_for_items_queued_after_it() -> None:
    wq = lean_wq("v2-r13")
    gate = asyncio.Event()

    async def early(w: aw.Work) -> None:
        await asyncio.sleep(0)

    async def late(w: aw.Work) -> None:
        await gate.wait()

    for _ in range(5):
        wq.submit(early, None)
    flush = asyncio.ensure_future(aw.flush_workqueue(wq))
    await asyncio.sleep(0)  # the flush's barrier is on the inbox now
    aw.queue_work(wq, aw.Work(late))
    await asyncio.wait_for(flush, 5)
    gate.set()
    await aw.flush_workqueue(wq)

    release = asyncio.Event()

    async def running(w: aw.Work) -> None:
        await release.wait()

    aw.queue_work(wq, aw.Work(running))
    await settle()
    flush = asyncio.ensure_future(aw.flush_workqueue(wq))
    await settle()
    assert not flush.done()  # it waits for the run in progress, which was queued before it
    release.set()
    await asyncio.wait_for(flush, 5)
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_r14_r15_drain_rejects_others_destroy_rejects_and_own_flush_raises() -> None:
    wq = lean_wq("v2-r14")
    chained: list[int] = []
    errors: list[BaseException] = []

    async def chain(w: Item) -> None:
        try:
            await aw.flush_workqueue(wq)
        except aw.WorkqueueDeadlockError as e:
            errors.append(e)
        if w.label < 3:  # type: ignore[operator]
            assert aw.queue_work(wq, Item(chain, w.label + 1))  # type: ignore[operator]
        chained.append(w.label)  # type: ignore[arg-type]
        await asyncio.sleep(0)

    aw.queue_work(wq, Item(chain, 0))
    drain = asyncio.ensure_future(aw.drain_workqueue(wq))
    await asyncio.sleep(0)
    with pytest.raises(aw.WorkqueueDrainingError):
        aw.queue_work(wq, aw.Work(lambda w: None))
    await drain
    assert chained == [0, 1, 2, 3] and len(errors) == 4  # R15 each time, nothing hung
    link = wq._lean
    assert link is not None and link in link.pool.links
    await aw.destroy_workqueue(wq)
    assert link not in link.pool.links  # the pool forgets a destroyed queue
    with pytest.raises(aw.WorkqueueDestroyedError):
        aw.queue_work(wq, aw.Work(lambda w: None))


@pytest.mark.asyncio
async def test_r16_r17_errors_go_to_the_handler_and_plain_functions_run_inline() -> None:
    seen: list[tuple[object, str]] = []

    async def handler(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
        await asyncio.sleep(0)
        seen.append((work, str(exc)))

    wq = lean_wq("v2-r16", exception_handler=handler)
    where: list[object] = []

    def plain(w: aw.Work) -> None:
        where.append(aw.current_work())
        raise ValueError("plain")

    async def coro(w: aw.Work) -> None:
        where.append(aw.current_work())
        raise RuntimeError("coro")

    p, c = aw.Work(plain), aw.Work(coro)
    aw.queue_work(wq, p)
    aw.queue_work(wq, c)
    got = wq.submit(lambda x, y=0: where.append(x + y), 40, y=2)
    await aw.flush_workqueue(wq)
    assert where == [p, c, 42] and aw.current_work() is None
    assert seen == [(p, "plain"), (c, "coro")]
    st = wq.stats()
    assert (st.completed, st.failed) == (1, 2) and isinstance(got, aw.CallWork)
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_r21_max_pending_refuses_at_the_bound_and_loses_nothing() -> None:
    wq = lean_wq("v2-r21", max_pending=2)
    ran: list[object] = []

    def fn(w: Item) -> None:
        ran.append(w.label)

    a, b, c = Item(fn, "a"), Item(fn, "b"), Item(fn, "c")
    assert aw.queue_work(wq, a) and aw.queue_work(wq, b)
    assert not aw.queue_work(wq, a)  # R1 before R21: pending is not "full"
    with pytest.raises(aw.WorkqueueFullError, match="max_pending 2"):
        aw.queue_work(wq, c)
    assert not c.pending
    assert aw.cancel_work(b)
    assert aw.queue_work(wq, c)  # the cancel gave b's room back at once, not at the loop
    with pytest.raises(aw.WorkqueueFullError):
        aw.queue_work(wq, b)
    await aw.flush_workqueue(wq)
    assert aw.queue_work(wq, b)  # room again once they started
    await aw.flush_workqueue(wq)
    assert ran == ["a", "c", "b"] and wq.stats().queued == 4
    assert wq.stats().cancelled == 1 and wq._lean is not None and not wq._lean.held
    # The bound is exact again: the stale entry of b, met after its cancel gave the room back,
    # did not give it back a second time.
    x, y, z = Item(fn, "x"), Item(fn, "y"), Item(fn, "z")
    assert aw.queue_work(wq, x) and aw.queue_work(wq, y)
    with pytest.raises(aw.WorkqueueFullError):
        aw.queue_work(wq, z)
    await aw.flush_workqueue(wq)
    await aw.destroy_workqueue(wq)


def test_producers_on_many_threads_each_item_runs_once_never_concurrently() -> None:
    n_threads, per = 4, 2_000

    async def body() -> None:
        wq = lean_wq("v2-threads", max_active=8)
        count: dict[int, int] = {}
        active: set[int] = set()
        bad: list[int] = []

        async def fn(w: Item) -> None:
            k = w.label
            assert isinstance(k, int)
            if k in active:
                bad.append(k)
            active.add(k)
            count[k] = count.get(k, 0) + 1
            await asyncio.sleep(0)
            active.discard(k)

        items = [Item(fn, i) for i in range(64)]
        answered = [0] * n_threads

        def produce(t: int) -> None:
            for i in range(per):
                if aw.queue_work(wq, items[(i * 7 + t) % len(items)]):
                    answered[t] += 1
                if i % 50 == 0:
                    aw.cancel_work(items[(i + t) % len(items)])

        threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        while any(th.is_alive() for th in threads):
            await asyncio.sleep(0.001)
        for th in threads:
            th.join()
        await aw.drain_workqueue(wq)
        st = wq.stats()
        assert not bad  # R3
        assert st.queued == sum(answered)  # every True is counted once
        assert sum(count.values()) + st.cancelled == st.queued  # ran once, or was cancelled
        assert st.in_flight == 0
        await aw.destroy_workqueue(wq)

    run(body)


def test_what_a_closing_loop_leaves_is_reported_and_a_new_loop_rebinds(
    caplog: pytest.LogCaptureFixture, expect_errors: ExpectedErrors
) -> None:
    holder: dict[str, aw.Workqueue] = {}
    gate_items: list[aw.Work] = []

    async def first() -> None:
        wq = holder["wq"] = lean_wq("v2-end", max_active=1)

        async def forever(w: aw.Work) -> None:
            await asyncio.Event().wait()

        for _ in range(3):
            w = aw.Work(forever)
            gate_items.append(w)
            assert aw.queue_work(wq, w)
        await settle()

    with caplog.at_level(logging.WARNING, logger="aioworkqueue"):
        run(first)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "2 items on workqueue 'v2-end' did not finish (queued)" in text
    # The one running when the loop's tasks were cancelled went to the exception handler (R16).
    assert [r.exc_info[0] for r in expect_errors.records if r.exc_info] == [asyncio.CancelledError]
    assert not any(w.pending for w in gate_items)
    wq = holder["wq"]
    with pytest.raises(aw.WorkqueueLoopError):
        aw.queue_work(wq, aw.Work(lambda w: None))  # no loop runs here to rebind it to

    async def second() -> None:
        ran: list[int] = []
        assert aw.queue_work(wq, aw.Work(lambda w: ran.append(1)))  # rebinds to this loop
        await aw.flush_workqueue(wq)
        assert ran == [1]
        await aw.destroy_workqueue(wq)

    run(second)


def test_what_the_lean_pool_does_not_serve_yet_says_so(expect_errors: ExpectedErrors) -> None:
    async def body() -> None:
        locked = aw.alloc_workqueue("v1-holds")  # the switch is off: the locked core
        held = aw.Work(lambda w: None)
        assert aw.queue_work(locked, held)  # pending there, not run yet
        lean = lean_wq("v2-shares")
        with pytest.raises(NotImplementedError, match="does not share items"):
            aw.queue_work(lean, held)
        await aw.destroy_workqueue(locked)
        await aw.destroy_workqueue(lean)
        with _lean.use(), pytest.raises(NotImplementedError, match=r"Core v2.*WQ\.BH"):
            aw.alloc_workqueue("v2-bh", aw.WQ.BH)

    run(body)
    assert not expect_errors.records


def test_a_queue_that_races_the_loops_end_takes_its_own_entry_back() -> None:
    async def body() -> None:
        wq = lean_wq("v2-late")
        link = wq._lean
        assert link is not None
        # As a producer on another thread sees it when the end's sweep ran between its checks
        # and its append: the pool is dead after the append, and the entry is still its own.
        link.pool.dead = True
        w = aw.Work(lambda w: None)
        with pytest.raises(aw.WorkqueueLoopError, match="has shut down"):
            link.pool.queue(link, w)
        assert not w.pending  # nothing was queued: the producer's cancel won
        link.pool.dead = False
        await aw.destroy_workqueue(wq)

    run(body)


def test_threads_that_find_nobody_coming_post_one_kick_at_a_time() -> None:
    async def body() -> None:
        wq = lean_wq("v2-kick")
        link = wq._lean
        assert link is not None
        pool = link.pool
        loop = asyncio.get_running_loop()
        ran: list[int] = []
        posted: list[object] = []
        real = loop.call_soon_threadsafe

        def counting(cb: Any, *args: Any) -> Any:
            posted.append(cb)
            return real(cb, *args)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        try:

            def queue(i: int) -> None:
                t = threading.Thread(
                    target=lambda: aw.queue_work(wq, Item(lambda w: ran.append(i)))
                )
                t.start()
                t.join()

            # The loop is held here, so no _kick runs in between: the first thread posts one;
            # the second finds nobody coming again (as after a worker took the last entry) and
            # must not post another while the first is on its way.
            queue(1)
            pool.sleeping = True
            queue(2)
            assert len(posted) == 1
        finally:
            del loop.call_soon_threadsafe
        await aw.flush_workqueue(wq)
        assert sorted(ran) == [1, 2]
        await aw.destroy_workqueue(wq)

    run(body)


@pytest.mark.asyncio
async def test_a_queue_dropped_without_destroy_does_not_live_as_long_as_its_pool() -> None:
    wq = lean_wq("v2-dropped")
    link = wq._lean
    assert link is not None
    pool, ref = link.pool, weakref.ref(link)
    aw.queue_work(wq, aw.Work(lambda w: None))
    await aw.flush_workqueue(wq)
    del wq, link
    gc.collect()
    assert ref() is None and all(lk.wq.name != "v2-dropped" for lk in pool.links)


def test_r3_an_item_queued_on_two_loops_never_runs_on_both_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same item on lean queues of two loops in two threads: the second loop's worker may
    not hand the token to the first loop's worker, so it waits until that run has ended."""
    active: list[int] = []
    overlaps: list[int] = []
    runs: list[str] = []
    release = threading.Event()
    started = threading.Event()

    async def fn(w: aw.Work) -> None:
        if active:
            overlaps.append(1)
        active.append(1)
        runs.append(threading.current_thread().name)
        if len(runs) == 1:
            started.set()
            await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        active.pop()

    w = aw.Work(fn)
    met = threading.Event()  # B's worker met the token while the item ran on A
    elsewhere = _lean.LeanPool._elsewhere

    def meeting(pool: _lean.LeanPool, tok: list[Any], link: _lean.LeanLink) -> None:
        met.set()
        elsewhere(pool, tok, link)

    monkeypatch.setattr(_lean.LeanPool, "_elsewhere", meeting)
    queues: dict[str, aw.Workqueue] = {}
    ready = threading.Barrier(3)
    finish = threading.Event()

    def loop_thread(name: str) -> None:
        async def body() -> None:
            queues[name] = lean_wq(f"v2-two-{name}")
            ready.wait()
            while not finish.is_set():
                await asyncio.sleep(0.001)
            await aw.drain_workqueue(queues[name])
            await aw.destroy_workqueue(queues[name])

        asyncio.run(body())

    threads = [threading.Thread(target=loop_thread, args=(n,), name=n) for n in ("A", "B")]
    for t in threads:
        t.start()
    ready.wait()
    assert aw.queue_work(queues["A"], w)
    assert started.wait(10)
    assert aw.queue_work(queues["B"], w)  # pending again while it runs on A
    assert met.wait(10)  # B's worker met it while A's run goes on, and left it pending
    assert runs == ["A"] and w.pending
    release.set()
    deadline = time.monotonic() + 10
    while len(runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    finish.set()
    for t in threads:
        t.join(10)
    assert runs == ["A", "B"] and not overlaps


def test_waits_from_another_threads_loop_are_registered_by_the_pools_loop() -> None:
    """flush_work, flush_delayed_work and cancel_work_sync awaited on a loop in another thread:
    the pool's loop registers each wait, so a run that starts or ends meanwhile is seen."""
    result: dict[str, object] = {}

    async def body() -> None:
        wq = lean_wq("v2-xloop")
        gate = asyncio.Event()
        loop = asyncio.get_running_loop()
        runs: list[str] = []

        async def slow(w: aw.Work) -> None:
            runs.append("slow")
            await gate.wait()

        w = aw.Work(slow)
        d = aw.DelayedWork(lambda w: runs.append("d"))
        assert aw.queue_work(wq, w)
        await settle()
        assert aw.queue_delayed_work(wq, d, 1000.0)

        async def other() -> None:
            result["flush_delayed_work"] = await aw.flush_delayed_work(d)  # fires it now
            result["d_ran"] = "d" in runs
            t = asyncio.ensure_future(aw.cancel_work_sync(w))
            await asyncio.sleep(0.02)
            result["cancel_sync_waited"] = not t.done()  # R11: the run is in progress
            loop.call_soon_threadsafe(gate.set)
            result["cancel"] = await t
            result["busy_after"] = aw.work_busy(w)
            result["flush_idle"] = await aw.flush_work(w)

        th = threading.Thread(target=lambda: asyncio.run(other()))
        th.start()
        while th.is_alive():
            await asyncio.sleep(0.001)
        th.join()
        await aw.destroy_workqueue(wq)

    run(body)
    assert result == {
        "flush_delayed_work": True,
        "d_ran": True,
        "cancel_sync_waited": True,
        "cancel": False,
        "busy_after": aw.WorkBusy(0),
        "flush_idle": False,
    }


@pytest.mark.asyncio
async def test_r21_queue_work_wait_in_line_the_room_is_theirs_and_a_leaver_passes_it_on() -> None:
    wq = lean_wq("v2-wait", max_active=1, max_pending=1)
    gate = asyncio.Event()
    ran: list[object] = []

    async def fn(w: Item) -> None:
        ran.append(w.label)
        if w.label == "run":
            await gate.wait()

    run_, held = Item(fn, "run"), Item(fn, "held")
    assert aw.queue_work(wq, run_)
    await settle()  # it runs: no room held
    assert aw.queue_work(wq, held)  # the one room
    assert not await asyncio.wait_for(aw.queue_work_wait(wq, held), 5)  # R1 first: no wait
    assert aw.disable_work(d := Item(fn, "d")) is False
    assert not await asyncio.wait_for(aw.queue_work_wait(wq, d), 5)  # disabled: nor here
    assert aw.enable_work(d)
    waiters = [Item(fn, f"w{i}") for i in range(3)]
    tasks = []
    for it in waiters:
        tasks.append(asyncio.ensure_future(aw.queue_work_wait(wq, it)))
        await settle(2)  # each begins to wait before the next
    assert wq.stats().room_waiters == 3
    with pytest.raises(aw.WorkqueueFullError):
        aw.queue_work(wq, Item(fn, "x"))
    assert aw.cancel_work(held)  # its room goes to w0 at once, not to a queue that does not wait
    assert wq.stats().room_waiters == 2
    with pytest.raises(aw.WorkqueueFullError):
        aw.queue_work(wq, Item(fn, "x"))
    tasks[0].cancel()  # handed the room, it leaves before it queues: the room passes to w1
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    assert wq.stats().room_waiters == 1
    assert await asyncio.wait_for(tasks[1], 5) is True  # bounds a failure: a lost room
    gate.set()
    assert await asyncio.wait_for(tasks[2], 5) is True  # room again when w1 started
    await aw.flush_workqueue(wq)
    assert ran == ["run", "w1", "w2"]
    assert wq._lean is not None and wq._lean.room_used() == 0
    assert wq.stats().room_waiters == 0
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_r15_queue_work_wait_from_an_item_of_its_full_ordered_queue_raises() -> None:
    wq = lean_wq("v2-wait-own", max_active=1, max_pending=1)
    out: list[object] = []

    async def fn(w: Item) -> None:
        assert aw.queue_work(wq, Item(lambda w: None))  # the one room
        try:
            await aw.queue_work_wait(wq, Item(lambda w: None))
        except aw.WorkqueueDeadlockError as e:
            out.append(e)

    assert aw.queue_work(wq, Item(fn))
    await aw.flush_workqueue(wq)
    await aw.flush_workqueue(wq)
    assert len(out) == 1 and "would never end" in str(out[0])
    await aw.destroy_workqueue(wq)


def test_a_waiter_on_another_threads_loop_gets_the_room_that_frees_here() -> None:
    result: dict[str, object] = {}

    async def body() -> None:
        wq = lean_wq("v2-wait-x", max_active=1, max_pending=1)
        gate = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def slow(w: aw.Work) -> None:
            await gate.wait()

        assert aw.queue_work(wq, aw.Work(slow))
        await settle()
        assert aw.queue_work(wq, aw.Work(lambda w: None))  # the room
        waiting = threading.Event()

        async def other() -> None:
            t = asyncio.ensure_future(aw.queue_work_wait(wq, aw.Work(lambda w: None)))
            while not wq.stats().room_waiters:
                await asyncio.sleep(0.001)
            waiting.set()
            result["ok"] = await t

        th = threading.Thread(target=lambda: asyncio.run(other()))
        th.start()
        while not waiting.is_set():
            await asyncio.sleep(0.001)
        loop.call_soon(gate.set)
        while th.is_alive():
            await asyncio.sleep(0.001)
        th.join()
        await aw.flush_workqueue(wq)
        result["done"] = wq.stats().completed
        await aw.destroy_workqueue(wq)

    run(body)
    assert result == {"ok": True, "done": 3}


@pytest.mark.asyncio
async def test_r21_room_a_thread_frees_while_one_waits_is_not_taken_by_a_queue_that_does_not() -> (
    None
):
    wq = lean_wq("v2-wait-gap", max_active=1, max_pending=1)
    gate = asyncio.Event()

    async def fn(w: Item) -> None:
        await gate.wait()

    assert aw.queue_work(wq, Item(fn))
    await settle()
    held = Item(fn)
    assert aw.queue_work(wq, held)
    waiter = asyncio.ensure_future(aw.queue_work_wait(wq, Item(fn)))
    await settle(2)
    t = threading.Thread(target=lambda: aw.cancel_work(held))
    t.start()
    t.join()  # the room is free; the grant is posted to this loop, which has not run it yet
    with pytest.raises(aw.WorkqueueFullError):
        aw.queue_work(wq, Item(fn))  # the room is the waiter's
    assert await asyncio.wait_for(waiter, 5) is True
    gate.set()
    await aw.flush_workqueue(wq)
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_r5_highpri_items_start_before_normal_ones_waiting_in_the_same_pool() -> None:
    normal = lean_wq("v2-normal")
    hi = lean_wq("v2-hi", flags=aw.WQ.HIGHPRI, max_active=1)
    assert hi._lean is not None and hi._lean.q is hi._lean.pool.hi
    order: list[object] = []

    def fn(w: Item) -> None:
        order.append(w.label)

    gate = Item(fn, "gate")
    for i in range(3):
        assert aw.queue_work(normal, Item(fn, f"n{i}"))
    for i in range(3):
        assert aw.queue_work(hi, Item(fn, f"h{i}"))
    assert aw.queue_work(normal, gate)
    flush_hi = asyncio.ensure_future(aw.flush_workqueue(hi))  # a barrier on its own deque
    await aw.flush_workqueue(normal)
    await flush_hi
    # Every item was queued before a worker looked: the HIGHPRI ones first, each in its order.
    assert order == ["h0", "h1", "h2", "n0", "n1", "n2", "gate"]
    assert hi.stats().completed == 3 and hi.stats().in_flight == 0
    await aw.destroy_workqueue(normal)
    await aw.destroy_workqueue(hi)


@pytest.mark.asyncio
async def test_the_loops_last_look_before_sleeping_sees_the_highpri_deque_too() -> None:
    hi = lean_wq("v2-hi-wake", flags=aw.WQ.HIGHPRI)
    assert hi._lean is not None
    pool = hi._lean.pool
    await settle()
    assert not pool.waking
    ran: list[int] = []
    # A producer that read sleeping False (a worker seemed on its way) leaves the wake-up to the
    # loop's last look before it tells producers that nobody is coming.
    pool.sleeping = False
    assert aw.queue_work(hi, Item(lambda w: ran.append(1)))
    pool._no_one_coming()
    await settle(50)  # nothing else is queued that could wake a worker: a lost wake-up stays
    assert ran == [1]
    await aw.destroy_workqueue(hi)


@pytest.mark.asyncio
async def test_r18_freeze_waits_for_the_active_holds_the_queued_and_thaw_runs_them_in_order() -> (
    None
):
    fq = lean_wq("v2-frz", flags=aw.WQ.FREEZABLE)
    other = lean_wq("v2-not-frz")
    gate = asyncio.Event()
    ran: list[object] = []

    async def fn(w: Item) -> None:
        ran.append(w.label)
        if w.label == "running":
            await gate.wait()

    assert aw.queue_work(fq, Item(fn, "running"))
    await settle()
    freezer = asyncio.ensure_future(aw.freeze_workqueues())
    try:
        await settle()
        assert not freezer.done()  # the running item was active when it froze
        assert aw.queue_work(fq, Item(fn, "a")) and aw.queue_work(fq, Item(fn, "b"))
        assert aw.queue_work(other, Item(fn, "other"))  # not freezable: runs
        await settle()
        assert ran == ["running", "other"]
        gate.set()
        await asyncio.wait_for(freezer, 5)
        await settle()
        assert ran == ["running", "other"]  # frozen: queued items wait, none lost
        assert fq.stats().in_flight == 2
    finally:
        aw.thaw_workqueues()
    await asyncio.wait_for(aw.flush_workqueue(fq), 5)  # bounds a failure: a thaw that starts none
    assert ran == ["running", "other", "a", "b"]
    await aw.destroy_workqueue(fq)
    await aw.destroy_workqueue(other)


@pytest.mark.asyncio
async def test_r17_cpu_intensive_plain_functions_run_in_threads_async_ones_on_the_loop() -> None:
    wq = lean_wq("v2-cpu", max_active=2, flags=aw.WQ.CPU_INTENSIVE)
    loop_thread = threading.get_ident()
    seen: list[tuple[str, int, bool]] = []
    both = threading.Barrier(2, timeout=10)

    def crunch(w: aw.Work) -> None:
        seen.append(("def", threading.get_ident(), aw.current_work() is w))
        both.wait()  # two run at once, each in a thread of its own

    async def coro(w: aw.Work) -> None:
        seen.append(("async", threading.get_ident(), aw.current_work() is w))

    for fn in (crunch, crunch, coro):
        assert aw.queue_work(wq, aw.Work(fn))
    await asyncio.wait_for(aw.flush_workqueue(wq), 10)
    assert sorted(k for k, _, _ in seen) == ["async", "def", "def"]
    assert all(cur for _, _, cur in seen)
    assert {t for k, t, _ in seen if k == "def"}.isdisjoint({loop_thread})
    assert [t for k, t, _ in seen if k == "async"] == [loop_thread]
    assert wq.stats().completed == 3
    await aw.destroy_workqueue(wq)


# -- what the model test found: a decided instance is not waited for, and frees its slot ---------


@pytest.mark.asyncio
async def test_a_cancelled_next_instance_frees_its_slot_at_once() -> None:
    """R3, R7, R10: the next instance of a running item holds a slot (the kernel activates it
    at queue time); cancelled, the slot frees now, not when the run ends."""
    m, o = lean_wq("v2-slot-m", max_active=2), lean_wq("v2-slot-o", max_active=1)
    gate = asyncio.Event()
    runs: list[object] = []

    async def fn(w: Item) -> None:
        runs.append(w.label)
        if w.label == "a":
            await gate.wait()

    a, b = Item(fn, "a"), Item(fn, "b")
    assert aw.queue_work(m, a)
    await settle()  # a runs on m
    assert aw.queue_work(o, a)  # its next instance, on o, holds o's one slot behind the run
    await settle()
    assert aw.cancel_work(a)
    assert aw.queue_work(o, b)
    await settle()
    assert runs == ["a", "b"]  # b did not wait for a's run to end
    gate.set()
    await aw.flush_workqueue(m)
    await aw.flush_workqueue(o)
    assert (o.stats().cancelled, o.stats().completed, o.stats().in_flight) == (1, 1, 0)
    await aw.destroy_workqueue(m)
    await aw.destroy_workqueue(o)


@pytest.mark.asyncio
async def test_a_flush_stops_waiting_for_an_instance_cancelled_while_it_waits() -> None:
    """R12, R13: flush_work and flush_workqueue wait for what was pending at the call; a cancel
    of it meanwhile ends the wait (it waited behind max_active, behind a run that goes on)."""
    wq = lean_wq("v2-flush-cancelled", max_active=1)
    gate = asyncio.Event()

    async def fn(w: Item) -> None:
        await gate.wait()

    busy, waiting = Item(fn, "busy"), Item(fn, "waiting")
    assert aw.queue_work(wq, busy)
    await settle()
    assert aw.queue_work(wq, waiting)  # over max_active: it waits, pending
    await settle()
    fw = asyncio.ensure_future(aw.flush_work(waiting))
    fq = asyncio.ensure_future(aw.flush_workqueue(wq))
    await settle()
    assert not fw.done() and not fq.done()
    assert aw.cancel_work(waiting)
    async with asyncio.timeout(5):
        assert await fw is True
    await settle()
    assert not fq.done()  # the run of busy was queued before it, and goes on
    gate.set()
    async with asyncio.timeout(5):
        await fq
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_flush_work_waits_for_the_run_when_its_pending_instance_moves_away() -> None:
    """R12: flush_work waits for the pending instance and for the run in progress at the call;
    a move of the pending one (mod_delayed_work to another queue) leaves the run to wait for."""
    m, o = lean_wq("v2-fw-m", max_active=2), lean_wq("v2-fw-o", max_active=1)
    gate = asyncio.Event()

    async def fn(w: aw.DelayedWork) -> None:
        await gate.wait()

    d = aw.DelayedWork(fn)
    assert aw.queue_work(m, d)
    await settle()  # running
    assert aw.queue_work(m, d)  # and pending behind its run
    fw = asyncio.ensure_future(aw.flush_delayed_work(d))
    await settle()
    assert aw.mod_delayed_work(o, d, 0)  # the pending one moves to o
    await settle()
    assert not fw.done()  # the run goes on
    gate.set()
    async with asyncio.timeout(5):
        assert await fw is True
    await aw.flush_workqueue(o)
    await aw.destroy_workqueue(m)
    await aw.destroy_workqueue(o)
