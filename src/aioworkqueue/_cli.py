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
    "against the alternatives, or watch a running process's workqueues."
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
    if args.command == "bench":
        from ._tools.bench import run as run_bench

        bench_argv = argv[argv.index("bench") + 1 :]
        return run_bench(args, bench_argv)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
