"""The pytest plugin (entry point ``pytest11``): its fixtures, used here, and its failures, run in
a separate pytest through ``pytester``.

This suite itself loads the plugin the way users get it: through the entry point of the installed
package (``pip install -e '.[dev]'``), next to ``tests/conftest.py``'s own loop factories.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import aioworkqueue as aw
from aioworkqueue._lock import LOCK
from aioworkqueue._runtime import ACTIVE
from aioworkqueue._testing import ErrorGuard, ManualClock, VirtualClockLoop
from tests.conftest import ExpectedErrors

pytest_plugins = ["pytester"]


def test_plugin_is_loaded_from_its_entry_point(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("aioworkqueue")
    assert plugin is not None and plugin.__name__ == "aioworkqueue._pytest_plugin"


@pytest.mark.asyncio
async def test_unmarked_tests_keep_the_suites_loops(request: pytest.FixtureRequest) -> None:
    loop = asyncio.get_running_loop()
    assert not isinstance(loop, VirtualClockLoop)
    assert request.node.callspec.id in ("asyncio", "uvloop")  # tests/conftest.py's factories


@pytest.mark.asyncio
async def test_clock_fires_delayed_work_without_sleeping(
    aiowq_clock: ManualClock, aiowq_idle: Callable[..., Any]
) -> None:
    assert isinstance(asyncio.get_running_loop(), VirtualClockLoop)
    wall = time.monotonic()
    t0 = aiowq_clock.time()
    fired: list[tuple[str, float]] = []
    wq = aw.alloc_workqueue("plugin-clock")
    for name, delay in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0)):
        dw = aw.DelayedWork(lambda w, n=name: fired.append((n, aiowq_clock.time() - t0)))
        aw.queue_delayed_work(wq, dw, delay)
    await aiowq_clock.advance(61)
    assert [n for n, _ in fired] == ["minute"]
    await aiowq_idle()
    assert [n for n, _ in fired] == ["minute", "hour", "day"]
    assert all(at >= delay for (_, at), delay in zip(fired, (60, 3600, 86400), strict=True))
    assert time.monotonic() - wall < 5  # a virtual day, no real sleep
    with pytest.raises(ValueError):
        await aiowq_clock.advance(-1)


@pytest.mark.asyncio
@pytest.mark.aiowq_clock(early=0.001)
async def test_clock_marker_with_early_timers(aiowq_idle: Callable[..., Any]) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualClockLoop) and loop.early == 0.001
    late: list[float] = []
    wq = aw.alloc_workqueue("plugin-early")
    for i in range(20):
        start = loop.time()
        delay = 0.01 * (i + 1)
        dw = aw.DelayedWork(lambda w, s=start, d=delay: late.append(loop.time() - s - d))
        aw.queue_delayed_work(wq, dw, delay)
        await aiowq_idle()
    assert len(late) == 20 and min(late) > -1e-9  # never early, though the loop fires early (R8)


@pytest.mark.asyncio
async def test_idle_waits_for_queued_running_and_armed(
    aiowq_clock: ManualClock, aiowq_idle: Callable[..., Any]
) -> None:
    done: list[str] = []

    async def chain(work: aw.Work) -> None:
        await asyncio.sleep(5)
        done.append("first")
        aw.schedule_delayed_work(aw.DelayedWork(lambda w: done.append("then")), 10)

    aw.schedule_work(aw.Work(chain))
    await aiowq_idle()
    assert done == ["first", "then"]
    assert aw.system_wq.stats().in_flight == 0 and aw.system_wq.stats().armed == 0


@pytest.mark.asyncio
async def test_idle_times_out_on_the_wall_clock_and_names_the_queue(
    aiowq_clock: ManualClock, aiowq_idle: Callable[..., Any]
) -> None:
    release = asyncio.Event()

    async def stuck(work: aw.Work) -> None:
        await release.wait()

    wq = aw.alloc_workqueue("plugin-stuck")
    aw.queue_work(wq, aw.Work(stuck))
    wall = time.monotonic()
    with pytest.raises(TimeoutError, match="plugin-stuck"):
        await aiowq_idle(timeout=0.2)
    assert time.monotonic() - wall < 3
    release.set()
    await aiowq_idle()


@pytest.mark.asyncio
async def test_runtime_fixture(aiowq_runtime: aw.Runtime, aiowq_idle: Callable[..., Any]) -> None:
    assert aiowq_runtime.running and ACTIVE.rt is aiowq_runtime and aiowq_runtime.cpus == 2
    wq = aw.alloc_workqueue("plugin-rt", aw.WQ.UNBOUND)
    ran: list[int] = []
    for i in range(20):
        wq.submit(ran.append, i)
    aw.schedule_delayed_work(aw.DelayedWork(lambda w: ran.append(-1)), 0.05)
    await aiowq_idle(timeout=10)
    assert sorted(ran) == [-1, *range(20)]


@pytest.mark.asyncio
async def test_idle_sees_an_item_that_ends_between_its_looks(
    aiowq_runtime: aw.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """idle() looked at a queue (busy: an item running on a runtime thread), then took the lock
    to start a flush of it; an item that ended in between left nothing to flush and no timer,
    and idle() slept an hour instead of looking again (seen once, under load, as a timeout of
    test_runtime_fixture). Here the item ends exactly in that window."""
    from aioworkqueue import _testing

    release = threading.Event()
    wq = aw.alloc_workqueue("idle-window", aw.WQ.UNBOUND)
    wq.submit(release.wait, 10)
    real_busy = _testing._busy

    def busy_then_end(q: aw.Workqueue) -> bool:
        was = real_busy(q)
        if q is wq and was and not release.is_set():
            release.set()
            if not LOCK._is_owned():  # type: ignore[attr-defined]
                # A window between this look and the flush's section: the item ends in it, on
                # its pool's thread. (Looked at under the lock, there is no such window.)
                deadline = time.monotonic() + 10
                while q.stats().in_flight and time.monotonic() < deadline:
                    time.sleep(0.001)
                assert not q.stats().in_flight
        return was

    monkeypatch.setattr(_testing, "_busy", busy_then_end)
    await _testing.idle(timeout=5)
    assert release.is_set()


@pytest.mark.asyncio
@pytest.mark.aiowq_runtime(cpus=3, loop_factory="asyncio")
async def test_runtime_fixture_marker(aiowq_runtime: aw.Runtime) -> None:
    assert aiowq_runtime.cpus == 3 and aiowq_runtime.loop_name == "asyncio"


@pytest.mark.asyncio
async def test_guard_take_claims_work_errors(
    aiowq_guard: ErrorGuard, aiowq_idle: Callable[..., Any], expect_errors: ExpectedErrors
) -> None:
    aw.system_wq.submit(lambda: 1 / 0)
    await aiowq_idle()
    taken = aiowq_guard.take()
    assert len(taken) == 1 and taken[0].exc_info is not None
    assert taken[0].exc_info[0] is ZeroDivisionError
    assert aiowq_guard.take() == []


def test_run_virtual_fixture(aiowq_run_virtual: Callable[..., Any]) -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - t0

    assert aiowq_run_virtual(main) == pytest.approx(3600)


# -- a separate pytest run: what a user's project sees --------------------------------------------

INNER_TESTS = """
import asyncio

