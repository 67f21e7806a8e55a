"""``aioworkqueue.running()``: start, drain within a deadline, report, survive cancellation.

Embedded-mode tests run on the plugin's virtual clock (``aiowq_clock``), so deadlines are exact
and nothing sleeps; Runtime-mode tests run on real threads with short deadlines.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest

import aioworkqueue as aw
from aioworkqueue._lifespan import Running
from aioworkqueue._testing import ManualClock  # (not .testing: tests/test_api.py checks dir(aw))


class Job(aw.DelayedWork):
    """A job that sleeps ``seconds`` (virtual or real) and records its name when it ends."""

    __slots__ = ("name", "seconds")

    def __init__(self, name: str, seconds: float, log: list[str]) -> None:
        async def run(work: Job) -> None:
            await asyncio.sleep(work.seconds)
            log.append(work.name)

        super().__init__(run)
        self.name = name
        self.seconds = seconds


def _states(r: Running) -> dict[str, str]:
    return {w.name: state for w, _wq, state in r.unfinished}  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_exit_flushes_everything_queued(aiowq_clock: ManualClock) -> None:
    log: list[str] = []
    seen: list[list[aw.Unfinished]] = []
    wq = aw.alloc_workqueue("lifespan-flush", max_active=2)
    r = aw.running(timeout=5, on_unfinished=seen.append)
    async with r:
        for i in range(6):
            aw.queue_work(wq, Job(f"j{i}", 1.0, log))
        aw.schedule_work(Job("sys", 0.5, log))
    assert sorted(log) == ["j0", "j1", "j2", "j3", "j4", "j5", "sys"]
    assert r.unfinished == [] and seen == [[]]
    assert wq.stats().in_flight == 0


@pytest.mark.asyncio
async def test_deadline_cuts_and_reports_each_unfinished_item(
    aiowq_clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    wq = aw.alloc_workqueue("lifespan-cut", max_active=1)
    r = aw.running(timeout=3)
    async with r:
        aw.queue_work(wq, Job("short", 1, log))
        aw.queue_work(wq, Job("long", 100, log))  # runs from t=1, still running at t=3
        aw.queue_work(wq, Job("behind", 1, log))  # waits for a max_active slot: never starts
        aw.queue_delayed_work(wq, Job("later", 1, log), 3600)  # armed: not waited for
        aw.schedule_delayed_work(Job("soon", 0, log), 0.5)  # fires during the drain: runs
        t0 = aiowq_clock.time()
    assert aiowq_clock.time() - t0 == pytest.approx(3)
    assert log == ["soon", "short"]
    assert _states(r) == {"long": "running", "behind": "queued", "later": "armed"}
    warned = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len([m for m in warned if "did not finish" in m]) == 3
    st = wq.stats()
    assert st.in_flight == 0 and st.armed == 0 and st.cancelled == 3
    assert not any(w.pending for w, _q, _s in r.unfinished)


@pytest.mark.asyncio
async def test_pool_serves_again_after_exit(aiowq_clock: ManualClock) -> None:
    log: list[str] = []
    wq = aw.alloc_workqueue("lifespan-again", max_active=1)
    async with aw.running(timeout=1):
        aw.queue_work(wq, Job("stuck", 100, log))
        aw.queue_work(wq, Job("behind", 0, log))
    # max_active slots and workers were given back: the queue runs new work at full width
    async with aw.running(timeout=10):
        aw.queue_work(wq, Job("a", 1, log))
        aw.queue_work(wq, Job("b", 1, log))
    assert log == ["a", "b"]


@pytest.mark.asyncio
async def test_outside_queueing_is_refused_while_draining(aiowq_clock: ManualClock) -> None:
    log: list[str] = []
    wq = aw.alloc_workqueue("lifespan-refuse")
    refused: list[BaseException] = []

    async def chain(work: aw.Work) -> None:
        await asyncio.sleep(2)
        assert aw.queue_work(wq, Job("chained", 1, log))  # its own queue: allowed (R14)
        log.append("chain")

    async def outsider() -> None:
        await asyncio.sleep(1)  # the drain has started by now
        try:
            aw.queue_work(wq, Job("outside", 0, log))
        except aw.WorkqueueDrainingError as exc:
            refused.append(exc)

    r = aw.running(timeout=10)
    async with r:
        aw.queue_work(wq, aw.Work(chain))
        task = asyncio.create_task(outsider())
    await task
    assert log == ["chain", "chained"] and r.unfinished == []
    assert len(refused) == 1 and "lifespan-refuse" in str(refused[0])
    # R20: once the context is left nothing covers the queue any more: refused, not accepted
    with pytest.raises(aw.WorkqueueLoopError, match="'lifespan-refuse' is ended"):
        aw.queue_work(wq, Job("after", 0, log))


@pytest.mark.asyncio
async def test_drain_finishes_when_the_exiting_task_is_cancelled_twice(
    aiowq_clock: ManualClock,
) -> None:
    log: list[str] = []
    wq = aw.alloc_workqueue("lifespan-shield")
    r = aw.running(timeout=5)
    exiting = asyncio.Event()

    async def body() -> None:
        async with r:
            aw.queue_work(wq, Job("two", 2, log))
            aw.queue_work(wq, Job("ten", 10, log))
            exiting.set()

    task = asyncio.create_task(body())
    await exiting.wait()
    await asyncio.sleep(0.5)
    task.cancel()
    await asyncio.sleep(0.5)
    task.cancel()
    t0 = aiowq_clock.time()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert aiowq_clock.time() - t0 == pytest.approx(4)  # the whole 5 s deadline, then re-raised
    assert log == ["two"] and _states(r) == {"ten": "running"}


@pytest.mark.asyncio
async def test_enter_and_exit_in_different_tasks(aiowq_clock: ManualClock) -> None:
    log: list[str] = []
    wq = aw.alloc_workqueue("lifespan-tasks")
    r = aw.running(timeout=5)
    await asyncio.create_task(r.__aenter__())
    aw.queue_work(wq, Job("x", 1, log))
    await asyncio.create_task(r.__aexit__(None, None, None))
    assert log == ["x"]
    # and it can be entered again afterwards
    async with r:
        aw.queue_work(wq, Job("y", 1, log))
    assert log == ["x", "y"]


@pytest.mark.asyncio
async def test_starlette_style_lifespan_signature(aiowq_clock: ManualClock) -> None:
    app = object()
    log: list[str] = []
    wq = aw.alloc_workqueue("lifespan-app")
    lifespans: list[Callable[[Any], Running]] = [
        aw.running,
        functools.partial(aw.running, timeout=2),
    ]
    for lifespan in lifespans:
        async with lifespan(app) as state:
            assert state is None  # Starlette merges a mapping into app state; None adds nothing
            aw.queue_work(wq, Job("w", 1, log))
    assert log == ["w", "w"]


@pytest.mark.asyncio
async def test_no_signal_handlers_are_installed() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    async with aw.running(timeout=1):
        aw.system_wq.submit(lambda: None)
        during = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    assert before == during == {s: signal.getsignal(s) for s in before}


@pytest.mark.asyncio
@pytest.mark.parametrize("spec", ["true", "mapping", "instance"])
async def test_runtime_mode(spec: str) -> None:
    runtime: bool | aw.Runtime | dict[str, Any]
    if spec == "true":
        runtime = True
    elif spec == "mapping":
        runtime = {"cpus": 2}
    else:
        runtime = aw.Runtime(cpus=2)
    log: list[str] = []
    r = aw.running(runtime=runtime, timeout=0.3)
    async with r:
        rt = r.runtime
        assert rt is not None and rt.running
        wq = aw.alloc_workqueue("lifespan-rt")
        aw.queue_work(wq, Job("quick", 0.01, log))
        aw.queue_work(wq, Job("slow", 30, log))
    assert not rt.running
    assert log == ["quick"] and _states(r) == {"slow": "running"}
    assert rt.unfinished == r.unfinished
    if isinstance(runtime, aw.Runtime):
        assert r.runtime is runtime


@pytest.mark.asyncio
async def test_runtime_mode_drains_under_cancellation() -> None:
    log: list[str] = []
    r = aw.running(runtime={"cpus": 2}, timeout=5)

    async def body() -> None:
        async with r:
            wq = aw.alloc_workqueue("lifespan-rt-cancel")
            for i in range(4):
                aw.queue_work(wq, Job(f"j{i}", 0.2, log))

    task = asyncio.create_task(body())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(log) == ["j0", "j1", "j2", "j3"] and r.unfinished == []


@pytest.mark.asyncio
async def test_misuse() -> None:
    r = aw.running()
    with pytest.raises(aw.WorkqueueError, match="not entered"):
        await r.__aexit__(None, None, None)
    async with r:
        with pytest.raises(aw.WorkqueueError, match="already entered"):
            await r.__aenter__()
    wq = aw.alloc_workqueue("lifespan-inside")
    errors: list[BaseException] = []
    inner = aw.running()
    await inner.__aenter__()

    async def leave_from_work(work: aw.Work) -> None:
        try:
            await inner.__aexit__(None, None, None)
        except aw.WorkqueueError as exc:
            errors.append(exc)

    aw.queue_work(wq, aw.Work(leave_from_work))
    await aw.flush_workqueue(wq)
    assert len(errors) == 1 and "inside a work item" in str(errors[0])
    await inner.__aexit__(None, None, None)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        aw.running(runtime="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        aw.running(timeout="5")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        aw.running(timeout=True)
    with pytest.raises(TypeError):
        aw.running(on_unfinished=3)  # type: ignore[arg-type]
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            aw.running(timeout=bad)
    with pytest.raises(TypeError):
        aw.running(object(), object())  # type: ignore[call-arg]


@pytest.mark.asyncio
async def test_on_unfinished_errors_propagate(aiowq_clock: ManualClock) -> None:
    def boom(items: list[aw.Unfinished]) -> None:
        raise RuntimeError("persisting failed")

    with pytest.raises(RuntimeError, match="persisting failed"):
        async with aw.running(on_unfinished=boom):
            pass


# -- R20: nothing accepted that cannot run; leftovers reported when the loop ends -------------


def _warnings(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        rec.getMessage()
        for rec in caplog.records
        if rec.levelno == logging.WARNING and repr(name) in rec.getMessage()
    ]


@pytest.mark.asyncio
async def test_after_running_exits_queueing_raises_until_entered_again(
    aiowq_clock: ManualClock,
) -> None:
    ran: list[str] = []
    wq = aw.alloc_workqueue("lifespan-ended")
    dw = aw.DelayedWork(lambda w: ran.append("delayed"))
    async with aw.running():
        assert aw.queue_work(wq, aw.Work(lambda w: ran.append("inside")))
    for call in (
        lambda: aw.queue_work(wq, aw.Work(print)),
        lambda: aw.queue_delayed_work(wq, dw, 1),
        lambda: aw.mod_delayed_work(wq, dw, 1),
        lambda: aw.schedule_work(aw.Work(print)),  # the system queues are covered too
    ):
        with pytest.raises(aw.WorkqueueLoopError, match=r"running\(\) has exited"):
            call()
    assert not dw.pending
    async with aw.running():  # entered again on the same loop: served again
        assert aw.queue_delayed_work(wq, dw, 0)
    assert ran == ["inside", "delayed"]


def test_armed_and_queued_items_are_reported_when_asyncio_run_ends(
    caplog: pytest.LogCaptureFixture, expect_errors: object
) -> None:
    wq = aw.alloc_workqueue("lifespan-loop-end", max_active=1)
    armed = [aw.DelayedWork(lambda w: None) for _ in range(2)]
    queued = [aw.Work(lambda w: None) for _ in range(3)]

    async def main() -> None:
        gate = asyncio.Event()  # never set: the first item runs until the loop ends

        async def stuck(w: aw.Work) -> None:
            await gate.wait()

        for d in armed:
            assert aw.queue_delayed_work(wq, d, 3600)
        assert aw.queue_work(wq, aw.Work(stuck))
        for w in queued:
            assert aw.queue_work(wq, w)  # behind the stuck one (max_active 1): never start
        await asyncio.sleep(0)

    asyncio.run(main())
    # At the end of that asyncio.run, not at the next use: one WARNING per queue and state.
    msgs = _warnings(caplog, "lifespan-loop-end")
    assert len(msgs) == 2, msgs
    assert any("2 items" in m and "(armed)" in m for m in msgs)
    assert any("3 items" in m and "(queued)" in m for m in msgs)
    assert not any(w.pending for w in [*armed, *queued])
    st = wq.stats()
    assert st.cancelled == 5 and st.armed == 0 and st.pending == 0
    # The stuck run was cancelled by asyncio.run: the exception handler reported it (R16).
    assert any("cancelled while running" in m for m in expect_errors.messages)  # type: ignore[attr-defined]
    with pytest.raises(aw.WorkqueueLoopError, match="'lifespan-loop-end'"):
        aw.queue_work(wq, aw.Work(print))  # from no loop: nothing could run it

    async def again() -> None:  # a new asyncio.run rebinds it (SPEC §5, embedded mode)
        assert aw.queue_delayed_work(wq, armed[0], 0)
        await aw.flush_workqueue(wq)

    asyncio.run(again())
    assert wq.stats().completed == 1


def test_a_stopped_loop_refuses_queueing_from_a_thread() -> None:
    loop = asyncio.new_event_loop()
    holder: list[aw.Workqueue] = []

    async def bind() -> None:
        holder.append(aw.alloc_workqueue("lifespan-stopped"))

    try:
        loop.run_until_complete(bind())  # the loop has stopped; nothing turns it any more
        outcome: list[BaseException | bool] = []

        def producer() -> None:
            try:
                outcome.append(aw.queue_work(holder[0], aw.Work(print)))
            except aw.WorkqueueError as exc:
                outcome.append(exc)

        th = threading.Thread(target=producer)
        th.start()
        th.join()
        assert isinstance(outcome[0], aw.WorkqueueLoopError), outcome
        assert "'lifespan-stopped' is stopped" in str(outcome[0])
    finally:
        loop.close()
    assert holder[0].stats().queued == 0


@pytest.mark.asyncio
async def test_refusal_has_no_gap_between_the_drain_and_the_end(
    aiowq_clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the start of the exit on, outside queueing raises without a break: a thread that
    calls between the drain's end and the end of running() (here: while the watchdog is
    stopped, the last step) is refused, not accepted onto a queue nothing covers any more."""
    wq = aw.alloc_workqueue("lifespan-gap")
    seen: list[BaseException | bool] = []
    unwatch = Running._unwatch

    def call_from_a_thread(self: Running) -> None:
        def producer() -> None:
            try:
                seen.append(aw.queue_work(wq, aw.Work(print)))
            except aw.WorkqueueError as exc:
                seen.append(exc)

        th = threading.Thread(target=producer)
        th.start()
        th.join()
        unwatch(self)

    monkeypatch.setattr(Running, "_unwatch", call_from_a_thread)
    async with aw.running():
        assert aw.queue_work(wq, aw.Work(lambda w: None))
    assert len(seen) == 1 and isinstance(seen[0], aw.WorkqueueLoopError), seen
