"""The ``aioworkqueue`` command."""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

from ._tools.bench import DESCRIPTION as BENCH_DESCRIPTION
from ._tools.bench import add_arguments as add_bench_arguments

__all__ = ("main",)

# What ``--help`` shows; the module docstring is for readers of the code (it may use markup).
_DESCRIPTION = (
    "The Linux kernel's workqueue API for asyncio: run the demo service, measure the library "
    "against the alternatives, watch a running process's workqueues, or run Redis workers."
)

_WORKER_DESCRIPTION = (
    "Run workers for the aioworkqueue.redis App named by MODULE:APP (imported with the current "
    "directory on the path; APP may be dotted). Each worker process runs up to --concurrency "
    "items at once through the in-process core. SIGTERM or SIGINT stops a worker: it takes no "
    "new entry, lets running items finish within --stop-timeout, then cancels the rest and hands "
    "them back to the stream, where another worker runs them again at once (not after the "
    "lease); a second signal makes the deadline now. Exit status 0 after a clean stop. With "
    "--processes N this process supervises N worker processes: it forwards SIGTERM and SIGINT "
    "to them, reports one that dies, restarts none, and exits non-zero if any failed. Needs the "
    "redis extra (pip install 'aioworkqueue[redis]')."
)


def _version() -> str:
    """Returns: the installed distribution's version, or a note when it is not installed."""
    try:
        return metadata.version("aioworkqueue")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare source tree
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    """Run the ``aioworkqueue`` command line. Returns: the exit status."""
    parser = argparse.ArgumentParser(prog="aioworkqueue", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"aioworkqueue {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a small UDP service on the embedded default")
    demo.add_argument("--seconds", type=float, default=3.0, help="how long to serve (default 3)")
    demo.add_argument("--datagrams", type=int, default=3000, help="how many to send")
    demo.add_argument("--seed", type=int, default=1, help="seed of the simulated failures")
    bench = sub.add_parser(
        "bench",
        help="measure against asyncio.Queue, Tasks, aiojobs, anyio, call_soon_threadsafe",
        description=BENCH_DESCRIPTION,
    )
    add_bench_arguments(bench)
    mon = sub.add_parser(
        "monitor",
        help="print live workqueue statistics of a process (as the kernel's wq_monitor.py)",
        description=(
            "Read the statistics a Runtime(monitor=ADDRESS) serves and print them, in the shape "
            "of the kernel's tools/workqueue/wq_monitor.py. CPUtime (seconds) and p50ms/p99ms "
            "(queue-to-start latency) need aioworkqueue.enable_timing() in the process; '-' "
            "otherwise."
        ),
    )
    mon.add_argument("address", help="a Unix socket path or 127.0.0.1:PORT")
    mon.add_argument("regex", nargs="?", help="only workqueues whose name matches")
    mon.add_argument("-i", "--interval", type=float, help="repeat every INTERVAL seconds")
    mon.add_argument("-j", "--json", action="store_true", help="print JSON lines")
    mon.add_argument("-n", "--count", type=int, help="stop after COUNT reports (with -i)")
    mon.add_argument(
        "--rich",
        action="store_true",
        help="draw the table with rich, redrawn in place on a terminal "
        "(needs the monitor extra: pip install 'aioworkqueue[monitor]')",
    )
    wrk = sub.add_parser(
        "worker",
        help="run aioworkqueue.redis workers for MODULE:APP (SIGTERM hands running items back)",
        description=_WORKER_DESCRIPTION,
    )
    wrk.add_argument("app", metavar="MODULE:APP", help="the App to serve, e.g. service:app")
    wrk.add_argument(
        "--queues",
        metavar="A,B",
        help="comma-separated queue names (default: every queue the app declared with "
        "app.workqueue(...) when MODULE was imported)",
    )
    wrk.add_argument(
        "--concurrency", type=int, default=10, help="items at once per process (default 10)"
    )
    wrk.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes under one supervisor (default 1: this process is the worker); "
        "a process that dies is reported, not restarted",
    )
    wrk.add_argument(
        "--stop-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds running items get to finish after SIGTERM before they are handed back "
        "(default 10)",
    )
    wrk.add_argument(
        "--lease",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds a run stays this worker's without a renewal; after a crash other workers "
        "re-run its items after at most 1.5 leases (default 30)",
    )
    wrk.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop (default asyncio)",
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if args.command == "monitor":
        from ._monitor import run_monitor

        # Options may come between ADDRESS and REGEX (``monitor ADDR -i 1 REGEX``, the kernel
        # tool's order): a plain parse would give the optional REGEX up at the first option.
        args = mon.parse_intermixed_args(argv[argv.index("monitor") + 1 :])

        return run_monitor(
            args.address,
            interval=args.interval,
            json_lines=args.json,
            regex=args.regex,
            count=args.count,
            rich=args.rich,
        )
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "demo":
        from ._tools.demo import run_demo

        status: int = run_demo(seconds=args.seconds, datagrams=args.datagrams, seed=args.seed)
        return status
    if args.command == "worker":
        from .redis._cli import run as run_worker  # only here: `--help` needs no redis

        return run_worker(args)
    if args.command == "bench":
        from ._tools.bench import run as run_bench

        bench_argv = argv[argv.index("bench") + 1 :]
        return run_bench(args, bench_argv)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
