"""The pytest plugin of aioworkqueue: fixtures ``aiowq_*`` for testing code that uses it.

Loaded by pytest through the ``pytest11`` entry point whenever aioworkqueue is installed.

Fixtures:

* ``aiowq_guard`` — an :class:`~aioworkqueue.testing.ErrorGuard` for the test: the test fails at
  teardown if aioworkqueue logged an error that nobody claimed (an exception in a work item that no
  exception handler of its own took, R16). ``aiowq_guard.take()`` claims the records so far. With
  the ini option ``aiowq_guard = true`` every test gets it.
* ``aiowq_idle`` — ``await aiowq_idle(timeout=30.0)`` returns when every pool is idle: nothing
  queued, running or armed (see :func:`aioworkqueue.testing.idle`).
* ``aiowq_clock`` — a :class:`~aioworkqueue.testing.ManualClock`. An asyncio test that requests it
  (or carries ``@pytest.mark.aiowq_clock(early=0.0)``) runs on a
  :class:`~aioworkqueue.testing.VirtualClockLoop`: delayed work fires at once, in deadline order,
  and ``await aiowq_clock.advance(s)`` lets ``s`` seconds of virtual time pass.
* ``aiowq_runtime`` — async (pytest-asyncio): a fresh started :class:`~aioworkqueue.Runtime` per
  test (``cpus=2``; ``@pytest.mark.aiowq_runtime(**kwargs)`` for other arguments), shut down after
  the test; includes the guard.
* ``aiowq_run_virtual`` — :func:`aioworkqueue.testing.run_virtual`, for plain (sync) tests.

The virtual loop is chosen through pytest-asyncio's ``pytest_asyncio_loop_factories`` hook, as a
wrapper: for tests that ask for the clock it answers ``{"aiowq_clock": VirtualClockLoop}``; for
the others it passes on the answer of the project's own implementation, or, when the project has
none, ``{"asyncio": asyncio.new_event_loop}`` (what pytest-asyncio does without the hook).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from typing import Any

import pytest

from ._runtime import Runtime
from ._testing import ErrorGuard, ManualClock, VirtualClockLoop, idle, run_virtual

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is not installed
    _ASYNC_FIXTURES = False
else:
    _ASYNC_FIXTURES = True

__all__ = (
    "aiowq_clock",
    "aiowq_guard",
    "aiowq_idle",
    "aiowq_run_virtual",
    "aiowq_runtime",
    "pytest_addoption",
    "pytest_asyncio_loop_factories",
    "pytest_configure",
)

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

_CLOCK = "aiowq_clock"
_RUNTIME_DEFAULTS: dict[str, Any] = {"cpus": 2, "shutdown_timeout": 5.0}


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``aiowq_guard`` ini option."""
    parser.addini(
        "aiowq_guard",
        "fail every test on aioworkqueue error reports that it did not claim (aiowq_guard)",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers."""
    config.addinivalue_line(
        "markers",
        "aiowq_clock(early=0.0): run this asyncio test on aioworkqueue's virtual-clock loop",
    )
    config.addinivalue_line(
        "markers", "aiowq_runtime(**kwargs): Runtime arguments for the aiowq_runtime fixture"
    )


def _wants_clock(item: pytest.Item) -> pytest.Mark | bool:
    marker = item.get_closest_marker(_CLOCK)
    if marker is not None:
        return marker
    return _CLOCK in getattr(item, "fixturenames", ())


@pytest.hookimpl(wrapper=True, optionalhook=True)
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Generator[None, Mapping[str, LoopFactory] | None, Mapping[str, LoopFactory] | None]:
    """Run tests that ask for the virtual clock on it; pass the others through."""
    result = yield
    wants = _wants_clock(item)
    if wants is False:
        return result if result is not None else {"asyncio": asyncio.new_event_loop}
    early = wants.kwargs.get("early", 0.0) if isinstance(wants, pytest.Mark) else 0.0
    return {_CLOCK: functools.partial(VirtualClockLoop, early)}


@pytest.fixture
def aiowq_guard() -> Iterator[ErrorGuard]:
    """Fail the test on aioworkqueue error reports it did not claim with ``.take()``."""
    guard = ErrorGuard()
    guard.install()
    try:
        yield guard
    finally:
        guard.uninstall()
    try:
        guard.check()
    except AssertionError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(autouse=True)
def _aiowq_guard_everywhere(request: pytest.FixtureRequest) -> None:
    if request.config.getini("aiowq_guard"):
        request.getfixturevalue("aiowq_guard")


@pytest.fixture
def aiowq_idle() -> Callable[..., Any]:
    """``await aiowq_idle(timeout=30.0)``: returns when every pool is idle."""
    return idle


@pytest.fixture
def aiowq_clock(aiowq_guard: ErrorGuard) -> ManualClock:
    """The virtual clock of the test's loop (requesting it selects the virtual loop)."""
    return ManualClock()


@pytest.fixture
def aiowq_run_virtual() -> Callable[..., Any]:
    """``aiowq_run_virtual(main, early=0.0)``: run ``main()`` on a fresh virtual-clock loop."""
    return run_virtual


async def _runtime(
    request: pytest.FixtureRequest, aiowq_guard: ErrorGuard
) -> AsyncIterator[Runtime]:
    """A fresh started Runtime for the test, shut down after it."""
    marker = request.node.get_closest_marker("aiowq_runtime")
    kwargs = dict(_RUNTIME_DEFAULTS)
    if marker is not None:
        kwargs.update(marker.kwargs)
    rt = Runtime(**kwargs)
    await rt.start()
    try:
        yield rt
    finally:
        await rt.shutdown()


def _needs_pytest_asyncio() -> None:  # pragma: no cover - pytest-asyncio is not installed
    pytest.fail("the aiowq_runtime fixture needs pytest-asyncio", pytrace=False)


#: A fresh started Runtime per test (``cpus=2``, ``shutdown_timeout=5.0``; override with
#: ``@pytest.mark.aiowq_runtime(**kwargs)``), shut down after it; includes ``aiowq_guard``.
aiowq_runtime = (
    pytest_asyncio.fixture(name="aiowq_runtime")(_runtime)
    if _ASYNC_FIXTURES
    else pytest.fixture(name="aiowq_runtime")(_needs_pytest_asyncio)
)
