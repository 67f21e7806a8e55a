"""Observability: an instrument, timing statistics, a CPU hog, show_state() and the monitor.

A ``Runtime(cpus=2, monitor=...)`` serves its statistics on a loopback port while it runs:

* an *instrument* (any object with some of the four tracepoint methods) counts events — the hook
  an application uses to feed OpenTelemetry or its own metrics;
* ``enable_timing()`` adds ``started``, ``cpu_time`` and queue-to-start latency percentiles to
  ``wq.stats()``;
* a plain function that holds its loop for 50 ms is counted as a CPU hog by the watchdog (and
  logged once at WARNING with the advice to use ``WQ.CPU_INTENSIVE``);
* ``show_state()`` dumps what runs and for how long, as the kernel does on a lockup;
* ``aioworkqueue monitor ADDRESS`` (run here as a subprocess) prints the ``wq_monitor`` table.

Run it: ``python examples/observability.py``.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import aioworkqueue as aw


class CountingInstrument:
    """Counts tracepoint events; called on the thread where each event happens."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()
        self._lock = threading.Lock()  # two pool threads report at once

    def workqueue_queue_work(self, work: aw.Work, wq: Any, req_cpu: int | None, cpu: int) -> None:
        with self._lock:
            self.events["queue_work"] += 1

    def workqueue_execute_end(self, work: aw.Work, wq: Any, duration: float, outcome: str) -> None:
        with self._lock:
            self.events[outcome] += 1


async def quick(w: aw.Work) -> None:
    await asyncio.sleep(0)


def hog(w: aw.Work) -> None:
    end = time.thread_time() + 0.05  # 50 ms of this thread's CPU without awaiting: a CPU hog
    while time.thread_time() < end:  # (CPU time, not wall time: on a busy machine it is more)
        pass


def fails(w: aw.Work) -> None:
    raise ValueError("a failing item, reported to the queue's exception handler")


async def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)  # the demo prints what matters itself
    instrument = CountingInstrument()
    aw.add_instrument(instrument)
    aw.enable_timing()
    try:
        async with aw.Runtime(cpus=2, loop_factory="asyncio", monitor="127.0.0.1:0") as rt:
            wq = aw.alloc_workqueue("observed", 0, 8, exception_handler=lambda q, w, e: None)
            for _ in range(100):
                aw.queue_work(wq, aw.Work(quick))
            aw.queue_work(wq, aw.Work(fails))
            aw.queue_work_on(0, wq, aw.Work(hog))
            await wq.flush()

            gate = threading.Event()

            async def waits(w: aw.Work) -> None:
                await asyncio.to_thread(gate.wait, 5)  # awaits: its loop stays free

            aw.queue_work(wq, aw.Work(waits))  # still running during the dump
            await asyncio.sleep(0.01)
            dump = aw.show_state()

            assert rt.monitor_address is not None
            table = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "aioworkqueue._cli", "monitor", rt.monitor_address],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            gate.set()
            await wq.flush()
            st = wq.stats()
            print(f"instrument saw: {dict(sorted(instrument.events.items()))}")
            print(f"started={st.started} completed={st.completed} failed={st.failed}")
            print(
                f"latency p50 known: {st.latency_p50 is not None}; cpu_time > 0.04 s: "
                f"{st.cpu_time is not None and st.cpu_time > 0.04}"
            )
            print(f"CPU hog counted: {st.cpu_hogs >= 1}")
            named = any(
                "waits" in ln and "on workqueue 'observed' for" in ln for ln in dump.splitlines()
            )
            print(f"show_state names the running item and for how long: {named}")
            print(
                f"monitor exit status: {table.returncode}; lists the queue: "
                f"{any(line.startswith('observed') for line in table.stdout.splitlines())}"
            )
        print(f"unfinished at shutdown: {rt.unfinished}")
    finally:
        aw.disable_timing()
        aw.remove_instrument(instrument)


if __name__ == "__main__":
    asyncio.run(main())
