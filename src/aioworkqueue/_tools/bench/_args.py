"""The options of ``aioworkqueue bench``, kept apart so the ``aioworkqueue`` command line can
offer them (and ``--help``) without importing the scenarios."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ("DESCRIPTION", "MISSING_MPL", "OPT_IN_KEYS", "STEP_KEYS", "add_arguments")

DESCRIPTION = (
    "Measure aioworkqueue against what you would write instead (asyncio.Queue and workers, a "
    "Task per item, TaskGroup, aiojobs, anyio streams, call_soon_threadsafe, call_later), in "
    "one run on this machine, on each event loop. Judge by the ratios, not by absolute times."
)
#: The scenarios, in the order they run (``--only`` takes these names or their prefixes).
STEP_KEYS = (
    "throughput-plain",
    "throughput-sleep0",
    "memory",
    "threads",
    "timers",
    "lateness",
    "latency",
    "flush",
    "runtime",
    "tracecost",
    "redis",
)
#: Scenarios that run only when ``--only`` names them in full: ``redis`` starts a private
#: redis-server and worker processes, so the default run needs no server.
OPT_IN_KEYS = ("redis",)
MISSING_MPL = (
    "--plot needs matplotlib, which is not installed here; install the bench extra "
    "(pip install 'aioworkqueue[bench]') or run without --plot"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``aioworkqueue bench`` (also used by ``benchmarks/run.py``)."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller bursts and fewer rounds: the whole run in well under a minute",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "both"),
        default=None,
        help="event loop(s) to measure on (default: both when uvloop imports, else asyncio)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument(
        "--markdown", type=Path, metavar="PATH", help="also write the results as Markdown tables"
    )
    parser.add_argument(
        "--plot", type=Path, metavar="PATH.png", help="also draw the main ratios (matplotlib)"
    )
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help="comma-separated scenarios to run (prefixes match): "
        + ", ".join(k for k in STEP_KEYS if k not in OPT_IN_KEYS)
        + "; and, only when named in full: redis (arq and saq against aioworkqueue.redis, "
        "on a private redis-server it starts; needs redis-server on PATH)",
    )
    # For the test suite: tiny sizes on one loop; every code path runs, the numbers mean nothing.
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
