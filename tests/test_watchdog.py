"""The runtime's watchdog: CPU hogs and workqueue lockups (SPEC §4)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import aioworkqueue as aw
from tests.conftest import ExpectedErrors


@pytest.mark.asyncio
async def test_a_20ms_synchronous_stretch_is_counted_as_a_cpu_hog(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def hog(w: aw.Work) -> None:
        time.sleep(0.02)  # noqa: ASYNC251 (on purpose: 20 ms without awaiting)
        await asyncio.sleep(0)

    async def polite(w: aw.Work) -> None:
        for _ in range(20):
            await asyncio.sleep(0.001)

    async with aw.Runtime(cpus=1, loop_factory="asyncio") as rt:
        assert rt.cpu_intensive_thresh == 0.010  # the default
        wq = aw.alloc_workqueue("hoggy")
        aw.queue_work(wq, aw.Work(hog))
        aw.queue_work(wq, aw.Work(polite))
        await aw.flush_workqueue(wq)
        st = wq.stats()
    assert st.cpu_hogs == 1
    warnings = [r.getMessage() for r in caplog.records if "CPU hog" in r.getMessage()]
    assert len(warnings) == 1
    assert "'hoggy'" in warnings[0] and "hog" in warnings[0] and "WQ.CPU_INTENSIVE" in warnings[0]


@pytest.mark.asyncio
async def test_a_blocked_pool_loop_is_reported_as_a_lockup_naming_the_item(
    expect_errors: ExpectedErrors,
) -> None:
    async def stuck_on_purpose(w: aw.Work) -> None:
        time.sleep(0.6)  # noqa: ASYNC251 (on purpose: the loop is stuck)

    async with aw.Runtime(cpus=1, loop_factory="asyncio", watchdog_thresh=0.2) as rt:
        wq = aw.alloc_workqueue("locky")
        aw.queue_work(wq, aw.Work(stuck_on_purpose))
        await aw.flush_workqueue(wq)
        assert rt.watchdog_thresh == 0.2
    (lockup,) = [m for m in expect_errors.messages if "workqueue lockup" in m]
    assert "pool cpu=0" in lockup and "stuck_on_purpose" in lockup and "'locky'" in lockup
    assert "time.sleep(0.6)" in lockup  # the loop thread's stack, down to the blocking line


def test_bad_watchdog_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="watchdog_thresh"):
        aw.Runtime(cpus=1, watchdog_thresh=0)
    with pytest.raises(ValueError, match="cpu_intensive_thresh"):
        aw.Runtime(cpus=1, cpu_intensive_thresh=-1)


# -- issue 13 item 10: the embedded mode (running()) has a watchdog too ----------------------------


@pytest.mark.asyncio
async def test_embedded_a_synchronous_stretch_on_the_host_loop_is_a_cpu_hog(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def hog(w: aw.Work) -> None:
        time.sleep(0.05)  # on purpose: 50 ms on the host loop without returning to it

    async with aw.running(cpu_intensive_thresh=0.01):
        wq = aw.alloc_workqueue("embedded-hoggy")
        aw.queue_work(wq, aw.Work(hog))
        await aw.flush_workqueue(wq)
        st = wq.stats()
    assert st.cpu_hogs == 1
    (warning,) = [r.getMessage() for r in caplog.records if "CPU hog" in r.getMessage()]
    assert "'embedded-hoggy'" in warning and "hog" in warning


@pytest.mark.asyncio
async def test_embedded_a_blocked_host_loop_is_reported_as_a_lockup(
    expect_errors: ExpectedErrors,
) -> None:
    async def stuck_in_embedded(w: aw.Work) -> None:
        time.sleep(0.6)  # noqa: ASYNC251 (on purpose: the host loop is stuck)

    ctx = aw.running(watchdog_thresh=0.2)
    async with ctx:
        assert ctx.watchdog_thresh == 0.2 and ctx.cpu_intensive_thresh == 0.010  # the default
        wq = aw.alloc_workqueue("embedded-locky")
        aw.queue_work(wq, aw.Work(stuck_in_embedded))
        await aw.flush_workqueue(wq)
    (lockup,) = [m for m in expect_errors.messages if "workqueue lockup" in m]
    assert "stuck_in_embedded" in lockup and "'embedded-locky'" in lockup
    assert "time.sleep(0.6)" in lockup  # the host loop thread's stack


@pytest.mark.asyncio
async def test_embedded_watchdog_thread_lives_only_inside_the_block() -> None:
    def watchdogs() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name == "aiowq-watchdog"]

    before = len(watchdogs())
    async with aw.running():
        assert len(watchdogs()) == before + 1
    assert len(watchdogs()) == before


def test_bad_embedded_watchdog_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="watchdog_thresh"):
        aw.running(watchdog_thresh=0)
    with pytest.raises(ValueError, match="cpu_intensive_thresh"):
        aw.running(cpu_intensive_thresh=float("nan"))
    with pytest.raises(TypeError, match="watchdog_thresh"):
        aw.running(watchdog_thresh="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="give them to it"):
        aw.running(runtime=True, cpu_intensive_thresh=0.05)
