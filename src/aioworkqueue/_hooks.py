"""Where observability plugs into the core: the kernel's four tracepoints.

The core calls these only behind one attribute test, ``if HOOKS.on:``, so with nothing
subscribed a tracepoint costs that test and nothing else. Subscribers are *instruments* (trio's
word): objects with any of the methods below, added with :func:`add_instrument`. Tracing through
structlog (``enable_tracing``) is one such instrument, as a user's OpenTelemetry or metrics code
would be.

Tracepoints (names and arguments follow ``include/trace/events/workqueue.h``):

* ``workqueue_queue_work(work, wq, req_cpu, cpu)`` — a successful queue_*: the item is pending.
  ``req_cpu`` is the cpu asked for (None: any), ``cpu`` the pool it went to (-1: unbound).
* ``workqueue_activate_work(work, wq)`` — it got an active slot and waits on a worklist (R7).
* ``workqueue_execute_start(work, wq)`` — its function is about to be called.
* ``workqueue_execute_end(work, wq, duration, outcome)`` — it returned: ``outcome`` is
  ``"completed"``, ``"failed"`` or ``"cancelled"``; ``duration`` in seconds.

Instruments are called on the thread where the event happens, under the state lock for the first
two (keep them short, never queue from them), outside it for the last two. An instrument that
raises is removed and reported, as trio does: the work goes on.

One more slot serves the opt-in timing statistics (``enable_timing``, ``_timing.py``): ``run``,
when set, is how a worker runs an item instead of calling it directly, so that the item's CPU time
can be metered step by step. The worker reads it only inside its ``if HOOKS.on:`` block.

Owner: ``HOOKS`` changes under ``_lock.LOCK``; the hot path only reads ``on`` (and ``run`` behind
it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from ._lock import LOCK

if TYPE_CHECKING:
    from ._work import Work

__all__ = ("HOOKS", "POINTS", "Instrument", "Runner", "add_instrument", "emit", "remove_instrument")

_log = logging.getLogger("aioworkqueue")

OUTCOMES = ("completed", "failed", "cancelled")  # indexed by the pool's COMPLETED/FAILED/CUT


class Instrument(Protocol):
    """What an instrument may implement; every method is optional."""

    def workqueue_queue_work(self, work: Work, wq: Any, req_cpu: int | None, cpu: int) -> None: ...

    def workqueue_activate_work(self, work: Work, wq: Any) -> None: ...

    def workqueue_execute_start(self, work: Work, wq: Any) -> None: ...

    def workqueue_execute_end(self, work: Work, wq: Any, duration: float, outcome: str) -> None: ...


#: ``run(work, pwq)``: run one item as the worker would, metering its CPU time (``_timing.py``).
Runner = Callable[[Any, Any], Coroutine[Any, Any, None]]


POINTS = (
    "workqueue_queue_work",
    "workqueue_activate_work",
    "workqueue_execute_start",
    "workqueue_execute_end",
)


class _Hooks:
    __slots__ = ("instruments", "on", "points", "run")

    def __init__(self) -> None:
        #: L, read lock-free (A) on the hot path: is anybody listening?
        self.on = False
        #: L: the subscribed instruments, in order.
        self.instruments: list[object] = []
        #: L, read lock-free (A) by emit(): tracepoint -> (instrument, its bound method) for each
        #: instrument that has it, looked up once when instruments change, not at every event.
        #: Replaced, never mutated.
        self.points: dict[str, tuple[tuple[object, Callable[..., Any]], ...]] = {}
        #: L, read lock-free (A) by a worker behind ``on`` only: set while timing is on
        #: (``enable_timing``).
        self.run: Runner | None = None


HOOKS = _Hooks()


def _rebuild() -> None:
    # Context: under LOCK.
    HOOKS.points = {
        point: tuple(
            (inst, method)
            for inst in HOOKS.instruments
            if (method := getattr(inst, point, None)) is not None
        )
        for point in POINTS
    }
    HOOKS.on = bool(HOOKS.instruments)


def emit(point: str, *args: Any) -> None:
    """Call ``point`` on every instrument that has it. Context: any; behind ``HOOKS.on``."""
    for inst, method in HOOKS.points.get(point, ()):
        try:
            method(*args)
        except Exception:
            _log.exception("aioworkqueue: instrument %r raised in %s; removed", inst, point)
            remove_instrument(inst)


def add_instrument(instrument: object) -> None:
    """Subscribe ``instrument`` to the tracepoints. Adding it twice has no effect.

    Context: any.
    """
    with LOCK:
        if instrument not in HOOKS.instruments:
            HOOKS.instruments.append(instrument)
        _rebuild()


def remove_instrument(instrument: object) -> None:
    """Unsubscribe ``instrument``; a no-op if it is not subscribed. Context: any."""
    with LOCK:
        if instrument in HOOKS.instruments:
            HOOKS.instruments.remove(instrument)
        _rebuild()
