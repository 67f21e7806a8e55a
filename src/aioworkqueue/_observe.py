"""Statistics of pools and runtimes, and ``show_state()``: what is busy, as the kernel dumps it.

Everything here reads the counters that the core keeps anyway, under the state lock, when asked;
nothing is measured on the hot path for it. The timing statistics (how long an item has been
running) come from ``_timing.py`` and exist only while ``enable_timing()`` is on.
"""

from __future__ import annotations

from . import _timing
from ._barrier import _WAITERS, WAIT_PENDING
from ._lock import LOCK
from ._pool import Pool
from ._runtime import ACTIVE, PoolStats, RuntimeStats, _pool_stats, runtime_stats
from ._timing import timing_enabled
from ._work import WAITED, Work
from ._workqueue import _POOLS, Workqueue

__all__ = ("PoolStats", "RuntimeStats", "runtime_stats", "show_state")


def _pools_now() -> list[Pool]:
    rt = ACTIVE.rt
    if rt is not None:
        return [p for p in rt.pools if p is not None]
    return [p for loop, p in _POOLS.items() if not loop.is_closed()]


def _waiters_of(work: object) -> tuple[int, int]:
    """(waiting for its pending instance, waiting for its run) in flush_work/cancel_*_sync.

    Context: under LOCK.
    """
    pending = running = 0
    for mode, _fut in _WAITERS.get(id(work), ()):
        if mode == WAIT_PENDING:
            pending += 1
        else:
            running += 1
    return pending, running


def _waited(work: object) -> str:
    pending, running = _waiters_of(work)
    parts = []
    if running:
        parts.append(f"{running} waiting for its run")
    if pending:
        parts.append(f"{pending} waiting for its pending instance")
    return f" ({', '.join(parts)} in flush_work/cancel_*_sync)" if parts else ""


def show_state() -> str:
    """Return a text dump of busy pools and workqueues, as the kernel prints on a lockup.

    For each pool: its workers and each item running, with its queue and, while timing is on
    (:func:`~aioworkqueue.enable_timing`), for how long. For each workqueue with work in flight
    or waiters: how many items wait to start (``pending``), run, and are armed (delayed), how many
    ``flush_workqueue``/``drain`` calls wait on it (``flushers``) and how many ``flush_work``/
    ``cancel_*_sync`` calls wait on its items (``flush_work_waiters``); then each waited-on item.
    Context: any thread; a snapshot, taken under the state lock.
    """
    lines: list[str] = []
    timed = timing_enabled()
    now = _timing.clock()
    shown_running = False
    with LOCK:
        pools = _pools_now()
        queues: dict[int, Workqueue] = {}
        waiters: dict[int, int] = {}  # id(wq) -> flush_work waiters on its items
        waited: dict[int, list[str]] = {}  # id(wq) -> lines naming each waited-on item
        seen: set[int] = set()

        def note(work: Work, wq: Workqueue) -> None:
            if id(work) in seen or id(work) not in _WAITERS:
                return
            seen.add(id(work))
            n = sum(_waiters_of(work))
            waiters[id(wq)] = waiters.get(id(wq), 0) + n
            queues[id(wq)] = wq
            waited.setdefault(id(wq), []).append(f"  waited on: {work!r}{_waited(work)}")

        for pool in pools:
            st = _pool_stats(pool)
            lines.append(
                f"pool cpu={st.cpu}: workers={st.workers} idle={st.idle} running={st.running} "
                f"waiting={st.waiting} rescuers={st.rescuers}"
            )
            running: list[tuple[Work, Workqueue]] = [
                (worker.current, worker.pwq.wq)
                for worker in sorted(pool.workers, key=id)
                if worker.current is not None and worker.pwq is not None
            ]
            bh = pool.bh_current
            if bh is not None and bh._pwq is not None:
                running.append((bh, bh._pwq.wq))
            for work, wq in running:
                shown_running = True
                took = _timing.running_for(wq, work, pool.tid, now) if timed else None
                how_long = f" for {took:.3f} s" if took is not None else ""
                lines.append(
                    f"  running {work!r} on workqueue {wq.name!r}{how_long}{_waited(work)}"
                )
                queues[id(wq)] = wq
                note(work, wq)
            for pwq in pool.pwqs:
                queues[id(pwq.wq)] = pwq.wq
        rt = ACTIVE.rt
        if rt is not None:
            for wq in rt._wqs:
                queues[id(wq)] = wq
        if _WAITERS:  # pending items somebody waits on: on a worklist, inactive, or armed
            for pool in pools:
                for dq in (pool.hi, pool.worklist, pool.bh, pool.ub_hi, pool.ub):
                    for item in dq:
                        if item._state & WAITED and item._pwq is not None:
                            note(item, item._pwq.wq)
            for wq in list(queues.values()):
                for pwq in wq._links():
                    for item in pwq.inactive:
                        if item._state & WAITED:
                            note(item, wq)
                for item in wq._armed.values():
                    if item._state & WAITED:
                        note(item, wq)
        flushers = {key: len(wq._epochs.flushers) for key, wq in queues.items()}
        total_waiters = sum(len(w) for w in _WAITERS.values())
    if shown_running and not timed:
        lines.append(
            "  (how long each item has been running is shown while timing is on: "
            "aioworkqueue.enable_timing())"
        )
    for key, wq in sorted(queues.items(), key=lambda kv: kv[1].name):
        s = wq.stats()
        if s.in_flight or s.armed or flushers[key] or waiters.get(key):
            lines.append(
                f"workqueue {wq.name!r}: in_flight={s.in_flight} pending={s.pending} "
                f"running={s.running} armed={s.armed} flushers={flushers[key]} "
                f"flush_work_waiters={waiters.get(key, 0)}"
            )
            lines.extend(waited.get(key, ()))
    if total_waiters:
        lines.append(f"flush_work/cancel_*_sync calls waiting in all: {total_waiters}")
    return "\n".join(lines) if lines else "aioworkqueue: no pool"
