"""Trace events (SPEC §4): the kernel's four tracepoints, through structlog or an instrument."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

import aioworkqueue as aw
from aioworkqueue._hooks import HOOKS
from tests.conftest import ExpectedErrors


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def workqueue_queue_work(self, work: aw.Work, wq: Any, req_cpu: Any, cpu: int) -> None:
        self.events.append(("queue", work, wq.name, req_cpu, cpu))

    def workqueue_activate_work(self, work: aw.Work, wq: Any) -> None:
        self.events.append(("activate", work))

    def workqueue_execute_start(self, work: aw.Work, wq: Any) -> None:
        self.events.append(("start", work))

    def workqueue_execute_end(self, work: aw.Work, wq: Any, duration: float, outcome: str) -> None:
        assert duration >= 0
        self.events.append(("end", work, outcome))


@pytest.mark.asyncio
async def test_structlog_events_at_the_four_tracepoints() -> None:
    def ok(w: aw.Work) -> None:
        pass

    def boom(w: aw.Work) -> None:
        raise RuntimeError("boom")

    a, b = aw.Work(ok), aw.Work(boom)
    with structlog.testing.capture_logs() as logs:
        aw.enable_tracing()
        try:
            async with aw.alloc_workqueue("traced", exception_handler=lambda *a: None) as wq:
                aw.queue_work(wq, a)
                aw.queue_work_on(0, wq, b)
                await wq.flush()
        finally:
            aw.disable_tracing()
    names = [e["event"] for e in logs]
    assert names == [
        "workqueue_queue_work",
        "workqueue_activate_work",
        "workqueue_queue_work",
        "workqueue_activate_work",
        "workqueue_execute_start",
        "workqueue_execute_end",
        "workqueue_execute_start",
        "workqueue_execute_end",
    ]
    q0, q1 = logs[0], logs[2]
    assert q0["workqueue"] == "traced" and "ok" in q0["function"] and q0["req_cpu"] is None
    assert q1["req_cpu"] == 0 and q1["cpu"] == 0
    ends = [e for e in logs if e["event"] == "workqueue_execute_end"]
    assert [e["outcome"] for e in ends] == ["completed", "failed"]
    assert all(e["log_level"] == "debug" and e["duration"] >= 0 for e in ends)
    assert not HOOKS.on


@pytest.mark.asyncio
async def test_tracing_off_emits_nothing_and_costs_one_flag() -> None:
    with structlog.testing.capture_logs() as logs:
        async with aw.alloc_workqueue("quiet") as wq:
            aw.queue_work(wq, aw.Work(lambda w: None))
            await wq.flush()
    assert logs == []
    assert HOOKS.on is False and HOOKS.instruments == []


@pytest.mark.asyncio
async def test_instrument_sees_activation_when_a_slot_frees() -> None:
    gate = asyncio.Event()

    async def slow(w: aw.Work) -> None:
        await gate.wait()

    rec = Recorder()
    aw.add_instrument(rec)
    aw.add_instrument(rec)  # twice: no effect
    try:
        first, second = aw.Work(slow), aw.Work(slow)
        dw = aw.DelayedWork(lambda w: None)
        async with aw.alloc_workqueue("one", 0, 1) as wq:
            aw.queue_work(wq, first)
            aw.queue_work(wq, second)  # waits for the only slot: no activation yet
            aw.mod_delayed_work(wq, dw, 1000)  # arms an idle item: a queue event
            for _ in range(10):
                await asyncio.sleep(0)
            kinds = [(e[0], e[1]) for e in rec.events]
            assert kinds == [
                ("queue", first),
                ("activate", first),
                ("queue", second),
                ("queue", dw),
                ("start", first),
            ]
            aw.cancel_delayed_work(dw)
            gate.set()
            await wq.flush()
        assert [(e[0], e[1]) for e in rec.events[5:]] == [
            ("end", first),
            ("activate", second),
            ("start", second),
            ("end", second),
        ]
    finally:
        aw.remove_instrument(rec)
    assert not HOOKS.on


@pytest.mark.asyncio
async def test_an_instrument_that_raises_is_removed_and_reported(
    expect_errors: ExpectedErrors,
) -> None:
    class Broken:
        def workqueue_execute_start(self, work: aw.Work, wq: Any) -> None:
            raise ValueError("broken instrument")

    broken = Broken()
    aw.add_instrument(broken)
    ran = 0

    def fn(w: aw.Work) -> None:
        nonlocal ran
        ran += 1

    try:
        async with aw.alloc_workqueue("inst") as wq:
            aw.queue_work(wq, aw.Work(fn))
            aw.queue_work(wq, aw.Work(fn))
            await wq.flush()
    finally:
        aw.remove_instrument(broken)
    assert ran == 2
    assert not HOOKS.on
    assert any("raised in workqueue_execute_start" in m for m in expect_errors.messages)
