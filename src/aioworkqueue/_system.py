"""The system workqueues and ``schedule_work`` / ``schedule_delayed_work``.

They are ordinary workqueues that cannot be destroyed. In the embedded mode they bind to the
running loop at first use and rebind once that loop has closed (docs/spec.md).
"""

from __future__ import annotations

from ._flags import WQ, WQ_MAX_ACTIVE
from ._lean import use as use_v2
from ._queueing import queue_delayed_work, queue_work
from ._work import DelayedWork, Work
from ._workqueue import Workqueue, alloc_workqueue

__all__ = (
    "schedule_delayed_work",
    "schedule_work",
    "system_bh_wq",
    "system_freezable_wq",
    "system_highpri_wq",
    "system_long_wq",
    "system_unbound_wq",
    "system_wq",
)


def _system(name: str, flags: WQ, max_active: int = 0) -> Workqueue:
    # On the locked core whatever the Core v2 switch says: they follow a runtime, which the
    # lean pool does not serve yet.
    with use_v2(False):
        wq = alloc_workqueue(name, flags, max_active)
    wq._system = True
    wq._routed = True  # they follow whichever runtime is active
    return wq


system_wq = _system("events", WQ(0))
system_highpri_wq = _system("events_highpri", WQ.HIGHPRI)
system_long_wq = _system("events_long", WQ(0))
system_unbound_wq = _system("events_unbound", WQ.UNBOUND, WQ_MAX_ACTIVE)
system_freezable_wq = _system("events_freezable", WQ.FREEZABLE)
system_bh_wq = _system("events_bh", WQ.BH)


def schedule_work(work: Work) -> bool:
    """``queue_work(system_wq, work)``. Context, Returns, Raises: as :func:`queue_work`."""
    return queue_work(system_wq, work)


def schedule_delayed_work(dwork: DelayedWork, delay: float) -> bool:
    """``queue_delayed_work(system_wq, dwork, delay)``. Context, Returns: the same."""
    return queue_delayed_work(system_wq, dwork, delay)
