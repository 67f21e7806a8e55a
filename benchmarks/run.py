"""Run the benchmark suite: the same as ``aioworkqueue bench`` (see benchmarks/README.md).

Usage: ``python benchmarks/run.py [--quick] [--loop asyncio|uvloop|both] [--json PATH]
[--plot PATH.png] [--only NAMES]``.
"""

from __future__ import annotations

import sys

from aioworkqueue._tools.bench import main

if __name__ == "__main__":
    sys.exit(main(prog="benchmarks/run.py"))
