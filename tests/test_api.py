"""The API surface of SPEC §2: exports, bad input, queries, system queues, submit, binding."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from types import ModuleType

import pytest

import aioworkqueue as aw
from aioworkqueue import _lock


def test_all_is_complete_and_sorted() -> None:
    # Submodules (aioworkqueue.testing, .aiohttp, .prometheus) become attributes once imported.
    public = {
        n for n in dir(aw) if not n.startswith("_") and not isinstance(getattr(aw, n), ModuleType)
    }
    assert set(aw.__all__) == public - {"annotations"}
    assert list(aw.__all__) == sorted(aw.__all__, key=lambda n: (not n.startswith("WQ"), n))
    assert isinstance(aw.__all__, tuple)


def test_constants_and_flags() -> None:
    assert aw.WQ_MAX_ACTIVE == 2048 and aw.WQ_DFL_ACTIVE == 1024
    assert aw.WQ_UNBOUND is aw.WQ.UNBOUND and aw.WQ_BH is aw.WQ.BH
    assert aw.WorkBusy.PENDING == 1 and aw.WorkBusy.RUNNING == 2


def test_alloc_variants() -> None:
    wq = aw.alloc_workqueue("a", aw.WQ.HIGHPRI, 7)
    assert (wq.name, wq.flags, wq.max_active) == ("a", aw.WQ.HIGHPRI, 7)
    assert aw.alloc_workqueue("d").max_active == aw.WQ_DFL_ACTIVE
    o = aw.alloc_ordered_workqueue("o")
    assert o.ordered and o.max_active == 1 and o.flags & aw.WQ.UNBOUND
    c = aw.create_workqueue("c")
    assert c.max_active == 1 and c.flags & aw.WQ.MEM_RECLAIM and not c.ordered
    s = aw.create_singlethread_workqueue("s")
    assert s.ordered and s.flags & aw.WQ.MEM_RECLAIM
    assert "'a'" in repr(wq) and "fn=" in repr(aw.Work(print))


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: aw.alloc_workqueue(3), TypeError, "name must be a str"),  # type: ignore[arg-type]
        (lambda: aw.alloc_workqueue("x", "BH"), TypeError, "flags"),  # type: ignore[arg-type]
        (lambda: aw.alloc_workqueue("x", True), TypeError, "flags"),
        (lambda: aw.alloc_workqueue("x", 1 << 20), ValueError, "unknown flags"),
        (lambda: aw.alloc_workqueue("x", aw.WQ.BH | aw.WQ.UNBOUND), ValueError, "WQ.BH"),
        (lambda: aw.alloc_workqueue("x", 0, -1), ValueError, "max_active .* 0..2048"),
        (lambda: aw.alloc_workqueue("x", 0, 2049), ValueError, "max_active"),
        (lambda: aw.alloc_workqueue("x", 0, 1.5), TypeError, "max_active"),  # type: ignore[arg-type]
        (lambda: aw.alloc_workqueue("x", 0, True), TypeError, "max_active"),
        (lambda: aw.alloc_ordered_workqueue("x", aw.WQ.BH), ValueError, "ordered"),
        (lambda: aw.alloc_workqueue("x", exception_handler=3), TypeError, "callable"),  # type: ignore[arg-type]
        (lambda: aw.Work(3), TypeError, "callable"),  # type: ignore[arg-type]
        (lambda: aw.configure(max_workers=0), ValueError, "max_workers"),
        (lambda: aw.configure(max_workers="1"), TypeError, "max_workers"),  # type: ignore[arg-type]
    ],
)
def test_bad_allocation_input(call: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        call()  # type: ignore[operator]


@pytest.mark.asyncio
async def test_bad_queueing_input_is_rejected_and_leaves_other_items_intact() -> None:
    ran = 0

    def fn(w: aw.Work) -> None:
        nonlocal ran
        ran += 1

    w = aw.Work(fn)
    dw = aw.DelayedWork(fn)
    async with aw.alloc_workqueue("bad") as wq:
        keep = [aw.Work(fn) for _ in range(5)]
        for k in keep:
            aw.queue_work(wq, k)
        bad = [
            (lambda: aw.queue_work("wq", w), TypeError, "expected a Workqueue"),
            (lambda: aw.queue_work(wq, "w"), TypeError, "queue_work: expected a Work"),
            (lambda: aw.queue_work(wq, fn), TypeError, "expected a Work"),
            (lambda: aw.queue_work_on(1, wq, w), ValueError, "no cpu 1"),
            (lambda: aw.queue_work_on(-1, wq, w), ValueError, "cpu must be >= 0"),
            (lambda: aw.queue_work_on(True, wq, w), TypeError, "cpu must be an int"),
            (lambda: aw.queue_delayed_work(wq, w, 1), TypeError, "expected a DelayedWork"),
            (lambda: aw.queue_delayed_work(wq, dw, -1), ValueError, ">= 0"),
            (lambda: aw.queue_delayed_work(wq, dw, math.nan), ValueError, "finite"),
            (lambda: aw.queue_delayed_work(wq, dw, math.inf), ValueError, "finite"),
            (lambda: aw.queue_delayed_work(wq, dw, True), TypeError, "delay"),
            (lambda: aw.queue_delayed_work(wq, dw, "1"), TypeError, "delay"),
            (lambda: aw.mod_delayed_work(wq, dw, -0.5), ValueError, "delay"),
            (lambda: aw.mod_delayed_work_on(2, wq, dw, 1), ValueError, "no cpu 2"),
            (lambda: aw.cancel_work("w"), TypeError, "cancel_work"),
            (lambda: aw.cancel_delayed_work(w), TypeError, "DelayedWork"),
            (lambda: aw.work_pending(None), TypeError, "work_pending"),
            (lambda: aw.delayed_work_pending(w), TypeError, "DelayedWork"),
            (lambda: aw.work_busy(1), TypeError, "work_busy"),
            (lambda: aw.enable_work(w), aw.WorkqueueError, "not disabled"),
            (lambda: wq.submit(3), TypeError, "callable"),
        ]
        for call, exc, match in bad:
            with pytest.raises(exc, match=match):
                call()  # type: ignore[no-untyped-call]
        for coro_call, exc, match in [
            (lambda: aw.flush_work(3), TypeError, "flush_work"),
            (lambda: aw.flush_delayed_work(w), TypeError, "DelayedWork"),
            (lambda: aw.flush_workqueue(None), TypeError, "Workqueue"),
            (lambda: aw.drain_workqueue(1), TypeError, "Workqueue"),
            (lambda: aw.destroy_workqueue(w), TypeError, "Workqueue"),
            (lambda: aw.cancel_work_sync(1), TypeError, "cancel_work_sync"),
            (lambda: aw.cancel_delayed_work_sync(w), TypeError, "DelayedWork"),
            (lambda: aw.destroy_workqueue(aw.system_wq), aw.WorkqueueError, "system"),
        ]:
            with pytest.raises(exc, match=match):
                await coro_call()  # type: ignore[no-untyped-call]
        assert not w.pending and not dw.pending
        await wq.flush()
    assert ran == 5


def test_queueing_outside_a_loop_names_the_problem() -> None:
    wq = aw.alloc_workqueue("noloop")
    with pytest.raises(aw.WorkqueueLoopError, match="'noloop' is not bound to an event loop yet"):
        aw.queue_work(wq, aw.Work(print))


@pytest.mark.asyncio
async def test_queries_and_method_forms() -> None:
    gate = asyncio.Event()

    async def fn(w: aw.Work) -> None:
        await gate.wait()

    w = aw.Work(fn)
    dw = aw.DelayedWork(fn)
    async with aw.alloc_workqueue("q", 0, 4) as wq:
        assert aw.work_busy(w) == aw.WorkBusy(0) and w.busy == aw.WorkBusy(0)
        assert wq.queue(w) and not wq.queue(w)
        assert wq.queue_delayed(dw, 100) and aw.delayed_work_pending(dw)
        assert wq.mod_delayed(dw, 200) is True
        assert wq.queue_on(0, aw.Work(lambda w: None))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert w.busy == aw.WorkBusy.RUNNING
        assert dw.cancel() is True
        st = wq.stats()
        assert (st.armed, st.running, st.cancelled) == (0, 1, 1)
        gate.set()
        assert await w.flush() is True
        await wq.drain()
        assert wq.stats().in_flight == 0


@pytest.mark.asyncio
async def test_disable_and_enable_work() -> None:
    ran = 0

    def fn(w: aw.Work) -> None:
        nonlocal ran
        ran += 1

    w = aw.Work(fn)
    async with aw.alloc_workqueue("dis") as wq:
        aw.queue_work(wq, w)
        assert aw.disable_work(w) is True  # was pending: taken back
        assert aw.disable_work(w) is False
        assert aw.queue_work(wq, w) is False  # disabled
        assert aw.enable_work(w) is False  # count 2 -> 1
        assert aw.queue_work(wq, w) is False
        assert aw.enable_work(w) is True  # count 0
        assert aw.queue_work(wq, w) is True
        await wq.flush()
        assert await aw.disable_work_sync(w) is False
        assert aw.queue_work(wq, w) is False
        aw.enable_work(w)
    assert ran == 1


@pytest.mark.asyncio
async def test_submit_makes_fresh_items_with_args() -> None:
    got: list[object] = []

    async def add(a: int, b: int, *, c: int = 0) -> None:
        got.append(a + b + c)

    async with aw.alloc_workqueue("sub") as wq:
        w1 = wq.submit(add, 1, 2)
        w2 = wq.submit(add, 1, 2, c=3)
        w3 = wq.submit(got.append, "plain")
        assert w1 is not w2 and w1.pending
        await wq.flush()
    assert sorted(map(str, got)) == ["3", "6", "plain"]
    assert "add" in repr(w1) and w3 is not None


@pytest.mark.asyncio
async def test_system_queues_and_schedule() -> None:
    ran: list[str] = []
    assert aw.schedule_work(aw.Work(lambda w: ran.append("now")))
    assert aw.schedule_delayed_work(aw.DelayedWork(lambda w: ran.append("later")), 0)
    for wq in (aw.system_highpri_wq, aw.system_long_wq, aw.system_unbound_wq):
        aw.queue_work(wq, aw.Work(lambda w, n=wq.name: ran.append(n)))
    aw.queue_work(aw.system_freezable_wq, aw.Work(lambda w: ran.append("frz")))
    aw.queue_work(aw.system_bh_wq, aw.Work(lambda w: ran.append("bh")))
    for wq in (
        aw.system_wq,
        aw.system_highpri_wq,
        aw.system_long_wq,
        aw.system_unbound_wq,
        aw.system_freezable_wq,
        aw.system_bh_wq,
    ):
        await aw.flush_workqueue(wq)
    assert sorted(ran) == sorted(
        ["now", "later", "events_highpri", "events_long", "events_unbound", "frz", "bh"]
    )
    assert aw.system_wq.name == "events" and aw.system_bh_wq.flags & aw.WQ.BH


def test_system_queues_rebind_across_asyncio_run_calls() -> None:
    for i in range(3):
        out: list[int] = []

        async def main(i: int = i, out: list[int] = out) -> None:
            aw.schedule_work(aw.Work(lambda w: out.append(i)))
            await aw.flush_workqueue(aw.system_wq)

        asyncio.run(main())
        assert out == [i]


def test_pending_work_on_a_closed_loop_is_reported_not_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wq = aw.alloc_workqueue("dead")
    w = aw.DelayedWork(lambda w: None)

    async def leave_pending() -> None:
        aw.queue_delayed_work(wq, w, 100)  # the loop ends long before the timer

    asyncio.run(leave_pending())
    # R20: reported when the loop shut down, not at the next use; the item is free again
    assert not w.pending and wq.stats().cancelled == 1
    assert any("'dead'" in r.getMessage() and "(armed)" in r.getMessage() for r in caplog.records)

    async def again() -> bool:
        ok = aw.queue_work(wq, w)  # rebinds; the stranded instance is reported and reset
        await wq.flush()
        return ok

    assert asyncio.run(again()) is True
    assert wq.stats().completed == 1


def test_binding_pending_queue_to_a_second_loop_is_an_error() -> None:
    wq = aw.alloc_workqueue("two")
    first = asyncio.new_event_loop()

    async def q() -> None:
        aw.queue_delayed_work(wq, aw.DelayedWork(lambda w: None), 0.01)

    first.run_until_complete(q())  # stopped, not closed, one item armed
    try:
        with pytest.raises(aw.WorkqueueLoopError, match="'two' has pending work"):
            asyncio.run(q())

        async def drain() -> None:
            await wq.destroy()  # fires the armed item on its own loop

        first.run_until_complete(drain())
        assert wq.stats().completed == 1
    finally:
        # shut down as asyncio.run does: cancel what is left (the parked worker), then close
        for task in asyncio.all_tasks(first):
            task.cancel()
        first.run_until_complete(asyncio.sleep(0))
        first.close()


def test_interrupt_context_queue_is_replayed_after_the_interrupted_section() -> None:
    """Simulate a signal handler that interrupts our own section: the lock is held here."""
    ran: list[str] = []

    async def main() -> None:
        async with aw.alloc_workqueue("nest") as wq:
            a = aw.Work(lambda w: ran.append("a"))
            b = aw.Work(lambda w: ran.append("b"))
            aw.queue_work(wq, b)
            with _lock.LOCK:  # "the interrupted section"
                assert aw.queue_work(wq, a) is True  # nested: recorded
                assert aw.queue_work(wq, a) is False  # already queued by the recorded call
                assert aw.queue_work(wq, b) is False  # pending for real
                assert not a.pending  # not applied yet: state untouched
            assert not a.pending  # the with-block released without replaying
            _lock.replay()
            assert a.pending
            await wq.flush()

    asyncio.run(main())
    assert sorted(ran) == ["a", "b"]


def test_interrupt_context_cancel_holds_the_lock_until_its_replay() -> None:
    """A nested cancel answers as if run right after the interrupted section, and is applied
    there: the section's last release runs the replays before any other thread gets the lock."""
    ran: list[str] = []

    async def main() -> None:
        async with aw.alloc_workqueue("nest-cancel") as wq:
            a = aw.Work(lambda w: ran.append("a"))
            b = aw.Work(lambda w: ran.append("b"))
            aw.queue_work(wq, b)
            with _lock.LOCK:  # "the interrupted section"
                assert aw.queue_work(wq, a) is True  # nested: recorded
                assert aw.cancel_work(b) is True  # pending for real: taken back at the end
                assert aw.cancel_work(b) is False  # already taken back by the recorded call
                assert aw.queue_work(wq, b) is True  # so it may be queued again
                assert aw.disable_work(b) is True  # ...and that instance is taken back too
                assert aw.enable_work(b) is True
                assert b.pending and not a.pending  # nothing applied yet
                assert _lock.LOCK._recursion_count() == 2  # type: ignore[attr-defined]
                # Another thread blocks on the lock until the replay: it must see the state
                # after it (b taken back), never the one in between.
                seen: list[bool] = []
                t = threading.Thread(target=lambda: seen.append(aw.cancel_work(b)))
                t.start()
                t.join(0.05)  # it cannot finish while we hold the lock: give it time to block
                assert t.is_alive()
            t.join(10)
            assert seen == [False]
            # The release down to the hold replayed everything, and let the lock go.
            assert not _lock.LOCK._is_owned()  # type: ignore[attr-defined]
            assert a.pending and not b.pending and not b.busy
            await wq.flush()
            assert wq.stats().cancelled == 2

    asyncio.run(main())
    assert ran == ["a"]


