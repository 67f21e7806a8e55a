"""One or more tests per rule of SPEC §3 (R1-R17), named after the rule.

Timers run on a virtual clock (``tests/vclock.py``); nothing here sleeps on the wall clock to
decide an outcome. Interleavings are made explicit with events the test controls.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable

import pytest

import aioworkqueue as aw
from tests.conftest import ExpectedErrors, settle
from tests.vclock import run_virtual


class Item(aw.Work):
    __slots__ = ("label",)

    def __init__(self, func: aw.WorkFunc, label: object = None) -> None:
        super().__init__(func)
        self.label = label


class DItem(aw.DelayedWork):
    __slots__ = ("label",)

    def __init__(self, func: aw.WorkFunc, label: object = None) -> None:
        super().__init__(func)
        self.label = label


# -- R1 -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_r1_pending_bit_second_queue_returns_false_and_runs_once() -> None:
    runs = 0

    def fn(w: aw.Work) -> None:
        nonlocal runs
        runs += 1

    w = aw.Work(fn)
    async with aw.alloc_workqueue("r1") as wq:
        assert aw.queue_work(wq, w) is True
        assert aw.work_pending(w) and w.pending
        assert aw.queue_work(wq, w) is False
        assert aw.queue_work(wq, w) is False
        await aw.flush_workqueue(wq)
        assert runs == 1
        assert not aw.work_pending(w)
        assert aw.queue_work(wq, w) is True
        await aw.flush_work(w)
        assert runs == 2


@pytest.mark.asyncio
async def test_r1_pending_on_another_queue_returns_false() -> None:
    w = aw.Work(lambda w: None)
    async with aw.alloc_workqueue("r1a") as a, aw.alloc_workqueue("r1b") as b:
        assert aw.queue_work(a, w)
        assert not aw.queue_work(b, w)
        assert aw.queue_delayed_work(b, aw.DelayedWork(lambda w: None), 0)
        await a.flush()
        assert a.stats().completed == 1 and b.stats().queued == 1


# -- R2 -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_r2_pending_clears_before_call_so_running_work_can_requeue() -> None:
    seen: list[bool] = []
    runs = 0

    async def fn(w: aw.Work) -> None:
        nonlocal runs
        runs += 1
        seen.append(aw.work_pending(w))
        if runs == 1:
            assert aw.queue_work(wq, w) is True  # queued again while running
            assert aw.work_busy(w) == aw.WorkBusy.PENDING | aw.WorkBusy.RUNNING

    w = aw.Work(fn)
    async with aw.alloc_workqueue("r2") as wq:
        aw.queue_work(wq, w)
        await aw.flush_work(w)
        await wq.flush()
    assert runs == 2
    assert seen == [False, False]


# -- R3 -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_r3_requeued_running_work_never_overlaps_itself() -> None:
    gate = asyncio.Event()
    active = 0
    overlaps = 0
    runs = 0

    async def fn(w: aw.Work) -> None:
        nonlocal active, overlaps, runs
        active += 1
        runs += 1
        overlaps += active > 1
        await gate.wait()
        active -= 1

    w = aw.Work(fn)
    async with aw.alloc_workqueue("r3", 0, 8) as wq:
        assert aw.queue_work(wq, w)
        await settle()
        assert aw.work_busy(w) == aw.WorkBusy.RUNNING
        assert aw.queue_work(wq, w)  # R2; another idle worker would happily take it
        await settle()
        assert runs == 1 and aw.work_busy(w) == aw.WorkBusy.PENDING | aw.WorkBusy.RUNNING
        gate.set()
        await wq.flush()
    assert runs == 2 and overlaps == 0


@pytest.mark.asyncio
async def test_r3_same_work_on_two_queues_never_overlaps() -> None:
    gate = asyncio.Event()
    active = 0
    overlaps = 0

    async def fn(w: aw.Work) -> None:
        nonlocal active, overlaps
        active += 1
        overlaps += active > 1
        await gate.wait()
        active -= 1

    w = aw.Work(fn)
    async with aw.alloc_workqueue("r3a") as a, aw.alloc_workqueue("r3b") as b:
        aw.queue_work(a, w)
        await settle()
        assert aw.queue_work(b, w)
        await settle()
        gate.set()
        await a.flush()
        await b.flush()
        assert a.stats().completed == 1 and b.stats().completed == 1
    assert overlaps == 0


# -- R4 -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_r4_every_successful_queue_runs_once_unless_cancelled() -> None:
    runs: dict[int, int] = {}

    def fn(w: Item) -> None:
        runs[w.label] = runs.get(w.label, 0) + 1  # type: ignore[index]

    items = [Item(fn, i) for i in range(200)]
    queued = {i: 0 for i in range(200)}
    cancelled = {i: 0 for i in range(200)}
    async with aw.alloc_workqueue("r4", 0, 4) as wq:
        for rnd in range(5):
            for i, it in enumerate(items):
                queued[i] += aw.queue_work(wq, it)
                if (i + rnd) % 3 == 0:
                    cancelled[i] += aw.cancel_work(it)
            await asyncio.sleep(0)
        await wq.flush()
    for i in range(200):
        assert runs.get(i, 0) == queued[i] - cancelled[i]


# -- R5 -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_r5_items_start_in_queue_order_and_highpri_first() -> None:
    started: list[str] = []

    async def fn(w: Item) -> None:
        started.append(w.label)  # type: ignore[arg-type]
        await asyncio.sleep(0)

    async with (
        aw.alloc_workqueue("r5", 0, 64) as normal,
        aw.alloc_workqueue("r5hi", aw.WQ.HIGHPRI, 64) as hi,
    ):
        for i in range(10):
            aw.queue_work(normal, Item(fn, f"n{i}"))
        aw.queue_work(hi, Item(fn, "h0"))
        aw.queue_work(hi, Item(fn, "h1"))
        await normal.flush()
        await hi.flush()
    assert started[:2] == ["h0", "h1"]
    assert started[2:] == [f"n{i}" for i in range(10)]


# -- R6 -------------------------------------------------------------------------------------------


def test_r6_ordered_queue_one_at_a_time_in_order_with_delayed_item_taking_its_place() -> None:
    async def main() -> list[str]:
        log: list[str] = []
        active = 0

        async def fn(w: Item) -> None:
            nonlocal active
            active += 1
            assert active == 1, "two items of an ordered queue ran at once"
            log.append(w.label)  # type: ignore[arg-type]
            await asyncio.sleep(1.0)  # virtual
            active -= 1

        async with aw.alloc_ordered_workqueue("r6") as wq:
            for i in range(3):
                aw.queue_work(wq, Item(fn, f"a{i}"))
            aw.queue_delayed_work(wq, DItem(fn, "d"), 1.5)  # fires while a1 runs
            await asyncio.sleep(2.0)
            for i in range(2):
                aw.queue_work(wq, Item(fn, f"b{i}"))
            await wq.flush()
        return log

    assert run_virtual(main) == ["a0", "a1", "a2", "d", "b0", "b1"]


# -- R7 -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_r7_max_active_bounds_concurrency_and_keeps_fifo() -> None:
    active = 0
    peak = 0
    started: list[int] = []
    gate = asyncio.Event()

    async def fn(w: Item) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        started.append(w.label)  # type: ignore[arg-type]
        await gate.wait()
        active -= 1

    async with aw.alloc_workqueue("r7", 0, 3) as wq:
        for i in range(10):
            aw.queue_work(wq, Item(fn, i))
        await settle()
        assert active == 3 and started == [0, 1, 2]
        assert wq.stats().pending == 7 and wq.stats().running == 3
        gate.set()
        await wq.flush()
    assert peak == 3
    assert started == list(range(10))


# -- R8 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("early", [0.0, 0.001, 0.004])
def test_r8_delayed_work_never_runs_early(early: float) -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        lateness: list[float] = []

        def fn(w: DItem) -> None:
            lateness.append(loop.time() - w.label)  # type: ignore[operator]

        async with aw.alloc_workqueue("r8") as wq:
            for delay in (0.0005, 0.002, 0.0105, 0.5, 3.0):
                dw = DItem(fn)
                dw.label = loop.time() + delay
                assert aw.queue_delayed_work(wq, dw, delay)
                assert aw.delayed_work_pending(dw)
            while wq.stats().armed:
                await asyncio.sleep(0.0001)
            await wq.flush()
        return lateness

    lateness = run_virtual(main, early=early)
    assert len(lateness) == 5
    assert min(lateness) >= 0.0


@pytest.mark.asyncio
async def test_r8_zero_delay_queues_at_once() -> None:
    dw = aw.DelayedWork(lambda w: None)
    async with aw.alloc_workqueue("r8z") as wq:
        assert aw.queue_delayed_work(wq, dw, 0)
        assert wq.stats().armed == 0 and wq.stats().pending == 1
        assert not aw.queue_delayed_work(wq, dw, 5)  # already pending
        await wq.flush()
        assert wq.stats().completed == 1


# -- R9 -------------------------------------------------------------------------------------------


def test_r9_mod_delayed_work_rearms_pending_and_arms_idle() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ran_at: list[float] = []
        dw = aw.DelayedWork(lambda w: ran_at.append(loop.time()))
        async with aw.alloc_workqueue("r9") as wq:
            t0 = loop.time()
            assert aw.mod_delayed_work(wq, dw, 5.0) is False  # idle: arm
            await asyncio.sleep(2.0)
            assert aw.mod_delayed_work(wq, dw, 5.0) is True  # pending: re-arm to now + 5
            await asyncio.sleep(4.0)
            assert ran_at == []  # the first deadline (t0 + 5) has passed
            await asyncio.sleep(1.5)
            assert ran_at == [pytest.approx(t0 + 7.0)]
            # queued and not started counts as pending; delay 0 queues at once, at the tail
            aw.queue_work(wq, dw)
            assert aw.mod_delayed_work(wq, dw, 0) is True
            assert wq.stats().armed == 0
            await wq.flush()
            assert len(ran_at) == 2

    run_virtual(main)


# -- R10 ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_r10_cancel_removes_pending_and_does_not_wait_for_running() -> None:
    gate = asyncio.Event()
    runs: list[str] = []

    async def fn(w: Item) -> None:
        runs.append(w.label)  # type: ignore[arg-type]
        await gate.wait()

    async with aw.alloc_workqueue("r10", 0, 1) as wq:
        a, b, c = Item(fn, "a"), Item(fn, "b"), Item(fn, "c")
        d = DItem(fn, "d")
        for it in (a, b, c):
            aw.queue_work(wq, it)
        aw.queue_delayed_work(wq, d, 100)
        await settle()
        assert runs == ["a"]
        assert aw.cancel_work(a) is False  # running, not pending: not waited for
        assert aw.cancel_work(b) is True  # waiting for a max_active slot
        assert aw.cancel_delayed_work(d) is True  # armed
        assert aw.cancel_delayed_work(d) is False
        assert aw.cancel_work(c) is True
        assert wq.stats().cancelled == 3 and wq.stats().armed == 0
        gate.set()
        await wq.flush()
    assert runs == ["a"]


@pytest.mark.asyncio
async def test_r10_cancel_work_on_armed_delayed_work() -> None:
    d = aw.DelayedWork(lambda w: None)
    async with aw.alloc_workqueue("r10d") as wq:
        aw.queue_delayed_work(wq, d, 100)
        assert d.cancel() is True
        assert not d.pending


# -- R11 ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_r11_cancel_sync_stops_self_requeueing_work_and_waits() -> None:
    runs = 0
    in_run = asyncio.Event()
    release = asyncio.Event()

    async def fn(w: aw.Work) -> None:
        nonlocal runs
        runs += 1
        aw.queue_work(wq, w)  # keeps itself going
        in_run.set()
        await release.wait()

    w = aw.Work(fn)
    async with aw.alloc_workqueue("r11") as wq:
        aw.queue_work(wq, w)
        await in_run.wait()
        task = asyncio.create_task(aw.cancel_work_sync(w))
        await settle()
        assert not task.done()  # waits for the running instance
        assert aw.queue_work(wq, w) is False  # cannot be queued meanwhile
        release.set()
        assert await task is True  # the requeued instance was pending
        assert aw.work_busy(w) == aw.WorkBusy(0)
        assert runs == 1
        assert aw.queue_work(wq, w) is True  # may be queued again
        assert await w.cancel_sync() is True  # taken back before any worker saw it
        assert runs == 1
    assert not w.pending


@pytest.mark.asyncio
async def test_r11_cancel_delayed_work_sync_on_armed() -> None:
    d = aw.DelayedWork(lambda w: None)
    async with aw.alloc_workqueue("r11d") as wq:
        aw.queue_delayed_work(wq, d, 100)
        assert await aw.cancel_delayed_work_sync(d) is True
        assert await aw.cancel_delayed_work_sync(d) is False
        assert wq.stats().armed == 0


# -- R12 ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_r12_flush_work_waits_for_the_instance_and_reports_idle() -> None:
    done: list[int] = []

    async def fn(w: aw.Work) -> None:
        await asyncio.sleep(0)
        done.append(1)

    w = aw.Work(fn)
    async with aw.alloc_workqueue("r12") as wq:
        assert await aw.flush_work(w) is False
        aw.queue_work(wq, w)
        assert await aw.flush_work(w) is True
        assert done == [1]
        assert await w.flush() is False


@pytest.mark.asyncio
async def test_r12_flush_work_running_and_pending_waits_for_both() -> None:
    gate = asyncio.Event()
    runs = 0

    async def fn(w: aw.Work) -> None:
        nonlocal runs
        runs += 1
        await gate.wait()

    w = aw.Work(fn)
    async with aw.alloc_workqueue("r12b") as wq:
        aw.queue_work(wq, w)
        await settle()
        aw.queue_work(wq, w)  # running and pending
        flusher = asyncio.create_task(aw.flush_work(w))
        await settle()
        gate.set()
        assert await flusher is True
        assert runs == 2


def test_r12_flush_delayed_work_fires_the_timer_at_once() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ran: list[float] = []
        d = aw.DelayedWork(lambda w: ran.append(loop.time()))
        async with aw.alloc_workqueue("r12d") as wq:
            t0 = loop.time()
            aw.queue_delayed_work(wq, d, 1000)
            assert await aw.flush_work(d) is False  # only armed: not fired, not waited
            assert await aw.flush_delayed_work(d) is True
            assert ran and ran[0] - t0 < 1.0

    run_virtual(main)


# -- R13 ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_r13_flush_waits_for_earlier_items_only_and_returns_under_load() -> None:
    log: list[str] = []
    stop = False

    async def chain(w: Item) -> None:
        await asyncio.sleep(0)
        log.append(w.label)  # type: ignore[arg-type]
        if not stop:
            aw.queue_work(wq, w)  # keeps queueing forever

    async with aw.alloc_workqueue("r13", 0, 4) as wq:
        before = [Item(chain, f"b{i}") for i in range(3)]
        for it in before:
            aw.queue_work(wq, it)
        armed = aw.DelayedWork(lambda w: log.append("timer"))
        aw.queue_delayed_work(wq, armed, 10_000)
        await aw.flush_workqueue(wq)  # must return although the chain never stops
        assert {"b0", "b1", "b2"} <= set(log)
        assert "timer" not in log
        stop = True
        aw.cancel_delayed_work(armed)
        await wq.flush()


@pytest.mark.asyncio
async def test_r13_flush_does_not_wait_for_items_queued_after_it() -> None:
    gate = asyncio.Event()
    late_done = False

    async def early_fn(w: aw.Work) -> None:
        await asyncio.sleep(0)

    async def late_fn(w: aw.Work) -> None:
        nonlocal late_done
        await gate.wait()
        late_done = True

    async with aw.alloc_workqueue("r13b") as wq:
        aw.queue_work(wq, aw.Work(early_fn))
        flusher = asyncio.create_task(aw.flush_workqueue(wq))
        await asyncio.sleep(0)
        aw.queue_work(wq, aw.Work(late_fn))  # after the flush began
        await flusher
        assert not late_done
        gate.set()


# -- R14 ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_r14_drain_rejects_outside_queueing_and_allows_chained_work() -> None:
    chain_left = 5
    gate = asyncio.Event()

    async def chained(w: aw.Work) -> None:
        nonlocal chain_left
        await gate.wait()
        chain_left -= 1
        if chain_left:
            assert aw.queue_work(wq, w)  # chained: allowed during drain

    w = aw.Work(chained)
    async with aw.alloc_workqueue("r14") as wq:
        aw.queue_work(wq, w)
        drainer = asyncio.create_task(aw.drain_workqueue(wq))
        await settle()
        with pytest.raises(aw.WorkqueueDrainingError, match="'r14' is draining"):
            aw.queue_work(wq, aw.Work(chained))
        gate.set()
        await drainer
        assert chain_left == 0
        assert aw.queue_work(wq, aw.Work(lambda w: None))  # draining is over
        await wq.flush()


def test_r14_destroy_fires_armed_items_drains_and_rejects() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ran: list[float] = []
        wq = aw.alloc_workqueue("r14d")
        d = aw.DelayedWork(lambda w: ran.append(loop.time()))
        t0 = loop.time()
        aw.queue_delayed_work(wq, d, 500)
        await aw.destroy_workqueue(wq)
        assert ran and ran[0] - t0 < 1.0
        assert wq.destroyed
        with pytest.raises(aw.WorkqueueDestroyedError, match="'r14d' was destroyed"):
            aw.queue_work(wq, aw.Work(lambda w: None))
        with pytest.raises(aw.WorkqueueDestroyedError):
            aw.queue_delayed_work(wq, aw.DelayedWork(lambda w: None), 1)
        await aw.destroy_workqueue(wq)  # a second destroy returns at once

    run_virtual(main)


# -- R15 ------------------------------------------------------------------------------------------


async def _raises_in_work(
    wq: aw.Workqueue, body: Callable[[aw.Work], object]
) -> BaseException | None:
    caught: list[BaseException | None] = []

    async def fn(w: aw.Work) -> None:
        try:
            await body(w)  # type: ignore[misc]
            caught.append(None)
        except aw.WorkqueueDeadlockError as exc:
            caught.append(exc)

    aw.queue_work(wq, aw.Work(fn))
    await wq.flush()
    return caught[0]


@pytest.mark.asyncio
async def test_r15_flushing_own_queue_raises_instead_of_hanging() -> None:
    async with aw.alloc_workqueue("r15") as wq:
        exc = await _raises_in_work(wq, lambda w: aw.flush_workqueue(wq))
        assert exc is not None and "'r15'" in str(exc)
        assert await _raises_in_work(wq, lambda w: aw.drain_workqueue(wq)) is not None
        assert await _raises_in_work(wq, lambda w: aw.destroy_workqueue(wq)) is not None
        assert await _raises_in_work(wq, lambda w: aw.flush_work(w)) is not None
        assert await _raises_in_work(wq, lambda w: aw.cancel_work_sync(w)) is not None
        assert await _raises_in_work(wq, lambda w: aw.disable_work_sync(w)) is not None
        async with aw.alloc_workqueue("other") as other:
            # flushing another queue from inside is fine
            assert await _raises_in_work(wq, lambda w: aw.flush_workqueue(other)) is None


@pytest.mark.asyncio
async def test_r15_flush_item_behind_caller_in_ordered_queue_raises() -> None:
    async with aw.alloc_ordered_workqueue("r15o") as wq:
        behind = aw.Work(lambda w: None)

        async def first(w: aw.Work) -> None:
            aw.queue_work(wq, behind)
            with pytest.raises(aw.WorkqueueDeadlockError, match="behind the caller"):
                await aw.flush_work(behind)

        aw.queue_work(wq, aw.Work(first))
        await wq.flush()
        assert wq.stats().completed == 2 and wq.stats().failed == 0


# -- R16 ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_r16_exception_goes_to_handler_counted_and_flush_completes() -> None:
    seen: list[tuple[aw.Workqueue, aw.Work, BaseException]] = []

    def handler(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
        seen.append((wq, work, exc))

    def boom(w: aw.Work) -> None:
        raise RuntimeError("boom")

    async def aboom(w: aw.Work) -> None:
        await asyncio.sleep(0)
        raise KeyError("k")

    ok = 0

    def fine(w: aw.Work) -> None:
        nonlocal ok
        ok += 1

    async with aw.alloc_workqueue("r16", exception_handler=handler) as wq:
        b, ab = aw.Work(boom), aw.Work(aboom)
        assert aw.queue_work(wq, b) is True  # never raises to the queuer
        aw.queue_work(wq, ab)
        for _ in range(5):
            aw.queue_work(wq, aw.Work(fine))
        await aw.flush_workqueue(wq)
        st = wq.stats()
    assert st.failed == 2 and st.completed == 5 and ok == 5
    assert {(w, type(e)) for _, w, e in seen} == {(b, RuntimeError), (ab, KeyError)}
    assert all(q is wq for q, _, _ in seen)


@pytest.mark.asyncio
async def test_r16_default_handler_logs_with_queue_and_work(expect_errors: ExpectedErrors) -> None:
    def boom(w: aw.Work) -> None:
        raise RuntimeError("boom")

    async with aw.alloc_workqueue("r16log") as wq:
        aw.queue_work(wq, aw.Work(boom))
        await wq.flush()
    (rec,) = expect_errors.records
    assert rec.name == "aioworkqueue"
    assert (
        "'r16log'" in rec.getMessage() and "fn=" in rec.getMessage() and "boom" in rec.getMessage()
    )
    assert rec.exc_info is not None and isinstance(rec.exc_info[1], RuntimeError)


@pytest.mark.asyncio
async def test_r16_handler_that_raises_is_reported_and_worker_carries_on(
    expect_errors: ExpectedErrors,
) -> None:
    def bad_handler(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
        raise ValueError("handler broke")

    ran = 0

    def fine(w: aw.Work) -> None:
        nonlocal ran
        ran += 1

    def boom(w: aw.Work) -> None:
        raise RuntimeError("boom")

    async with aw.alloc_workqueue("r16h", 0, 1, exception_handler=bad_handler) as wq:
        aw.queue_work(wq, aw.Work(boom))
        aw.queue_work(wq, aw.Work(fine))
        await wq.flush()
    assert ran == 1
    assert any("exception handler" in m for m in expect_errors.messages)


# -- R17 ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_r17_kinds_of_function_run_where_they_should() -> None:
    loop_thread = threading.get_ident()
    where: dict[str, int] = {}

    async def coro_fn(w: aw.Work) -> None:
        where["async"] = threading.get_ident()

    def plain(w: aw.Work) -> None:
        where["plain"] = threading.get_ident()

    def returns_awaitable(w: aw.Work) -> object:
        async def later() -> None:
            where["awaited"] = threading.get_ident()

        return later()

    class AsyncCallable:
        async def __call__(self, w: aw.Work) -> None:
            where["callable"] = threading.get_ident()

    async def with_arg(tag: str, w: aw.Work) -> None:
        where[tag] = threading.get_ident()

    async with aw.alloc_workqueue("r17") as wq:
        for fn in (
            coro_fn,
            plain,
            returns_awaitable,
            AsyncCallable(),
            functools.partial(with_arg, "partial"),
        ):
            aw.queue_work(wq, aw.Work(fn))
        await wq.flush()
    assert set(where) == {"async", "plain", "awaited", "callable", "partial"}
    assert set(where.values()) == {loop_thread}


@pytest.mark.asyncio
async def test_r17_cpu_intensive_plain_functions_run_in_threads_bounded_by_max_active() -> None:
    loop_thread = threading.get_ident()
    lock = threading.Lock()
    active = 0
    peak = 0
    threads: set[int] = set()
    barrier = threading.Barrier(2, timeout=10)

    def crunch(w: aw.Work) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
            threads.add(threading.get_ident())
        assert aw.current_work() is w
        try:
            barrier.wait()  # proves two run at the same time
        except threading.BrokenBarrierError:
            pass
        with lock:
            active -= 1

    async with aw.alloc_workqueue("r17cpu", aw.WQ.CPU_INTENSIVE, 2) as wq:
        for _ in range(6):
            aw.queue_work(wq, aw.Work(crunch))
        await wq.flush()
        assert wq.stats().completed == 6
    assert peak == 2
    assert loop_thread not in threads


@pytest.mark.asyncio
async def test_r17_bh_runs_plain_functions_from_a_loop_callback_and_rejects_coroutines() -> None:
    seen: list[object] = []

    def bh(w: aw.Work) -> None:
        seen.append((asyncio.current_task(), aw.current_work() is w))

    async def coro_fn(w: aw.Work) -> None:
        pass

    async with aw.alloc_workqueue("r17bh", aw.WQ.BH) as wq:
        for _ in range(3):
            aw.queue_work(wq, aw.Work(bh))
        with pytest.raises(TypeError, match=r"WQ\.BH"):
            aw.queue_work(wq, aw.Work(coro_fn))
        with pytest.raises(TypeError, match=r"WQ\.BH"):
            aw.queue_delayed_work(wq, aw.DelayedWork(coro_fn), 1)
        await wq.flush()
    assert seen == [(None, True)] * 3


@pytest.mark.asyncio
async def test_current_work_in_async_and_plain_functions() -> None:
    seen: list[bool] = []

    async def a(w: aw.Work) -> None:
        seen.append(aw.current_work() is w)
        await asyncio.sleep(0)
        seen.append(aw.current_work() is w)

    def p(w: aw.Work) -> None:
        seen.append(aw.current_work() is w)

    assert aw.current_work() is None
    async with aw.alloc_workqueue("cur") as wq:
        aw.queue_work(wq, aw.Work(a))
        aw.queue_work(wq, aw.Work(p))
        await wq.flush()
    assert seen == [True, True, True]


@pytest.mark.asyncio
async def test_r8_never_early_on_the_real_clock_of_this_loop() -> None:
    """On the test's real loop (stdlib and uvloop): uvloop's loop.time() is truncated to whole
    milliseconds, so a deadline computed from it alone could come up to 1 ms short."""
    import time

    short: list[float] = []
    ran = 0

    class Timed(aw.DelayedWork):
        __slots__ = ("delay", "queued_at")

    def fn(w: Timed) -> None:
        nonlocal ran
        ran += 1
        waited = time.monotonic() - w.queued_at
        if waited < w.delay:
            short.append(w.delay - waited)

    async with aw.alloc_workqueue("r8real") as wq:
        for round_ in range(20):
            items = []
            for i in range(10):
                d = Timed(fn)
                d.delay = 0.0005 * (1 + (i + round_) % 5)
                d.queued_at = time.monotonic()
                aw.queue_delayed_work(wq, d, d.delay)
                items.append(d)
            while wq.stats().armed:
                await asyncio.sleep(0.0005)
            await wq.flush()
    assert ran == 200
    assert short == []


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["cancel", "mod"])
async def test_r12_flush_of_running_and_pending_waits_for_the_run_when_pending_is_taken_back(
    how: str,
) -> None:
    gate = asyncio.Event()

    async def fn(w: aw.Work) -> None:
        await gate.wait()

    w = aw.DelayedWork(fn)
    async with aw.alloc_workqueue("r12c") as wq:
        aw.queue_work(wq, w)
        await settle()
        assert aw.queue_work(wq, w)  # running and pending
        flusher = asyncio.create_task(aw.flush_work(w))
        await settle()
        if how == "cancel":
            assert aw.cancel_work(w)
        else:
            assert aw.mod_delayed_work(wq, w, 3600)
        await settle()
        assert not flusher.done()  # the instance running at the call still runs
        gate.set()
        assert await flusher is True
        aw.cancel_work(w)


@pytest.mark.asyncio
async def test_r7_item_that_requeues_itself_into_a_full_queue_gets_its_own_slot_back() -> None:
    """Queued again while it runs on a full max_active 1 queue, the item waits for a slot; the
    end of its own run hands that slot to it (R7). Its state must come out of that exactly: it
    runs once more, and ends idle, queueable and cancellable like any other item."""
    runs = 0

    def again(w: aw.Work) -> None:
        nonlocal runs
        runs += 1
        if runs < 4:
            assert aw.queue_work(wq, w)  # over the limit: waits on the inactive list

    w = aw.Work(again)
    async with aw.alloc_workqueue("self-slot", 0, 1) as wq:
        assert aw.queue_work(wq, w)
        await wq.flush()
        assert runs == 4 and not w.pending and not w.busy
        assert w._state == 0  # nothing left over: not INACTIVE, not QUEUED, not RUNNING
        assert aw.queue_work(wq, w) and aw.queue_work(wq, aw.Work(lambda w: None))
        assert aw.cancel_work(w) and not w.pending
        await wq.flush()
        st = wq.stats()
    assert runs == 4 and st.in_flight == 0 and st.queued == st.completed + st.cancelled
