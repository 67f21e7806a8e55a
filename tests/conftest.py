"""Suite-wide guards, and the event loops every async test runs on.

Every test fails if anything logged an ERROR on the ``asyncio`` or ``aioworkqueue`` loggers that
the test did not claim: an exception in a work item (R16) or in a loop callback is never silent,
and never unnoticed by the suite either. A test that expects such reports takes the
``expect_errors`` fixture and asserts on them.

The whole suite runs in debug mode (``aioworkqueue._state``): every transition of every work item
checks the state it starts from. The package is imported by its own pytest plugin before this
file runs, so the mode is switched on here; the variable is set too, for the programs that tests
start in processes of their own.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator, Mapping

import pytest

from aioworkqueue import _state

os.environ["AIOWORKQUEUE_DEBUG"] = "1"
_state.set_debug(True)

try:
    import uvloop
except ImportError:  # pragma: no cover - platforms without uvloop
    uvloop = None  # type: ignore[assignment]

_WATCHED = ("asyncio", "aioworkqueue")

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
if uvloop is not None:
    LOOPS["uvloop"] = uvloop.new_event_loop


# Core v2 (issue 12): under AIOWORKQUEUE_CORE=v2 the lean pool serves every queue it covers, and a
# test that reaches a queue or call it does not cover yet (NotImplementedError naming Core v2) is
# reported as skipped with what is missing: such a run counts what is left to build. Anything
# else a test raises under the switch fails it as usual.
_V2 = os.environ.get("AIOWORKQUEUE_CORE", "") == "v2"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    if not _V2 or call.excinfo is None:
        return
    exc = call.excinfo.value
    if isinstance(exc, NotImplementedError) and "Core v2" in str(exc):
        report = outcome.get_result()  # type: ignore[attr-defined]
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"not in Core v2 yet: {exc}")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run every async test on the stdlib loop and on uvloop (where it is installed)."""
    return LOOPS


class ExpectedErrors:
    """The ERROR records a test claims; ``records`` fills in as the test runs."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    @property
    def records(self) -> list[logging.LogRecord]:
        return [
            r
            for r in self._caplog.records
            if r.levelno >= logging.ERROR and r.name.split(".")[0] in _WATCHED
        ]

    @property
    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture
def expect_errors(caplog: pytest.LogCaptureFixture) -> ExpectedErrors:
    """Claim the ERROR log records of this test (they are then not a failure)."""
    return ExpectedErrors(caplog)


@pytest.fixture(autouse=True)
def _no_unexpected_errors(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    caplog.set_level(logging.WARNING)
    yield
    if "expect_errors" in request.fixturenames:
        return
    bad = [
        f"{r.name}: {r.getMessage()}"
        for when in ("setup", "call", "teardown")
        for r in caplog.get_records(when)  # type: ignore[arg-type]
        if r.levelno >= logging.ERROR and r.name.split(".")[0] in _WATCHED
    ]
    assert not bad, "unexpected error reports:\n" + "\n".join(bad)


async def settle(n: int = 20) -> None:
    """Let the loop run n rounds (workers pick items up, futures complete)."""
    for _ in range(n):
        await asyncio.sleep(0)