import pytest

import aioworkqueue as aw
from aioworkqueue.testing import ErrorGuard, ManualClock, VirtualClockLoop, idle, run_virtual


@pytest.mark.asyncio
async def test_unclaimed_work_error_fails(aiowq_guard, aiowq_idle):
    aw.system_wq.submit(lambda: 1 / 0)
    await aiowq_idle()


@pytest.mark.asyncio
async def test_claimed_work_error_passes(aiowq_guard, aiowq_idle):
    aw.system_wq.submit(lambda: 1 / 0)
    await aiowq_idle()
    assert len(aiowq_guard.take()) == 1


@pytest.mark.asyncio
async def test_custom_handler_is_handling(aiowq_guard, aiowq_idle):
    seen = []
    wq = aw.alloc_workqueue("handled", exception_handler=lambda q, w, e: seen.append(e))
    wq.submit(lambda: 1 / 0)
    await aiowq_idle()
    assert len(seen) == 1


@pytest.mark.asyncio
async def test_plain_loop_without_a_project_hook():
    assert type(asyncio.get_running_loop()) is not VirtualClockLoop


@pytest.mark.asyncio
@pytest.mark.aiowq_clock
async def test_marked_clock(aiowq_idle):
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualClockLoop)
    ran = []
    wq = aw.alloc_workqueue("c")
    aw.queue_delayed_work(wq, aw.DelayedWork(lambda w: ran.append(loop.time())), 1e6)
    await aiowq_idle()
    assert ran


@pytest.mark.asyncio
async def test_runtime_then(aiowq_runtime):
    assert aiowq_runtime.running


def test_runtime_was_shut_down():
    from aioworkqueue._runtime import ACTIVE

    assert ACTIVE.rt is None


def test_public_testing_module():
    assert callable(idle) and callable(run_virtual) and ErrorGuard and ManualClock
"""


def test_plugin_in_a_users_project(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.pytest.ini_options]
        asyncio_mode = "strict"
        asyncio_default_fixture_loop_scope = "function"
        asyncio_default_test_loop_scope = "function"
        filterwarnings = ["error"]
        addopts = "--strict-markers -p no:cacheprovider -p no:randomly"
        """
    )
    pytester.makepyfile(test_user=INNER_TESTS)
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=8, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_unclaimed_work_error_fails*",
            "*aioworkqueue reported 1 error(s) that the test did not claim*",
            "*ZeroDivisionError*",
        ]
    )


def test_guard_for_every_test_from_the_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        asyncio_mode = strict
        asyncio_default_fixture_loop_scope = function
        aiowq_guard = true
        addopts = -p no:cacheprovider
        """
    )
    pytester.makepyfile(
        test_guarded="""
        import pytest
        import aioworkqueue as aw

        @pytest.mark.asyncio
        async def test_not_asking_for_the_guard():
            aw.system_wq.submit(lambda: 1 / 0)
            await aw.flush_workqueue(aw.system_wq)

        def test_quiet():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=2, errors=1)