def test_interrupt_context_queue_racing_the_interrupted_queue_runs_twice() -> None:
    """Both calls returned True, so both lead to a run (R4), one after the other (R3)."""
    runs = 0

    def fn(w: aw.Work) -> None:
        nonlocal runs
        runs += 1

    async def main() -> None:
        async with aw.alloc_workqueue("nest2") as wq:
            w = aw.Work(fn)
            with _lock.LOCK:
                assert aw.queue_work(wq, w) is True  # the "signal handler"
            assert aw.queue_work(wq, w) is True  # the interrupted call commits first...
            # ...then the replay (run here by queue_work's epilogue) finds w pending: REDO
            await wq.flush()
            await aw.flush_work(w)
            await wq.flush()

    asyncio.run(main())
    assert runs == 2


def test_loop_shutdown_under_a_deferred_instance_does_not_strand_the_work(
    expect_errors: object,
) -> None:
    """asyncio.run cancels the worker running w while w's next instance waits behind it (R3):
    that instance is reported, and w can be queued and run again on the next loop."""
    wq = aw.alloc_workqueue("strand")
    runs = 0

    async def forever(w: aw.Work) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            await asyncio.sleep(3600)

    w = aw.Work(forever)

    async def first() -> None:
        aw.queue_work(wq, w)
        for _ in range(5):
            await asyncio.sleep(0)
        assert aw.queue_work(wq, w)  # a second worker takes it and defers it behind the run
        for _ in range(5):
            await asyncio.sleep(0)
        assert aw.work_busy(w) == aw.WorkBusy.PENDING | aw.WorkBusy.RUNNING

    asyncio.run(first())  # cancels the worker in the middle of the first run
    assert aw.work_busy(w) == aw.WorkBusy(0)

    async def second() -> None:
        assert aw.queue_work(wq, w)
        await asyncio.wait_for(aw.flush_work(w), 5)

    asyncio.run(second())
    assert runs == 2
    assert any("cancelled while running" in m for m in expect_errors.messages)  # type: ignore[attr-defined]


