"""aioworkqueue.redis: the workqueue model over Redis Streams (docs/redis.md).

This module only re-exports. It needs the ``redis`` extra; ``import aioworkqueue`` never
imports it.
"""

from ._app import App, RemoteWork, RemoteWorkqueue, Serializer
from ._ops import (
    cancel_work,
    cancel_work_sync,
    destroy_workqueue,
    drain_workqueue,
    flush_work,
    flush_workqueue,
    mod_delayed_work,
    queue_delayed_work,
    queue_work,
    queue_work_many,
    work_busy,
    work_pending,
)
from ._worker import Worker

__all__ = (
    "App",
    "RemoteWork",
    "RemoteWorkqueue",
    "Serializer",
    "Worker",
    "cancel_work",
    "cancel_work_sync",
    "destroy_workqueue",
    "drain_workqueue",
    "flush_work",
    "flush_workqueue",
    "mod_delayed_work",
    "queue_delayed_work",
    "queue_work",
    "queue_work_many",
    "work_busy",
    "work_pending",
)
