"""aioworkqueue: the Linux kernel's workqueue API, rebuilt for asyncio.

This module only re-exports; see ``docs/design.md`` for the architecture.

PYTEST_DONT_REWRITE: the pytest plugin's entry point makes pytest rewrite this package's asserts;
this module has none, and its namespace stays exactly the public API.
"""

from ._cancel import (
    cancel_delayed_work,
    cancel_delayed_work_sync,
    cancel_work,
    cancel_work_sync,
    disable_work,
    disable_work_sync,
    enable_work,
)
from ._config import configure
from ._errors import (
    WorkqueueDeadlockError,
    WorkqueueDestroyedError,
    WorkqueueDrainingError,
    WorkqueueError,
    WorkqueueFullError,
    WorkqueueLoopError,
    WorkqueueShuttingDownError,
)
from ._flags import (
    WQ,
    WQ_BH,
    WQ_CPU_INTENSIVE,
    WQ_DFL_ACTIVE,
    WQ_FREEZABLE,
    WQ_HIGHPRI,
    WQ_MAX_ACTIVE,
    WQ_MEM_RECLAIM,
    WQ_UNBOUND,
    WorkBusy,
)
from ._flush import (
    destroy_workqueue,
    drain_workqueue,
    flush_delayed_work,
    flush_work,
    flush_workqueue,
)
from ._freeze import freeze_workqueues, thaw_workqueues
from ._hooks import Instrument, add_instrument, remove_instrument
from ._lifespan import running
from ._observe import PoolStats, RuntimeStats, show_state
from ._query import current_work, delayed_work_pending, work_busy, work_pending
from ._queueing import (
    CallWork,
    mod_delayed_work,
    mod_delayed_work_on,
    queue_delayed_work,
    queue_delayed_work_on,
    queue_work,
    queue_work_on,
    queue_work_wait,
)
from ._runtime import Runtime, Unfinished
from ._system import (
    schedule_delayed_work,
    schedule_work,
    system_bh_wq,
    system_freezable_wq,
    system_highpri_wq,
    system_long_wq,
    system_unbound_wq,
    system_wq,
)
from ._timing import disable_timing, enable_timing
from ._tracing import disable_tracing, enable_tracing
from ._work import DelayedWork, Work, WorkFunc
from ._workqueue import (
    ExceptionHandler,
    Workqueue,
    WorkqueueStats,
    alloc_ordered_workqueue,
    alloc_workqueue,
    create_singlethread_workqueue,
    create_workqueue,
)

__version__ = "0.1.0"

__all__ = (
    "WQ",
    "WQ_BH",
    "WQ_CPU_INTENSIVE",
    "WQ_DFL_ACTIVE",
    "WQ_FREEZABLE",
    "WQ_HIGHPRI",
    "WQ_MAX_ACTIVE",
    "WQ_MEM_RECLAIM",
    "WQ_UNBOUND",
    "CallWork",
    "DelayedWork",
    "ExceptionHandler",
    "Instrument",
    "PoolStats",
    "Runtime",
    "RuntimeStats",
    "Unfinished",
    "Work",
    "WorkBusy",
    "WorkFunc",
    "Workqueue",
    "WorkqueueDeadlockError",
    "WorkqueueDestroyedError",
    "WorkqueueDrainingError",
    "WorkqueueError",
    "WorkqueueFullError",
    "WorkqueueLoopError",
    "WorkqueueShuttingDownError",
    "WorkqueueStats",
    "add_instrument",
    "alloc_ordered_workqueue",
    "alloc_workqueue",
    "cancel_delayed_work",
    "cancel_delayed_work_sync",
    "cancel_work",
    "cancel_work_sync",
    "configure",
    "create_singlethread_workqueue",
    "create_workqueue",
    "current_work",
    "delayed_work_pending",
    "destroy_workqueue",
    "disable_timing",
    "disable_tracing",
    "disable_work",
    "disable_work_sync",
    "drain_workqueue",
    "enable_timing",
    "enable_tracing",
    "enable_work",
    "flush_delayed_work",
    "flush_work",
    "flush_workqueue",
    "freeze_workqueues",
    "mod_delayed_work",
    "mod_delayed_work_on",
    "queue_delayed_work",
    "queue_delayed_work_on",
    "queue_work",
    "queue_work_on",
    "queue_work_wait",
    "remove_instrument",
    "running",
    "schedule_delayed_work",
    "schedule_work",
    "show_state",
    "system_bh_wq",
    "system_freezable_wq",
    "system_highpri_wq",
    "system_long_wq",
    "system_unbound_wq",
    "system_wq",
    "thaw_workqueues",
    "work_busy",
    "work_pending",
)
