"""Workqueue flags, busy flags and limits, with the kernel's names and values."""

from __future__ import annotations

import enum

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
    "WorkBusy",
)


class WQ(enum.IntFlag):
    """Flags of :func:`alloc_workqueue` (``include/linux/workqueue.h`` values)."""

    #: Run plain functions straight from a loop callback, with no worker task (R17).
    BH = 1 << 0
    #: Not bound to a pool: items go to a shared queue that any pool serves.
    UNBOUND = 1 << 1
    #: Stopped by :func:`freeze_workqueues` (R18).
    FREEZABLE = 1 << 2
    #: Keeps a reserved worker so its items always make progress (R19).
    MEM_RECLAIM = 1 << 3
    #: Items start before normal items waiting in the same pool (R5).
    HIGHPRI = 1 << 4
    #: Plain functions run in worker threads, at most ``max_active`` at once (R17).
    CPU_INTENSIVE = 1 << 5


WQ_BH = WQ.BH
WQ_UNBOUND = WQ.UNBOUND
WQ_FREEZABLE = WQ.FREEZABLE
WQ_MEM_RECLAIM = WQ.MEM_RECLAIM
WQ_HIGHPRI = WQ.HIGHPRI
WQ_CPU_INTENSIVE = WQ.CPU_INTENSIVE

#: Largest ``max_active`` a workqueue accepts.
WQ_MAX_ACTIVE = 2048
#: ``max_active`` of a workqueue allocated with ``max_active=0``.
WQ_DFL_ACTIVE = 1024


class WorkBusy(enum.IntFlag):
    """What :func:`work_busy` reports (``WORK_BUSY_*``)."""

    PENDING = 1 << 0
    RUNNING = 1 << 1
