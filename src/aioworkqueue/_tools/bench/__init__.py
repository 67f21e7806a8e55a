"""``aioworkqueue bench``: this library against what users would write instead, measured.

Users choose between aioworkqueue and a hand-written alternative (``asyncio.Queue`` and worker
tasks, a Task per item, ``TaskGroup``, aiojobs, anyio memory streams, ``call_soon_threadsafe``,
``call_later``). This package measures both in one process, on each event loop, and prints each
result with its ratio to a named baseline. Only ratios from one run mean anything: absolute
times depend on the machine and on what else it is doing. Nothing here runs in the test suite
beyond a smoke run with tiny sizes (``--smoke``); speed is never asserted.

Scenarios (one module each; every module's docstring says what it measures and how):

* ``_throughput``: bursts of plain and ``sleep0`` items, run to completion;
* ``_memory``: bytes per pending item (tracemalloc);
* ``_threads``: cross-thread submission from 1 and 4 producer threads;
* ``_timers``: arm / cancel / re-arm cost, and firing lateness at 100k arms/s;
* ``_latency``: latency to start on an idle loop, and flushing under continuous load;
* ``_runtime``: ``Runtime(cpus=1)`` and ``cpus=2`` against the embedded mode;
* ``_tracecost``: tracepoints off against a build without them, and tracing and timing on
  (a process per run, A/B interleaved);
* ``_redis``: arq and saq against ``aioworkqueue.redis`` on a private redis-server (enqueue
  rate, end to end with 1 and 4 worker processes, latency to start); only with
  ``--only redis``, never in the default run.

Optional dependencies (the ``bench`` extra): aiojobs (its rows are skipped without it),
matplotlib (for ``--plot``), and arq, saq and redis-py (for ``--only redis``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TextIO

from ._args import DESCRIPTION, STEP_KEYS, add_arguments

__all__ = ("DESCRIPTION", "STEP_KEYS", "add_arguments", "main", "run")


def main(argv: Sequence[str] | None = None, prog: str = "aioworkqueue bench") -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the bench. Returns: the exit status."""
    from ._main import main as _main

    return _main(argv, prog)


def run(
    args: argparse.Namespace,
    argv: Sequence[str] = (),
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the bench with options parsed by :func:`add_arguments`. Returns: the exit status."""
    from ._main import run as _run

    return _run(args, argv, out, err)
