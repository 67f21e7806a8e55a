"""The exceptions of aioworkqueue.

Every error the library raises on purpose is a :class:`WorkqueueError`; wrong types
are :class:`TypeError` and bad values :class:`ValueError`, as in the standard library.
Messages are built from the arguments and always name the call, the workqueue and the work
item involved, so that a log line alone tells which queue refused what.
"""

from __future__ import annotations

__all__ = (
    "WorkqueueDeadlockError",
    "WorkqueueDestroyedError",
    "WorkqueueDrainingError",
    "WorkqueueError",
    "WorkqueueFullError",
    "WorkqueueLoopError",
    "WorkqueueShuttingDownError",
)


class WorkqueueError(Exception):
    """Base class of every error aioworkqueue raises on purpose."""


class WorkqueueDestroyedError(WorkqueueError):
    """Queueing on, or flushing, a workqueue that was destroyed (R14)."""


class WorkqueueDrainingError(WorkqueueError):
    """Queueing from outside onto a workqueue that is being drained (R14)."""


class WorkqueueDeadlockError(WorkqueueError):
    """A flush, drain, destroy or cancel_sync that could only finish after its caller (R15)."""


class WorkqueueFullError(WorkqueueError):
    """Queueing onto a workqueue that holds ``max_pending`` items not started yet (R21)."""


class WorkqueueLoopError(WorkqueueError):
    """No event loop to run on, or a queue bound to another loop that still has work."""


class WorkqueueShuttingDownError(WorkqueueDrainingError, WorkqueueLoopError):
    """Queueing from outside while ``running()`` or a :class:`Runtime` shuts down.

    One class for that refusal in both modes: the embedded mode used to raise
    ``WorkqueueDrainingError`` (its shutdown drains the queues) and a runtime
    ``WorkqueueLoopError`` (it is not running any more); this is both, so an ``except`` clause
    written for either mode still catches it in the other.
    """


def describe(obj: object) -> str:
    """Return ``repr(obj)`` for an error message, or a stand-in if that repr raises.

    A user's ``__repr__`` that raises must not replace the error being reported with its own.
    """
    try:
        return repr(obj)
    except Exception as exc:
        return f"<{type(obj).__name__} object at {id(obj):#x} (repr raised {type(exc).__name__})>"