def test_delayed_work_stranded_on_a_closed_loop_is_reported_and_usable_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first_wq = aw.alloc_workqueue("first-loop")
    ran: list[int] = []
    dw = aw.DelayedWork(lambda w: ran.append(1))

    async def first() -> None:
        assert aw.queue_delayed_work(first_wq, dw, 100)  # still armed when the loop ends

    async def second() -> None:
        wq = aw.alloc_workqueue("second-loop")
        assert aw.queue_delayed_work(wq, dw, 0)  # not "already pending" forever
        await aw.flush_workqueue(wq)

    asyncio.run(first())
    asyncio.run(second())
    assert ran == [1]
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'first-loop'" in m and "event loop shutdown" in m for m in msgs)


def test_asyncio_run_ending_with_armed_timers_leaves_no_pending_worker_task() -> None:
    """Timers that fire during asyncio.run's final cancel-all must not spawn worker tasks that
    nobody cancels (asyncio would log 'Task was destroyed but it is pending' at ERROR)."""
    import gc

    async def anoop(w: aw.Work) -> None:
        pass

    async def main() -> None:
        wq = aw.alloc_workqueue("teardown", 0, 16)
        dws = [aw.DelayedWork(anoop) for _ in range(64)]
        for k in range(3000):
            aw.queue_work(wq, aw.Work(anoop))
            aw.queue_delayed_work(wq, dws[k % 64], 0.0005)
            if k % 256 == 0:
                await aw.flush_workqueue(wq)
        await aw.flush_workqueue(wq)  # returns with timers still armed

    asyncio.run(main())
    asyncio.run(main())  # a later loop drops the dead loop's pool
    gc.collect()  # a pending task destroyed here logs at ERROR: the autouse guard fails us
