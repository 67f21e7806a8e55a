"""The per-CPU ``Runtime`` (SPEC §2 "Runtime", §5 "Runtime"): pool threads and their loops,
routing, unbound and ordered queues across pools, barriers from every kind of loop, timers on
both loop types, the system queues, and the deadline shutdown.

Pools run in real threads, so waits are on events the test controls, with a generous timeout
that only guards against a hang. "Nothing more started" is checked after letting every pool
loop turn many times (``turn_pools``), never after a wall-clock sleep.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import pytest

import aioworkqueue as aw

try:
    import uvloop
except ImportError:  # pragma: no cover - platforms without uvloop
    uvloop = None  # type: ignore[assignment]

needs_uvloop = pytest.mark.skipif(uvloop is None, reason="uvloop is not installed")

#: Hang guard for every wait on another thread (never reached when the library works).
GUARD = 10.0
#: ``shutdown_timeout`` for tests that do not study the shutdown: a failing test whose items are
#: stuck costs at most this long at the end of its ``async with``.
SHUT = 3.0


def tname() -> str:
    return threading.current_thread().name


def pool_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("aiowq/")}


async def wait_until(pred: Callable[[], bool], what: str, limit: float = GUARD) -> None:
    """Poll ``pred`` without blocking the loop; fail after ``limit`` seconds (a hang guard)."""
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def wait_event(ev: threading.Event, limit: float = GUARD) -> None:
    await wait_until(ev.is_set, "a threading.Event", limit)


async def yields(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def turn_pools(probe: aw.Workqueue, cpus: int = 2, rounds: int = 3) -> None:
    """Let every pool loop turn many times: run a probe that yields 20 times on each pool, and
    wait for it, ``rounds`` times. Whatever a pool would start by itself has started by then."""
    for _ in range(rounds):

        async def spin(w: aw.Work) -> None:
            await yields(20)

        for cpu in range(cpus):
            assert aw.queue_work_on(cpu, probe, aw.Work(spin))
        await asyncio.wait_for(aw.flush_workqueue(probe), GUARD)


def noop(w: aw.Work) -> None:
    pass


class Gauge:
    """Counts work items running at once, in total and per pool thread (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.per: Counter[str] = Counter()
        self.peak_per: Counter[str] = Counter()
        self.names: list[str] = []

    def enter(self) -> None:
        name = tname()
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.per[name] += 1
            self.peak_per[name] = max(self.peak_per[name], self.per[name])
            self.names.append(name)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1
            self.per[tname()] -= 1


def gated(gate: threading.Event, done: list[aw.Work]) -> Callable[[aw.Work], Awaitable[None]]:
    async def fn(w: aw.Work) -> None:
        await wait_event(gate)
        done.append(w)

    return fn


@pytest.fixture(autouse=True)
def _no_pool_thread_left() -> Iterator[None]:
    assert not pool_threads(), "a previous test left a runtime running"
    yield
    assert not pool_threads()


# -- 1. startup, arguments, pinning --------------------------------------------------------------


class _MyLoop(asyncio.SelectorEventLoop):
    pass


def _factories() -> list[object]:
    params: list[object] = [
        pytest.param("asyncio", asyncio.SelectorEventLoop, id="asyncio"),
        pytest.param(_MyLoop, _MyLoop, id="callable"),
    ]
    if uvloop is not None:
        params += [
            pytest.param("uvloop", uvloop.Loop, id="uvloop"),
            pytest.param("auto", uvloop.Loop, id="auto"),
        ]
    return params


@pytest.mark.asyncio
@pytest.mark.parametrize(("loop_factory", "loop_type"), _factories())
async def test_start_runs_one_named_thread_per_cpu_on_the_chosen_loop(
    loop_factory: object, loop_type: type
) -> None:
    seen: dict[int, tuple[str, type]] = {}

    def record(cpu: int) -> aw.Work:
        return aw.Work(lambda w: seen.__setitem__(cpu, (tname(), type(asyncio.get_running_loop()))))

    assert not pool_threads()
    async with aw.Runtime(cpus=2, loop_factory=loop_factory, shutdown_timeout=SHUT) as rt:  # type: ignore[arg-type]
        assert rt.running
        assert pool_threads() == {"aiowq/0", "aiowq/1"}
        wq = aw.alloc_workqueue("where", 0, 0)
        for cpu in range(2):
            assert aw.queue_work_on(cpu, wq, record(cpu))
        await asyncio.wait_for(aw.flush_workqueue(wq), GUARD)
        loops = [pool.loop for pool in rt.pools]
        assert len(loops) == 2 and loops[0] is not loops[1]
        assert not any(loop.is_closed() for loop in loops)
        assert asyncio.get_running_loop() not in loops
    assert seen == {0: ("aiowq/0", loop_type), 1: ("aiowq/1", loop_type)}
    assert not rt.running
    assert not pool_threads()
    assert all(loop.is_closed() for loop in loops)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"cpus": 0}, ValueError, "cpus"),
        ({"cpus": -1}, ValueError, "cpus"),
        ({"cpus": True}, TypeError, "cpus"),
        ({"cpus": "2"}, TypeError, "cpus"),
        ({"cpus": 2.0}, TypeError, "cpus"),
        ({"cpus": 2, "loop_factory": "nope"}, ValueError, "loop_factory.*'nope'"),
        ({"cpus": 2, "loop_factory": 3}, ValueError, "loop_factory"),
        ({"cpus": 2, "pin": 1}, TypeError, "pin"),
    ],
)
def test_bad_arguments_are_refused_naming_the_problem(
    kwargs: dict[str, object], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        aw.Runtime(**kwargs)  # type: ignore[arg-type]
    assert not pool_threads()


@pytest.mark.asyncio
async def test_a_loop_factory_that_fails_fails_start_and_leaves_nothing_running() -> None:
    def broken() -> asyncio.AbstractEventLoop:
        raise RuntimeError("no loop for you")

    rt = aw.Runtime(cpus=2, loop_factory=broken, shutdown_timeout=SHUT)
    with pytest.raises(RuntimeError, match="no loop for you"):
        await rt.start()
    assert not rt.running
    assert not pool_threads()
    async with aw.Runtime(
        cpus=1, shutdown_timeout=SHUT
    ) as ok:  # not left active: another may start
        assert ok.running


@pytest.mark.asyncio
@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")
async def test_pin_pins_each_pool_thread_to_its_cpu() -> None:
    before = os.sched_getaffinity(0)
    masks: dict[int, set[int]] = {}

    def record(cpu: int) -> aw.Work:
        # Affinity is per thread on Linux: pid 0 is the calling (pool) thread.
        return aw.Work(lambda w: masks.__setitem__(cpu, os.sched_getaffinity(0)))

    async with aw.Runtime(cpus=2, pin=True, shutdown_timeout=SHUT) as rt:
        assert len(rt.pinned_to) == 2
        assert set(rt.pinned_to) <= before
        if len(before) >= 2:
            assert rt.pinned_to[0] != rt.pinned_to[1]
        wq = aw.alloc_workqueue("pinned", 0, 0)
        for cpu in range(2):
            assert aw.queue_work_on(cpu, wq, record(cpu))
        await asyncio.wait_for(aw.flush_workqueue(wq), GUARD)
    assert masks == {0: {rt.pinned_to[0]}, 1: {rt.pinned_to[1]}}
    assert os.sched_getaffinity(0) == before  # the host thread is not pinned


# -- 2. one runtime at a time ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_only_one_runtime_runs_and_none_starts_twice() -> None:
    first = aw.Runtime(cpus=1, shutdown_timeout=SHUT)
    second = aw.Runtime(cpus=2, shutdown_timeout=SHUT)
    async with first:
        with pytest.raises(aw.WorkqueueError, match="already running"):
            await second.start()
        with pytest.raises(aw.WorkqueueError):
            async with aw.Runtime(cpus=2, shutdown_timeout=SHUT):
                pass  # pragma: no cover - never entered
        with pytest.raises(aw.WorkqueueError):
            await first.start()
        assert pool_threads() == {"aiowq/0"}  # the refused ones started no thread
        assert first.running and not second.running
        done: list[str] = []
        wq = aw.alloc_workqueue("still", 0, 0)
        assert aw.queue_work(wq, aw.Work(lambda w: done.append(tname())))
        await asyncio.wait_for(aw.flush_workqueue(wq), GUARD)
        assert done == ["aiowq/0"]
    with pytest.raises(aw.WorkqueueError, match="again"):
        await first.start()
    assert not pool_threads()
    async with second:  # refused while the first ran: it may start now
        assert pool_threads() == {"aiowq/0", "aiowq/1"}


# -- 3. routing -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_routing_local_pool_round_robin_outside_and_explicit_cpu() -> None:
    async with aw.Runtime(cpus=2, shutdown_timeout=SHUT):
        wq = aw.alloc_workqueue("route", 0, 0)

        # From a pool thread, queue_work stays on that pool; queue_work_on names the pool.
        where: dict[str, str] = {}

        def parent(k: int, i: int) -> aw.Work:
            child = aw.Work(lambda w: where.__setitem__(f"child {k}.{i}", tname()))
            other = aw.Work(lambda w: where.__setitem__(f"other {k}.{i}", tname()))

            def fn(w: aw.Work) -> None:
                where[f"parent {k}.{i}"] = tname()
                where[f"queued {k}.{i}"] = str(aw.queue_work(wq, child))
                where[f"queued_on {k}.{i}"] = str(aw.queue_work_on(1 - k, wq, other))

            return aw.Work(fn)

        for i in range(4):
            for k in (0, 1):
                assert aw.queue_work_on(k, wq, parent(k, i))
        await asyncio.wait_for(aw.drain_workqueue(wq), GUARD)  # waits for chained work too
        for i in range(4):
            for k in (0, 1):
                assert where[f"queued {k}.{i}"] == where[f"queued_on {k}.{i}"] == "True"
                assert where[f"parent {k}.{i}"] == f"aiowq/{k}"
                assert where[f"child {k}.{i}"] == f"aiowq/{k}", (k, i)
                assert where[f"other {k}.{i}"] == f"aiowq/{1 - k}", (k, i)

        # From the host loop: round-robin over both pools.
        names: list[str] = []
        for _ in range(10):
            assert aw.queue_work(wq, aw.Work(lambda w: names.append(tname())))
        await asyncio.wait_for(aw.flush_workqueue(wq), GUARD)
        assert Counter(names) == {"aiowq/0": 5, "aiowq/1": 5}

        # From a plain thread: round-robin as well.
        names.clear()

        def producer() -> None:
            for _ in range(10):
                aw.queue_work(wq, aw.Work(lambda w: names.append(tname())))

        th = threading.Thread(target=producer)
        th.start()
        await wait_until(lambda: not th.is_alive(), "the producer thread")
        await asyncio.wait_for(aw.flush_workqueue(wq), GUARD)
        assert Counter(names) == {"aiowq/0": 5, "aiowq/1": 5}

        # queue_work_on from the host names the pool.
        per_cpu: dict[int, list[str]] = {0: [], 1: []}

        def on(cpu: int) -> aw.Work:
            return aw.Work(lambda w: per_cpu[cpu].append(tname()))

        for cpu in (0, 1, 1, 0, 1, 0):
            assert aw.queue_work_on(cpu, wq, on(cpu))
        await asyncio.wait_for(aw.flush_workqueue(wq), GUARD)
        assert per_cpu == {0: ["aiowq/0"] * 3, 1: ["aiowq/1"] * 3}

        # A cpu with no pool.
        with pytest.raises(ValueError, match=r"cpu 5.*route"):
            aw.queue_work_on(5, wq, aw.Work(noop))
        with pytest.raises(ValueError, match="cpu 2"):
            aw.queue_delayed_work_on(2, wq, aw.DelayedWork(noop), 0.1)
        with pytest.raises(ValueError, match="cpu 2"):
            aw.mod_delayed_work_on(2, wq, aw.DelayedWork(noop), 0.1)
        assert wq.stats().armed == 0


# -- 4. unbound and bound max_active --------------------------------------------------------------


@pytest.mark.asyncio
async def test_unbound_queue_is_served_by_every_pool_and_max_active_counts_in_total() -> None:
    async with aw.Runtime(cpus=2, shutdown_timeout=SHUT):
        wq = aw.alloc_workqueue("ub", aw.WQ.UNBOUND, 3)
        probe = aw.alloc_workqueue("probe", 0, 0)
        g = Gauge()
        for _ in range(30):  # until both pools have served the shared queue
            gate = threading.Event()

            async def fn(w: aw.Work, gate: threading.Event = gate) -> None:
                g.enter()
                try:
                    await wait_event(gate)
                finally:
                    g.leave()

            for _ in range(6):
                assert aw.queue_work(wq, aw.Work(fn))
            await wait_until(lambda: g.now == 3, "3 unbound items running")
            await turn_pools(probe)
            assert g.now == 3  # max_active is a total over both pools
            st = wq.stats()
            assert (st.running, st.pending) == (3, 3)
            gate.set()
            await asyncio.wait_for(aw.flush_workqueue(wq), GUARD)
            if set(g.names) == {"aiowq/0", "aiowq/1"}:
                break
        assert set(g.names) == {"aiowq/0", "aiowq/1"}
        assert g.peak == 3


@pytest.mark.asyncio
async def test_bound_queue_max_active_counts_per_pool() -> None:
    async with aw.Runtime(cpus=2, shutdown_timeout=SHUT):
        wq = aw.alloc_workqueue("bound", 0, 2)
        probe = aw.alloc_workqueue("probe", 0, 0)
        g = Gauge()
        gate = threading.Event()

        async def fn(w: aw.Work) -> None:
            g.enter()
            try:
                await wait_event(gate)
            finally:
                g.leave()

        for _ in range(8):  # round-robin: 4 per pool
            assert aw.queue_work(wq, aw.Work(fn))
        await wait_until(lambda: g.now == 4, "2 items running on each pool")
        await turn_pools(probe)
        assert g.now == 4
        assert g.per == {"aiowq/0": 2, "aiowq/1": 2}
        gate.set()
        await asyncio.wait_for(aw.flush_workqueue(wq), GUARD)
        assert g.peak_per == {"aiowq/0": 2, "aiowq/1": 2}
        assert Counter(g.names) == {"aiowq/0": 4, "aiowq/1": 4}


# -- 5. ordered queues across pools ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_ordered_queue_is_fifo_and_one_at_a_time_across_pools() -> None:
    async with aw.Runtime(cpus=2, shutdown_timeout=SHUT):
        wq = aw.alloc_ordered_workqueue("ord")
        helper = aw.alloc_workqueue("helper", 0, 0)
        g = Gauge()
        order: list[str] = []

        def item(tag: str) -> aw.Work:
            async def fn(w: aw.Work) -> None:
                g.enter()
                order.append(tag)
                await yields(3)
                g.leave()

            return aw.Work(fn)

        gate = threading.Event()

        async def head(w: aw.Work) -> None:
            g.enter()
            order.append("head")
            try:
                await wait_event(gate)
            finally:
                g.leave()

        assert aw.queue_work(wq, aw.Work(head))
        await wait_until(lambda: order == ["head"], "the head item")
        for i in range(10):
            assert aw.queue_work(wq, item(f"a{i}"))
        dwork = aw.DelayedWork(item("delayed").func)
        assert aw.queue_delayed_work(wq, dwork, 0.05)
        for i in range(10):  # queued after the timer was armed, before it fired
            assert aw.queue_work(wq, item(f"b{i}"))
        assert wq.stats().armed == 1  # (precondition: 10 queue calls took less than 50 ms)
        await wait_until(lambda: wq.stats().armed == 0, "the delayed item's timer")

        def producer() -> None:  # a plain thread
            for i in range(10):
                aw.queue_work(wq, item(f"t{i}"))

        th = threading.Thread(target=producer)
        th.start()
        await wait_until(lambda: not th.is_alive(), "the producer thread")

        def from_pool(w: aw.Work) -> None:  # a work item on pool 1
            for i in range(10):
                aw.queue_work(wq, item(f"p{i}"))

        assert aw.queue_work_on(1, helper, aw.Work(from_pool))
        await asyncio.wait_for(aw.flush_workqueue(helper), GUARD)
        assert order == ["head"]  # the head still holds the only slot
        gate.set()
        await asyncio.wait_for(aw.flush_workqueue(wq), GUARD)
    expected = (
        ["head"]
        + [f"a{i}" for i in range(10)]
        + [f"b{i}" for i in range(10)]
        + ["delayed"]
        + [f"t{i}" for i in range(10)]
        + [f"p{i}" for i in range(10)]
    )
    assert order == expected
    assert g.peak == 1


# -- 6. non-reentrancy across pools (R3) ----------------------------------------------------------


@pytest.mark.asyncio
async def test_running_work_queued_on_another_pool_waits_for_the_run_to_end() -> None:
    async with aw.Runtime(cpus=2, shutdown_timeout=SHUT):
        wq = aw.alloc_workqueue("r3", 0, 4)
        probe = aw.alloc_workqueue("probe", 0, 0)
        g = Gauge()
        started = threading.Event()
        gate = threading.Event()
        again = threading.Event()  # the second run has started
        gate2 = threading.Event()
        runs: list[str] = []

        async def fn(w: aw.Work) -> None:
            g.enter()
            try:
                runs.append(tname())
                if len(runs) == 1:
                    started.set()
                    await wait_event(gate)
                else:
                    again.set()
                    await wait_event(gate2)
            finally:
                g.leave()

        w = aw.Work(fn)
        assert aw.queue_work_on(0, wq, w)
        await wait_event(started)
        assert aw.queue_work_on(1, wq, w) is True  # R2: running, not pending
        assert aw.queue_work_on(1, wq, w) is False  # R1
        await turn_pools(probe)  # pool 1 has had every chance to take it
        assert runs == ["aiowq/0"]
        assert aw.work_busy(w) == aw.WorkBusy.PENDING | aw.WorkBusy.RUNNING
        gate.set()
        await wait_event(again)
        # Waits for the second run, which cannot end before it is released: under load the
        # pools once finished both runs before this thread got to call flush_work.
        flush = asyncio.ensure_future(aw.flush_work(w))
        await yields(3)  # flush_work registers its waiter in its first step
        assert not flush.done()
        gate2.set()
        assert await asyncio.wait_for(flush, GUARD) is True
        assert len(runs) == 2
        await asyncio.wait_for(aw.flush_workqueue(wq), GUARD)
        assert len(runs) == 2  # exactly once more
        assert g.peak == 1
        assert not aw.work_pending(w)
        assert wq.stats().completed == 2


# -- 7. barriers from every kind of loop ----------------------------------------------------------


async def exercise_barriers(tag: str) -> list[str]:
    """Each barrier against a fresh queue, awaited on the calling loop; returns what was done."""
    steps: list[str] = []
    wq = aw.alloc_workqueue(f"target-{tag}", 0, 4)

    # flush_work waits for the running instance.
    gate = threading.Event()
    done: list[aw.Work] = []
    w = aw.Work(gated(gate, done))
    assert aw.queue_work(wq, w)
    t: asyncio.Future[object] = asyncio.ensure_future(aw.flush_work(w))
    await yields()
    assert not t.done() and not done
    gate.set()
    assert await asyncio.wait_for(t, GUARD) is True
    assert done == [w]
    steps.append("flush_work")

    # flush_workqueue waits for every item queued before it.
    gate = threading.Event()
    done = []
    items = [aw.Work(gated(gate, done)) for _ in range(4)]
    for it in items:
        assert aw.queue_work(wq, it)
    t = asyncio.ensure_future(aw.flush_workqueue(wq))
    await yields()
    assert not t.done() and not done
    gate.set()
    await asyncio.wait_for(t, GUARD)
    assert sorted(map(id, done)) == sorted(map(id, items))
    steps.append("flush_workqueue")

    # cancel_work_sync takes the pending instance back and waits for the running one.
    gate = threading.Event()
    started = threading.Event()
    runs: list[str] = []

    async def once(w: aw.Work) -> None:
        runs.append(tname())
        started.set()
        await wait_event(gate)

    w = aw.Work(once)
    assert aw.queue_work(wq, w)
    await wait_event(started)
    assert aw.queue_work(wq, w)  # pending again while running
    t = asyncio.ensure_future(aw.cancel_work_sync(w))
    await yields()
    assert not t.done()
    assert aw.queue_work(wq, w) is False  # R11: no queueing while cancel_sync runs
    gate.set()
    assert await asyncio.wait_for(t, GUARD) is True
    assert aw.work_busy(w) == aw.WorkBusy(0)
    assert len(runs) == 1
    steps.append("cancel_work_sync")

    # drain_workqueue waits for chained work, and refuses everyone else meanwhile.
    gate = threading.Event()
    count = [0]

    async def chain(w: aw.Work) -> None:
        if count[0] == 0:
            await wait_event(gate)
        count[0] += 1
        if count[0] < 4 and not aw.queue_work(wq, w):
            raise AssertionError("chained queueing during the drain was refused")

    assert aw.queue_work(wq, aw.Work(chain))
    t = asyncio.ensure_future(aw.drain_workqueue(wq))
    await yields()
    assert not t.done()
    with pytest.raises(aw.WorkqueueDrainingError, match=f"target-{tag}"):
        aw.queue_work(wq, aw.Work(noop))
    gate.set()
    await asyncio.wait_for(t, GUARD)
    assert count[0] == 4
    assert aw.queue_work(wq, aw.Work(noop))  # queueable again after the drain
    steps.append("drain_workqueue")

    # destroy_workqueue fires armed items at once, drains, then refuses everything.
    gate = threading.Event()
    done = []
    w = aw.Work(gated(gate, done))
    dwork = aw.DelayedWork(lambda d: done.append(d))
    assert aw.queue_work(wq, w)
    assert aw.queue_delayed_work(wq, dwork, 3600)
    t = asyncio.ensure_future(aw.destroy_workqueue(wq))
    await yields()
    assert not t.done()
    gate.set()
    await asyncio.wait_for(t, GUARD)
    assert sorted(map(id, done)) == sorted([id(w), id(dwork)])
    assert wq.destroyed
    with pytest.raises(aw.WorkqueueDestroyedError, match=f"target-{tag}"):
        aw.queue_work(wq, aw.Work(noop))
    await asyncio.wait_for(aw.destroy_workqueue(wq), GUARD)  # a second destroy returns at once
    steps.append("destroy_workqueue")
    return steps


ALL_BARRIERS = [
    "flush_work",
    "flush_workqueue",
    "cancel_work_sync",
    "drain_workqueue",
    "destroy_workqueue",
]


@pytest.mark.asyncio
async def test_barriers_from_the_host_loop() -> None:
    async with aw.Runtime(cpus=2, shutdown_timeout=SHUT):
        assert await exercise_barriers("host") == ALL_BARRIERS


@pytest.mark.asyncio
async def test_barriers_from_a_work_item_on_a_pool_loop() -> None:
    async with aw.Runtime(cpus=2, shutdown_timeout=SHUT):
        driver = aw.alloc_workqueue("driver", 0, 0)
        outcome: dict[int, object] = {}

        def drive(cpu: int) -> aw.Work:
            async def fn(w: aw.Work) -> None:
                try:
                    outcome[cpu] = (tname(), await exercise_barriers(f"pool{cpu}"))
                except BaseException as exc:  # reported by the test, not the queue's handler
                    outcome[cpu] = exc

            return aw.Work(fn)

        for cpu in range(2):
            assert aw.queue_work_on(cpu, driver, drive(cpu))
        await asyncio.wait_for(aw.flush_workqueue(driver), GUARD)
    for cpu in range(2):
        if isinstance(outcome[cpu], BaseException):
            raise outcome[cpu]  # type: ignore[misc]
        assert outcome[cpu] == (f"aiowq/{cpu}", ALL_BARRIERS)


@pytest.mark.asyncio
@pytest.mark.parametrize("thread_loop", ["asyncio", "uvloop"])
async def test_barriers_from_a_loop_in_another_thread(thread_loop: str) -> None:
    if thread_loop == "uvloop" and uvloop is None:
        pytest.skip("uvloop is not installed")
    factory = uvloop.new_event_loop if thread_loop == "uvloop" else asyncio.new_event_loop
    outcome: list[object] = []

    def main() -> None:
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                outcome.append(runner.run(exercise_barriers("thread")))
        except BaseException as exc:
            outcome.append(exc)

    async with aw.Runtime(cpus=2, shutdown_timeout=SHUT):
        th = threading.Thread(target=main, name="plain")
        th.start()
        await wait_until(lambda: not th.is_alive(), "the plain thread's loop", GUARD * 3)
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    assert outcome == [ALL_BARRIERS]


# -- 8. delayed work never runs early, on either pool loop type -----------------------------------


class Timed(aw.DelayedWork):
    __slots__ = ("delay", "queued_at", "started_at")

    def __init__(self, delay: float) -> None:
        super().__init__(Timed.run)
        self.delay = delay
        self.queued_at = 0.0
        self.started_at: float | None = None

    @staticmethod
    def run(w: Timed) -> None:
        w.started_at = time.monotonic()


#: Tolerance for float arithmetic on clock values only (1 ns), far below any early firing.
FLOAT_EPS = 1e-9
DELAYS = [0.0003, 0.0005, 0.0009, 0.001, 0.0011, 0.0015, 0.002, 0.0025, 0.003, 0.0049, 0.0101]


@pytest.mark.asyncio
@pytest.mark.parametrize("loop_factory", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
async def test_delayed_work_on_the_runtime_never_runs_early(loop_factory: str) -> None:
    items: list[Timed] = []

    def arm(wq: aw.Workqueue, cpu: int | None, delay: float) -> None:
        d = Timed(delay)
        items.append(d)
        d.queued_at = time.monotonic()  # before the call: the measured wait is never too long
        if cpu is None:
            assert aw.queue_delayed_work(wq, d, delay)
        else:
            assert aw.queue_delayed_work_on(cpu, wq, d, delay)

    async with aw.Runtime(cpus=2, loop_factory=loop_factory, shutdown_timeout=SHUT):
        wq = aw.alloc_workqueue("timers", 0, 0)
        ub = aw.alloc_workqueue("timers-ub", aw.WQ.UNBOUND, 0)
        for _ in range(2):
            for delay in DELAYS:
                arm(wq, 0, delay)  # from the host, onto each pool
                arm(wq, 1, delay)
                arm(wq, None, delay)
                arm(ub, None, delay)
            await asyncio.sleep(0.003)  # let the pool loops go idle between rounds

        def from_pool(w: aw.Work) -> None:  # armed on the pool's own loop
            for delay in DELAYS:
                arm(wq, None, delay)
                arm(ub, None, delay)

        for cpu in range(2):
            assert aw.queue_work_on(cpu, wq, aw.Work(from_pool))

        # mod_delayed_work re-arms to now + delay.
        for cpu in range(2):
            for delay in DELAYS[::3]:
                d = Timed(delay)
                items.append(d)
                assert aw.queue_delayed_work_on(cpu, wq, d, 3600)
                d.queued_at = time.monotonic()
                assert aw.mod_delayed_work_on(cpu, wq, d, delay) is True

        n = 2 * 4 * len(DELAYS) + 2 * 2 * len(DELAYS) + 2 * len(DELAYS[::3])
        await wait_until(
            lambda: len(items) == n and all(d.started_at is not None for d in items), "every timer"
        )
    early = [
        (d.delay, d.started_at - d.queued_at)  # type: ignore[operator]
        for d in items
        if d.started_at - d.queued_at < d.delay - FLOAT_EPS  # type: ignore[operator]
    ]
    assert not early, f"{len(early)} of {len(items)} ran early (delay, waited): {early[:10]}"


class LoopTimed(aw.DelayedWork):
    __slots__ = ("delay", "queued_at", "started_at")

    def __init__(self, delay: float) -> None:
        super().__init__(LoopTimed.run)
        self.delay = delay
        self.queued_at = 0.0
        self.started_at: float | None = None

    @staticmethod
    def run(w: LoopTimed) -> None:
        w.started_at = asyncio.get_running_loop().time()


@pytest.mark.asyncio
@pytest.mark.parametrize("loop_factory", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
async def test_delayed_work_never_runs_early_on_the_pool_loops_own_clock(loop_factory: str) -> None:
    """R8 in the loop's own time: uvloop rounds a timer's delay to whole milliseconds (0.5 ms
    becomes 0), so its timers fire early and the library must re-arm them."""
    items: list[LoopTimed] = []

    def arm(wq: aw.Workqueue, cpu: int, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        d = LoopTimed(delay)
        items.append(d)
        d.queued_at = loop.time()
        assert aw.queue_delayed_work_on(cpu, wq, d, delay)

    async with aw.Runtime(cpus=2, loop_factory=loop_factory, shutdown_timeout=SHUT) as rt:
        wq = aw.alloc_workqueue("loop-timers", 0, 0)

        def from_pool(w: aw.Work) -> None:  # armed on the pool's own loop, in its own time
            loop = asyncio.get_running_loop()
            cpu = [p.loop for p in rt.pools].index(loop)
            for delay in DELAYS:
                arm(wq, cpu, loop, delay)

        def all_started(n: int) -> Callable[[], bool]:
            return lambda: len(items) == n and all(d.started_at is not None for d in items)

        for r in range(1, 4):
            for cpu in range(2):
                assert aw.queue_work_on(cpu, wq, aw.Work(from_pool))
            await wait_until(all_started(r * 2 * len(DELAYS)), "every timer")
    early = [
        (d.delay, d.started_at - d.queued_at)  # type: ignore[operator]
        for d in items
        if d.started_at - d.queued_at < d.delay - FLOAT_EPS  # type: ignore[operator]
    ]
    assert len(items) == 3 * 2 * len(DELAYS)
    assert not early, f"{len(early)} of {len(items)} ran early (delay, waited): {early[:10]}"


# -- 9. the system queues follow the active runtime -----------------------------------------------


@pytest.mark.asyncio
async def test_system_queues_run_on_the_pools_while_a_runtime_runs() -> None:
    names: dict[str, str] = {}

    def rec(key: str) -> Callable[[aw.Work], None]:
        return lambda w: names.__setitem__(key, tname())

    async with aw.Runtime(cpus=2, shutdown_timeout=SHUT):
        assert aw.schedule_work(aw.Work(rec("system_wq")))
        assert aw.schedule_delayed_work(aw.DelayedWork(rec("delayed")), 0.001)
        assert aw.queue_work(aw.system_unbound_wq, aw.Work(rec("unbound")))
        assert aw.queue_work(aw.system_highpri_wq, aw.Work(rec("highpri")))
        assert aw.queue_work(aw.system_long_wq, aw.Work(rec("long")))
        await wait_until(lambda: len(names) == 5, "the system queue items")
    assert all(n.startswith("aiowq/") for n in names.values()), names

    # Afterwards they run on the host loop again.
    host = tname()
    assert aw.schedule_work(aw.Work(rec("after")))
    await wait_until(lambda: "after" in names, "the item queued after the runtime")
    assert names["after"] == host


def test_system_wq_runs_on_the_main_thread_in_asyncio_run_after_a_runtime() -> None:
    async def inside() -> str:
        async with aw.Runtime(cpus=1, shutdown_timeout=SHUT):
            return await run_on_system_wq()

    async def run_on_system_wq() -> str:
        ran: list[str] = []
        assert aw.schedule_work(aw.Work(lambda w: ran.append(tname())))
        await wait_until(lambda: bool(ran), "the system_wq item")
        return ran[0]

    assert threading.current_thread() is threading.main_thread()
    assert asyncio.run(inside()) == "aiowq/0"
    assert asyncio.run(run_on_system_wq()) == threading.main_thread().name


# -- 10. a queue outlives its runtime -------------------------------------------------------------


@pytest.mark.asyncio
async def test_workqueue_of_an_ended_runtime_refuses_work_naming_the_queue() -> None:
    async with aw.Runtime(cpus=2, shutdown_timeout=SHUT):
        used = aw.alloc_workqueue("orphan-used", 0, 0)
        unbound = aw.alloc_workqueue("orphan-unbound", aw.WQ.UNBOUND, 0)
        ordered = aw.alloc_ordered_workqueue("orphan-ordered")
        unused = aw.alloc_workqueue("orphan-unused", 0, 0)
        for q in (used, unbound, ordered):
            assert aw.queue_work(q, aw.Work(noop))
            await asyncio.wait_for(aw.flush_workqueue(q), GUARD)

    def attempts(q: aw.Workqueue) -> list[Callable[[], object]]:
        return [
            lambda: aw.queue_work(q, aw.Work(noop)),
            lambda: aw.queue_work_on(0, q, aw.Work(noop)),
            lambda: aw.queue_delayed_work(q, aw.DelayedWork(noop), 0.1),
            lambda: aw.queue_delayed_work(q, aw.DelayedWork(noop), 0),
            lambda: aw.mod_delayed_work(q, aw.DelayedWork(noop), 0.1),
            lambda: q.submit(print, "never"),
        ]

    for q in (used, unbound, ordered, unused):
        for attempt in attempts(q):
            with pytest.raises(aw.WorkqueueLoopError, match=q.name) as info:
                attempt()
            assert isinstance(info.value, aw.WorkqueueError)

    async with aw.Runtime(cpus=1, shutdown_timeout=SHUT):  # nor does it move to a later runtime
        with pytest.raises(aw.WorkqueueError, match="orphan-used"):
            aw.queue_work(used, aw.Work(noop))


# -- 11. shutdown ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_shutdown_reports_what_did_not_finish_and_leaves_nothing_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt = aw.Runtime(cpus=2)
    await rt.start()
    release = threading.Event()
    t: asyncio.Future[list[aw.Unfinished]] | None = None
    try:
        stuck = aw.alloc_workqueue("stuck", 0, 0)
        other = aw.alloc_workqueue("other", 0, 0)
        started = threading.Event()

        async def forever_fn(w: aw.Work) -> None:
            started.set()
            await asyncio.sleep(3600)

        forever = aw.Work(forever_fn)
        armed = aw.DelayedWork(noop)
        assert aw.queue_work_on(0, stuck, forever)
        await wait_event(started)
        assert aw.queue_delayed_work(stuck, armed, 3600)

        # An item that is still running when the shutdown starts, finishes within the deadline
        # and chains one more item (running work may still queue while the shutdown flushes).
        finishing_started = threading.Event()
        finished: list[str] = []
        chained = aw.Work(lambda w: finished.append("chained"))

        async def finishing_fn(w: aw.Work) -> None:
            finishing_started.set()
            await wait_event(release)
            finished.append("finishing")
            if not aw.queue_work(other, chained):
                raise AssertionError("chained queueing during the shutdown was refused")

        finishing = aw.Work(finishing_fn)
        assert aw.queue_work_on(1, other, finishing)
        await wait_event(finishing_started)

        t = asyncio.ensure_future(rt.shutdown(timeout=0.3))
        await wait_until(lambda: not rt.running, "the shutdown to begin")
        with pytest.raises(aw.WorkqueueError, match="other"):
            aw.queue_work(other, aw.Work(noop))  # outside queueing is refused now
        release.set()
        result = await asyncio.wait_for(t, GUARD)
    finally:
        release.set()
        if t is not None and not t.done():
            await asyncio.wait_for(t, GUARD)
        await rt.shutdown(timeout=0)

    assert sorted(result, key=lambda r: r[2]) == [
        (armed, stuck, "armed"),
        (forever, stuck, "running"),
    ]
    assert rt.unfinished == result
    assert finished == ["finishing", "chained"]  # finished in time: not reported
    for work in (forever, armed):
        assert not aw.work_pending(work)
        assert aw.work_busy(work) == aw.WorkBusy(0)
    assert not aw.delayed_work_pending(armed)
    st = stuck.stats()
    assert (st.cancelled, st.in_flight, st.pending, st.armed, st.running) == (2, 0, 0, 0, 0)
    assert (st.queued, st.completed, st.failed) == (2, 0, 0)
    assert other.stats().completed == 2
    warned = [
        r
        for r in caplog.records
        if r.name == "aioworkqueue" and r.levelno == logging.WARNING and "stuck" in r.getMessage()
    ]
    assert len(warned) == 2

    assert not rt.running
    assert not pool_threads()
    assert all(pool.loop.is_closed() for pool in rt.pools)
    t0 = time.monotonic()
    assert await rt.shutdown(timeout=5) == []  # a second shutdown returns at once
    assert time.monotonic() - t0 < 1.0
    async with aw.Runtime(
        cpus=1, shutdown_timeout=SHUT
    ) as again:  # and it is no longer the active runtime
        assert again.running


@pytest.mark.asyncio
@pytest.mark.parametrize("behind_kind", ["sync", "async"])
async def test_shutdown_reports_an_item_waiting_for_a_slot_as_queued(behind_kind: str) -> None:
    """An item behind a stuck one on a max_active=1 queue never started before the deadline: it
    is reported "queued" and is not started by the slot the cancelled run frees."""
    rt = aw.Runtime(cpus=2)
    await rt.start()
    ran: list[str] = []
    try:
        stuck = aw.alloc_workqueue("stuck", 0, 1)
        started = threading.Event()

        async def forever_fn(w: aw.Work) -> None:
            started.set()
            await asyncio.sleep(3600)

        def behind_sync(w: aw.Work) -> None:
            ran.append("behind")

        async def behind_async(w: aw.Work) -> None:
            ran.append("behind")
            await asyncio.sleep(3600)

        forever = aw.Work(forever_fn)
        behind = aw.Work(behind_sync if behind_kind == "sync" else behind_async)
        assert aw.queue_work_on(0, stuck, forever)
        await wait_event(started)
        assert aw.queue_work_on(0, stuck, behind)  # waits for the only slot
        assert stuck.stats().pending == 1
        result = await asyncio.wait_for(rt.shutdown(timeout=0.1), GUARD)
    finally:
        await rt.shutdown(timeout=0)
    assert sorted(result, key=lambda r: r[2]) == [
        (behind, stuck, "queued"),
        (forever, stuck, "running"),
    ]
    assert ran == []  # it never started
    assert not aw.work_pending(behind)
    assert aw.work_busy(behind) == aw.WorkBusy(0)
    st = stuck.stats()
    assert (st.cancelled, st.completed, st.in_flight) == (2, 0, 0)
    assert not pool_threads()


@pytest.mark.asyncio
async def test_leaving_the_block_flushes_and_reports_nothing_when_all_finish() -> None:
    rt = aw.Runtime(cpus=2)
    async with rt:
        wq = aw.alloc_workqueue("idle", 0, 0)
        done: list[str] = []

        async def fn(w: aw.Work) -> None:
            await yields(3)
            done.append(tname())

        for _ in range(6):
            assert aw.queue_work(wq, aw.Work(fn))
    assert sorted(done) == ["aiowq/0"] * 3 + ["aiowq/1"] * 3  # leaving the block flushed them
    assert rt.unfinished == []
    assert await rt.shutdown() == []


# -- 12. exception handlers -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_runtime_exception_handler_and_queue_handler_precedence() -> None:
    to_runtime: list[tuple[aw.Workqueue, aw.Work, BaseException, str]] = []
    to_queue: list[tuple[aw.Workqueue, aw.Work, BaseException, str]] = []

    def rt_handler(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
        to_runtime.append((wq, work, exc, tname()))

    def q_handler(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
        to_queue.append((wq, work, exc, tname()))

    def boom(w: aw.Work) -> None:
        raise ValueError("boom")

    async def aboom(w: aw.Work) -> None:
        await asyncio.sleep(0)
        raise KeyError("aboom")

    async with aw.Runtime(cpus=2, exception_handler=rt_handler, shutdown_timeout=SHUT):
        plain = aw.alloc_workqueue("plain", 0, 0)
        own = aw.alloc_workqueue("own", 0, 0, exception_handler=q_handler)
        w1, w2, w3, w4 = aw.Work(boom), aw.Work(aboom), aw.Work(boom), aw.Work(boom)
        assert aw.queue_work_on(0, plain, w1)
        assert aw.queue_work_on(1, plain, w2)
        assert aw.queue_work(own, w3)
        assert aw.schedule_work(w4)  # a system queue: no handler of its own
        for w in (w1, w2, w3, w4):
            await asyncio.wait_for(aw.flush_work(w), GUARD)
        assert plain.stats().failed == 2 and own.stats().failed == 1
    got = sorted((wq.name, id(w), type(e).__name__) for wq, w, e, _ in to_runtime)
    assert got == sorted(
        [
            ("plain", id(w1), "ValueError"),
            ("plain", id(w2), "KeyError"),
            ("events", id(w4), "ValueError"),
        ]
    )
    assert {(id(w), n) for _, w, _, n in to_runtime if w is not w4} == {
        (id(w1), "aiowq/0"),
        (id(w2), "aiowq/1"),
    }
    assert [(wq, w, type(e)) for wq, w, e, _ in to_queue] == [(own, w3, ValueError)]
    assert all(n.startswith("aiowq/") for *_, n in to_runtime + to_queue)


@pytest.mark.asyncio
async def test_unbound_item_goes_to_a_pool_that_is_not_stuck() -> None:
    import threading as _threading

    release = _threading.Event()
    ran_on: list[str] = []

    def blocker(w: aw.Work) -> None:
        release.wait(10)  # blocks pool 0's loop until the unbound item has run elsewhere

    async with aw.Runtime(cpus=2, loop_factory="asyncio") as rt:
        wq = aw.alloc_workqueue("bound")
        ub = aw.alloc_workqueue("ub", aw.WQ.UNBOUND)
        for _ in range(4):  # warm both pools up: they have parked workers
            aw.queue_work(ub, aw.Work(lambda w: None))
        await aw.flush_workqueue(ub)
        aw.queue_work_on(0, wq, aw.Work(blocker))
        for _ in range(200):
            if rt.stats().pools[0].running:
                break
            await asyncio.sleep(0.005)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()

        def item(w: aw.Work) -> None:
            ran_on.append(_threading.current_thread().name)
            loop.call_soon_threadsafe(done.set)

        aw.queue_work(ub, aw.Work(item))
        try:
            await asyncio.wait_for(done.wait(), 5)
        finally:
            release.set()
        await aw.flush_workqueue(wq)
    assert ran_on == ["aiowq/1"]


@pytest.mark.asyncio
async def test_shutdown_from_a_pool_of_the_runtime_raises() -> None:
    caught: list[BaseException] = []

    async def fn(w: aw.Work) -> None:
        try:
            await rt.shutdown()
        except aw.WorkqueueDeadlockError as exc:
            caught.append(exc)

    async with aw.Runtime(cpus=1, loop_factory="asyncio") as rt:
        wq = aw.alloc_workqueue("own")
        aw.queue_work(wq, aw.Work(fn))
        await aw.flush_workqueue(wq)
        assert rt.running
    assert len(caught) == 1 and "pool cpu=0" in str(caught[0])
