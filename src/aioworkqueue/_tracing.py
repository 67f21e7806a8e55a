"""Trace events through structlog: :func:`enable_tracing` / :func:`disable_tracing`.

The library never calls ``structlog.configure()`` and logs nothing at import: the logger is asked
for when tracing is enabled, and configured however the application configured structlog. Each
tracepoint becomes one event named after it, with the work, its function and the workqueue as
fields, plus the tracepoint's own (``req_cpu``/``cpu``, ``duration``/``outcome``).
"""

from __future__ import annotations

from typing import Any

import structlog

from ._hooks import add_instrument, remove_instrument
from ._work import Work, func_name

__all__ = ("StructlogTracer", "disable_tracing", "enable_tracing")


class StructlogTracer:
    """The instrument behind :func:`enable_tracing`."""

    def __init__(self, logger: Any = None) -> None:
        self.log = logger if logger is not None else structlog.get_logger("aioworkqueue")  # I

    def workqueue_queue_work(self, work: Work, wq: Any, req_cpu: int | None, cpu: int) -> None:
        self.log.debug(
            "workqueue_queue_work",
            work=repr(work),
            function=func_name(work.func),
            workqueue=wq.name,
            req_cpu=req_cpu,
            cpu=cpu,
        )

    def workqueue_activate_work(self, work: Work, wq: Any) -> None:
        self.log.debug("workqueue_activate_work", work=repr(work), workqueue=wq.name)

    def workqueue_execute_start(self, work: Work, wq: Any) -> None:
        self.log.debug(
            "workqueue_execute_start",
            work=repr(work),
            function=func_name(work.func),
            workqueue=wq.name,
        )

    def workqueue_execute_end(self, work: Work, wq: Any, duration: float, outcome: str) -> None:
        self.log.debug(
            "workqueue_execute_end",
            work=repr(work),
            function=func_name(work.func),
            workqueue=wq.name,
            duration=duration,
            outcome=outcome,
        )


_TRACER: list[StructlogTracer] = []


def enable_tracing(logger: Any = None) -> StructlogTracer:
    """Emit the four tracepoints as structlog events (level debug) on ``logger``.

    ``logger`` defaults to ``structlog.get_logger("aioworkqueue")``. Enabling again replaces the
    previous tracer. Context: any.
    Returns: the tracer (an instrument; see ``add_instrument``).
    """
    disable_tracing()
    tracer = StructlogTracer(logger)
    _TRACER.append(tracer)
    add_instrument(tracer)
    return tracer


def disable_tracing() -> None:
    """Stop emitting trace events; then a tracepoint costs one boolean test. Context: any."""
    while _TRACER:
        remove_instrument(_TRACER.pop())
