"""``benchmarks/lean_pool.py``, the prototype of Core v2's lean pool, keeps the rules it claims:
its figure counts only if it does the job. R1, R2, R3, R7 (with its FIFO), R10, R13 (with a
producer that keeps going), R16, R21 and a producer on another thread."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from ._interleave import Run, TracedDeque, TracedList, explore

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "lean_pool.py"


def _load() -> Any:
    sys.path.insert(0, str(_PATH.parent))  # the script imports core_v2_floors from its directory
    try:
        spec = importlib.util.spec_from_file_location("lean_pool", _PATH)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(_PATH.parent))


lp = _load()


class _Tagged(lp.Item):  # type: ignore[misc, name-defined]
    """An item the tests can tell apart (the pool does not care about the class)."""

    __slots__ = ("i", "link", "pool")


def _tagged(fn: Callable[[Any], Any], n: int | list[Any]) -> list[_Tagged]:
    """``n`` items of ``fn`` (or one per element of ``n``), tagged 0, 1, ..."""
    items = [_Tagged(fn) for _ in (range(n) if isinstance(n, int) else n)]
    for i, it in enumerate(items):
        it.i = i
    return items


def _run(body: Callable[[Any], Coroutine[Any, Any, None]], workers: int = 4) -> None:
    async def main() -> None:
        pool = lp.LeanPool(asyncio.get_running_loop(), workers)
        pool.start()
        await asyncio.sleep(0)
        try:
            async with asyncio.timeout(30):
                await body(pool)
        finally:
            await pool.close()

    asyncio.run(main())


def test_each_queued_item_runs_once_and_a_second_queue_while_pending_is_false() -> None:
    runs = [0] * 300

    async def fn(item: Any) -> None:
        runs[item.i] += 1

    async def body(pool: Any) -> None:
        link = lp.Link(pool)
        items = _tagged(fn, runs)
        for burst in range(1, 4):
            assert all(pool.queue(link, it) for it in items)
            assert not any(pool.queue(link, it) for it in items)  # R1
            await pool.flush(link)
            assert runs == [burst] * len(runs)
        assert sum(w.done for w in pool.workers) == 3 * len(runs)

    _run(body)


def test_max_active_bounds_the_runs_and_the_waiting_start_in_fifo_order() -> None:
    running, peak, order = [0], [0], []

    async def fn(item: Any) -> None:
        order.append(item.i)
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        running[0] -= 1

    async def body(pool: Any) -> None:
        link = lp.Link(pool, max_active=2)
        items = _tagged(fn, 40)
        assert all(pool.queue(link, it) for it in items)
        await pool.flush(link)
        assert peak[0] == 2  # R7, and the bound is used
        assert order == list(range(40))  # R5/R7: FIFO through the waiting list
        assert link.nr_active == 0 and not link.inactive

    _run(body)


def test_an_item_queued_again_while_it_runs_runs_again_after_never_alongside() -> None:
    state = {"in": 0, "runs": 0, "overlap": 0}

    async def fn(item: Any) -> None:
        state["in"] += 1
        state["overlap"] = max(state["overlap"], state["in"])
        state["runs"] += 1
        if state["runs"] < 5:
            assert item.pool.queue(item.link, item)  # R2: it is not pending while it runs
        for _ in range(3):
            await asyncio.sleep(0)  # other workers look at the inbox meanwhile
        state["in"] -= 1

    async def body(pool: Any) -> None:
        link = lp.Link(pool)
        it = _Tagged(fn)
        it.i, it.pool, it.link = 0, pool, link
        assert pool.queue(link, it)
        for _ in range(200):
            await asyncio.sleep(0)
            if state["runs"] == 5 and not state["in"]:
                break
        assert state["runs"] == 5 and state["overlap"] == 1  # R3

    _run(body)


def test_a_flush_waits_for_a_next_instance_parked_behind_its_own_run() -> None:
    """R3 and R13 together: the item queues itself while it runs, another worker finds the new
    instance and parks it behind the run; a flush made then waits for that instance too."""
    runs: list[int] = []
    requeued = asyncio.Event()

    async def fn(item: Any) -> None:
        first = not runs
        await asyncio.sleep(0)  # a run that ends only after the loop turned once
        runs.append(1)
        if first:
            assert item.pool.queue(item.link, item)
            requeued.set()
            for _ in range(5):
                await asyncio.sleep(0)  # another worker takes the new instance meanwhile

    async def body(pool: Any) -> None:
        link = lp.Link(pool)
        it = _Tagged(fn)
        it.i, it.pool, it.link = 0, pool, link
        assert pool.queue(link, it)
        await requeued.wait()
        await asyncio.sleep(0)
        assert any(w.deferred is not None for w in pool.workers)  # parked behind the run
        await pool.flush(link)
        assert len(runs) == 2

    _run(body)


def test_a_cancel_takes_back_a_pending_instance_wherever_it_waits() -> None:
    ran: list[int] = []

    async def fn(item: Any) -> None:
        ran.append(item.i)
        await asyncio.sleep(0)

    async def body(pool: Any) -> None:
        link = lp.Link(pool, max_active=1)
        items = _tagged(fn, 6)
        assert all(pool.queue(link, it) for it in items)
        assert pool.cancel(items[1])  # on the inbox
        await asyncio.sleep(0)  # the loop takes 0 and parks 2.. on the waiting list
        assert pool.cancel(items[3])  # on the waiting list (R7)
        assert not pool.cancel(items[3])  # R10: not pending any more
        await pool.flush(link)  # a barrier that counted a cancelled token still returns
        assert ran == [0, 2, 4, 5]
        assert pool.skipped == 2
        assert pool.queue(link, items[1])  # cancelled: it may be queued again
        await pool.flush(link)
        assert ran[-1] == 1

    _run(body)


def test_a_flush_returns_while_a_producer_keeps_queueing_and_waits_for_what_came_before() -> None:
    queued = [0] * 2000
    done = [0] * 2000

    async def fn(item: Any) -> None:
        for _ in range(item.i % 4):
            await asyncio.sleep(0)  # some are still running when a barrier is met
        done[item.i] += 1

    async def body(pool: Any) -> None:
        link = lp.Link(pool)
        items = _tagged(fn, 2000)
        stop = False

        async def producer() -> None:
            k = 0
            while not stop:
                for _ in range(20):
                    it = items[k % len(items)]
                    if pool.queue(link, it):
                        queued[it.i] += 1
                    k += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(producer())
        await asyncio.sleep(0.01)
        for _ in range(5):
            before = list(queued)
            await pool.flush(link)  # R13: returns although the producer never stops
            assert all(d >= b for d, b in zip(done, before, strict=True))
        stop = True
        await task
        await pool.flush(link)

    _run(body)


def test_errors_are_counted_and_the_worker_goes_on() -> None:
    async def bad(item: Any) -> None:
        raise ValueError(item.i)

    async def body(pool: Any) -> None:
        link = lp.Link(pool)
        items = _tagged(bad, 10)
        assert all(pool.queue(link, it) for it in items)
        await pool.flush(link)
        assert sum(w.failed for w in pool.workers) == 10  # R16
        assert sorted(e.args[0] for e in pool.errors) == list(range(10))
        assert all(not t.done() for t in pool.tasks)

    _run(body)


def test_the_room_bound_refuses_and_frees_as_items_start() -> None:
    async def fn(item: Any) -> None:
        return None

    async def body(pool: Any) -> None:
        link = lp.Link(pool, limit=3)
        items = _tagged(fn, 5)
        assert all(pool.queue(link, it) for it in items[:3])
        with pytest.raises(lp.Full):
            pool.queue(link, items[3])  # R21: and nothing changed
        assert not pool.table.is_pending(items[3])
        assert not pool.queue(link, items[0])  # R1 inside the bound: refunded
        assert link.room_used() == 3
        await pool.flush(link)
        assert link.room_used() == 0 and pool.queue(link, items[3])
        await pool.flush(link)

    _run(body)


def test_a_producer_on_another_thread_gets_each_item_run_once() -> None:
    runs = [0] * 2000

    async def fn(item: Any) -> None:
        runs[item.i] += 1

    async def body(pool: Any) -> None:
        link = lp.Link(pool)
        items = _tagged(fn, runs)
        answers: list[bool] = []
        th = threading.Thread(target=lambda: answers.extend(pool.queue(link, it) for it in items))
        th.start()
        while th.is_alive():
            await asyncio.sleep(0.001)
        th.join()
        await pool.flush(link)  # everything the thread queued was queued before the flush
        assert all(answers) and runs == [1] * len(runs)

    _run(body)


def test_plain_functions_run_inline_and_every_measured_variant_does_the_job() -> None:
    """R17: a plain function runs inline on the loop. And the script's measured variants (the
    prototype, today's core, call_soon_threadsafe, from another thread) each run their whole
    burst: a burst that lost an item would not finish."""
    ran: list[int] = []

    def fn(item: Any) -> None:
        ran.append(threading.get_ident())

    async def body(pool: Any) -> None:
        link = lp.Link(pool)
        items = [_Tagged(fn) for _ in range(50)]
        assert not items[0].asyn
        for it in items:
            assert pool.queue(link, it)
        await pool.flush(link)
        assert ran == [threading.get_ident()] * 50
        lat = await lp.latency(5)
        assert sorted(lat) == ["lean pool prototype", "loop.call_soon", "today's core"]
        assert all(v > 0 for v in lat.values())
        for variant in ("lean", "core", "cst"):
            assert await lp.cross_thread(2000, variant) > 0
        for kind in ("plain", "sleep0", "def"):
            for fresh in (False, True):
                assert await lp._burst_lean(200, 1, kind, fresh) > 0
                assert await lp._burst_core(200, 1, kind, fresh) > 0

    _run(body)


def test_a_submitted_item_is_born_pending_and_keeps_r1_and_r10() -> None:
    runs: list[Any] = []

    async def fn(item: Any) -> None:
        runs.append(item)

    async def body(pool: Any) -> None:
        link = lp.Link(pool)
        a = pool.submit(link, fn)
        assert pool.table.is_pending(a) and not pool.queue(link, a)  # R1: pending from birth
        b = pool.submit(link, fn)
        assert pool.cancel(b) and not pool.cancel(b)  # R10 on a born token
        await pool.flush(link)
        assert runs == [a] and pool.skipped == 1
        assert pool.queue(link, b)  # it ran never, was cancelled: it may be queued
        await pool.flush(link)
        assert runs == [a, b]

    _run(body)


def test_pools_in_threads_run_what_the_host_queues_and_a_flush_from_the_host_waits_for_it() -> None:
    """The runtime measurement's set-up: lean pools on loops in their own threads, fed and
    flushed from the host loop (the barrier's end is posted back to the host)."""
    n = 600
    runs = [0] * n
    where: list[set[int]] = [set() for _ in range(n)]

    async def fn(item: Any) -> None:
        if item.i % 2:
            await asyncio.sleep(0)
        runs[item.i] += 1
        where[item.i].add(threading.get_ident())

    async def main() -> None:
        started = [lp.start_pool_thread(asyncio.new_event_loop) for _ in range(2)]
        try:
            links = [lp.Link(p) for p, _, _ in started]
            items = _tagged(fn, n)
            for rnd in range(1, 4):
                for i, it in enumerate(items):
                    assert links[i % 2].pool.queue(links[i % 2], it)
                for link in links:
                    await asyncio.wait_for(link.pool.flush(link), 30)
                assert runs == [rnd] * n  # R13 across threads: all of it had run
            assert await lp.runtime_bursts(asyncio.new_event_loop, 2, 200, 1) > 0
        finally:
            for _, th, stop in started:
                stop()
                th.join(10)
        host = threading.get_ident()
        assert all(len(w) == 1 and host not in w for w in where)

    asyncio.run(main())


# -- a signal handler that lands in the loop's own park or wake-up ------------------------------


class _Fut:
    """A parked worker's future, as far as the park and the wakers use it."""

    def __init__(self) -> None:
        self.done = False

    def set_result(self, _: object) -> None:
        assert not self.done, "a future completed twice: two wakers took one worker"
        self.done = True


class _Idle(TracedList):  # type: ignore[misc]
    """The parked workers' list, with pop and remove as steps too."""

    def pop(self, *a: Any) -> Any:
        self._run.point()
        return list.pop(self, *a)

    def remove(self, x: Any) -> None:
        self._run.point()
        list.remove(self, x)

    def __bool__(self) -> bool:
        self._run.point()
        return list.__len__(self) > 0


class _Inbox(TracedDeque):  # type: ignore[misc]
    def __bool__(self) -> bool:
        self._run.point()
        return len(self) > 0


def _handler_scenario(run: Run, out: list[Any]) -> None:
    """The loop parks a worker while another is parked already; a signal handler on the loop's
    own thread queues an item (the loop-side wake-up) at any step of that park."""
    pool = lp.LeanPool(None, 0)  # no loop, no workers: the scenario drives it by hand
    pool._on_loop = lambda: True  # the handler runs on the loop's thread
    pool.inbox = _Inbox(run)
    pool.idle = _Idle(run)
    other, mine = _Fut(), _Fut()
    list.append(pool.idle, other)
    pool.sleeping = True
    link = lp.Link(pool)
    item = _Tagged(lambda _: None)
    res: dict[str, Any] = {}
    out[:] = [pool, other, mine, res]

    def park() -> None:
        res["await"] = pool._park(mine)

    def handler() -> None:
        res["queued"] = pool.queue(link, item)

    run.actor("loop", park, [handler])


def _handler_check(out: list[Any]) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        pool, other, mine, res = out
        if "queued" not in res:
            return  # the handler did not land in this run
        assert res["queued"]
        # No lost wake-up: a worker is awake to take the entry. That is the parking worker
        # (it looks again, or its future was completed) or the other one.
        assert (not res["await"]) or mine.done or other.done, "the entry has nobody to take it"
        # Nothing is parked twice, and a parked future is not completed already.
        idle = list(pool.idle)
        assert len(idle) == len({id(f) for f in idle})
        assert not any(f.done for f in idle)

    return check


def test_a_handler_that_lands_in_a_park_neither_loses_a_wake_up_nor_breaks_it() -> None:
    out: list[Any] = []
    runs = explore(lambda run: _handler_scenario(run, out), _handler_check(out), preemptions=2)
    assert runs >= 4  # the handler lands before each step of the park, or not at all


def _two_wakers_scenario(run: Run, out: list[Any]) -> None:
    """The loop queues an item (and wakes the one parked worker); a signal handler on the same
    thread queues another at any step of that, and wakes too."""
    pool = lp.LeanPool(None, 0)
    pool._on_loop = lambda: True
    pool.inbox = _Inbox(run)
    pool.idle = _Idle(run)
    parked = _Fut()
    list.append(pool.idle, parked)
    pool.sleeping = True
    link = lp.Link(pool)
    a, b = _Tagged(lambda _: None), _Tagged(lambda _: None)
    res: dict[str, Any] = {}
    out[:] = [pool, parked, res]

    def queue_a() -> None:
        res["a"] = pool.queue(link, a)

    def handler() -> None:
        res["b"] = pool.queue(link, b)

    run.actor("loop", queue_a, [handler])


def test_a_handler_that_wakes_while_its_own_thread_wakes_takes_nothing_twice() -> None:
    out: list[Any] = []

    def check(run: Run) -> None:
        pool, parked, res = out
        assert res["a"] and res.get("b", True)
        assert parked.done  # woken once (a second set_result would have failed the run)
        assert not list(pool.idle)

    runs = explore(lambda run: _two_wakers_scenario(run, out), check, preemptions=2)
    assert runs >= 4
