"""The watchdog: workqueue lockups and CPU hogs, seen from outside the pool loops.

A thread of the runtime (``aiowq-watchdog``; ``aiowq/<cpu>`` names pool threads only) pings
every pool loop with ``call_soon_threadsafe`` every ``tick`` seconds and watches for the answer.
In the embedded mode, ``running()`` starts one for the host loop's pool while its block runs.
An unanswered ping means the loop has not turned since it was sent:

* after ``cpu_intensive_thresh`` (default 10 ms), the item the loop is executing ran that long
  without awaiting: it is counted as a CPU hog (``stats().cpu_hogs``) and reported at WARNING,
  once per function and at most once a second, with the advice to use ``WQ.CPU_INTENSIVE``;
* after ``watchdog_thresh`` (default 30 s, the kernel's), it is a *workqueue lockup*, reported at
  ERROR with the pool, the running item, how long, and the loop thread's current stack.

The cost is one ping per pool per tick and nothing on the hot path: the item is found by asking
which task the stuck loop is stepping (or which WQ.BH item it is calling).

Owner: the watchdog thread; pools' ``ping_*`` fields are written by it and by the pong callback
under ``_lock.LOCK``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING

from ._lock import LOCK
from ._work import Work, func_name

if TYPE_CHECKING:
    from ._pool import Pool
    from ._pwq import Pwq

__all__ = ("Watchdog",)

_log = logging.getLogger("aioworkqueue")


def _pong(pool: Pool, seq: int) -> None:
    with LOCK:
        if pool.ping_seq == seq:
            pool.ping_at = 0.0


class Watchdog:
    """Watches the pools of one runtime, or the embedded pool of ``running()``'s loop, from its
    own thread."""

    def __init__(self, pools: list[Pool], watchdog_thresh: float, cpu_intensive_thresh: float):
        self.pools = pools  # I (the runtime's list; its pools' ping_* fields: L)
        self.watchdog_thresh = watchdog_thresh  # I
        self.hog_thresh = cpu_intensive_thresh  # I
        self.tick = max(0.001, min(cpu_intensive_thresh / 4, watchdog_thresh / 4))  # I
        self._stop = threading.Event()  # I (an Event: safe from any thread)
        self._reported: set[str] = set()  # T: functions reported as hogs (once each)
        self._last_report = 0.0  # T
        self._thread = threading.Thread(target=self._run, name="aiowq-watchdog", daemon=True)  # I

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it. Context: any thread but the watchdog's."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            now = time.monotonic()
            for pool in self.pools:
                if not pool.dead:
                    self._check(pool, now)

    def _check(self, pool: Pool, now: float) -> None:
        with LOCK:
            sent = pool.ping_at
            if not sent:
                pool.ping_seq += 1
                pool.ping_at = now
                pool.ping_hog = pool.ping_lockup = False
                seq = pool.ping_seq
        if not sent:
            try:
                pool.loop.call_soon_threadsafe(_pong, pool, seq)
            except RuntimeError:  # the loop is closing
                pass
            return
        stuck = now - sent
        if stuck >= self.hog_thresh and not pool.ping_hog:
            pool.ping_hog = True
            self._hog(pool, stuck)
        if stuck >= self.watchdog_thresh and not pool.ping_lockup:
            pool.ping_lockup = True
            self._lockup(pool, stuck)

    def _running(self, pool: Pool) -> tuple[Work, Pwq] | None:
        # Which item is the stuck loop executing? The task it is stepping, or a WQ.BH call.
        with LOCK:
            bh = pool.bh_current
            if bh is not None:
                return bh, bh._pwq  # type: ignore[return-value]
            task = asyncio.tasks._current_tasks.get(pool.loop)  # type: ignore[attr-defined]
            for worker in pool.workers:
                if worker.task is task and worker.current is not None:
                    return worker.current, worker.pwq  # type: ignore[return-value]
        return None

    def _hog(self, pool: Pool, stuck: float) -> None:
        running = self._running(pool)
        if running is None:
            return  # the loop is busy with something that is not a work item
        work, pwq = running
        with LOCK:
            pwq.nr_cpu_hogs += 1
        name = func_name(work.func)
        now = time.monotonic()
        if name in self._reported or now - self._last_report < 1.0:
            return
        self._reported.add(name)
        self._last_report = now
        _log.warning(
            "workqueue %r: %r ran %.0f ms on pool cpu=%d without awaiting (CPU hog); "
            "run CPU-bound plain functions on a WQ.CPU_INTENSIVE queue",
            pwq.wq.name,
            work,
            stuck * 1000,
            pool.cpu,
        )

    def _lockup(self, pool: Pool, stuck: float) -> None:
        running = self._running(pool)
        frame = sys._current_frames().get(pool.tid)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)"
        what = f"{running[0]!r} on workqueue {running[1].wq.name!r}" if running else "no work item"
        _log.error(
            "workqueue lockup: pool cpu=%d has not turned for %.1f s; running %s; "
            "loop thread stack:\n%s",
            pool.cpu,
            stuck,
            what,
            stack,
        )
