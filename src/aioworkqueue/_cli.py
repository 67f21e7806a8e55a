"""The ``aioworkqueue`` command."""

from __future__ import annotations

import argparse
import sys

__all__ = ("main",)


def main(argv: list[str] | None = None) -> int:
    """Run the ``aioworkqueue`` command line. Returns: the exit status."""
    parser = argparse.ArgumentParser(prog="aioworkqueue", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a small UDP service on the embedded default")
    demo.add_argument("--seconds", type=float, default=3.0, help="how long to serve (default 3)")
    demo.add_argument("--datagrams", type=int, default=3000, help="how many to send")
    demo.add_argument("--seed", type=int, default=1, help="seed of the simulated failures")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        status: int = run_demo(seconds=args.seconds, datagrams=args.datagrams, seed=args.seed)
        return status
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
