"""What every scenario of ``aioworkqueue bench`` shares: sizes, the measured items, the context.

The item of every throughput scenario is an ``async def`` that increments a counter (``plain``)
or awaits ``asyncio.sleep(0)`` once first (``sleep0``): the smallest work there is, so what is
measured is the cost of the machinery that carries it, not of the work. Every burst checks that
exactly the expected number of items ran, so a fast result can never come from lost items.

Times are wall-clock (``time.perf_counter``); a scenario is judged by ratios between
alternatives measured in the same process, on the same loop, interleaved round by round, never by
absolute numbers.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import shutil
import statistics
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from ._model import Results

__all__ = (
    "FULL",
    "QUICK",
    "SMOKE",
    "BenchError",
    "Counter",
    "Ctx",
    "ItemFn",
    "Kind",
    "Progress",
    "Sizes",
    "WorkFn",
    "best",
    "import_optional",
    "make_item",
    "make_work_fn",
    "median",
    "percentile",
)

Kind = Literal["plain", "sleep0"]
#: An item as the alternatives run it: ``await item()``.
ItemFn = Callable[[], Coroutine[Any, Any, None]]
#: An item as aioworkqueue runs it: ``await fn(work)``.
WorkFn = Callable[[Any], Coroutine[Any, Any, None]]


class BenchError(Exception):
    """A scenario saw something wrong (items lost or run twice, a wait that never ended)."""


@dataclass(frozen=True)
class Sizes:
    """How much each scenario does. ``rounds``: measured bursts per alternative (best is kept)."""

    name: str
    burst: int  # items per throughput burst
    rounds: int  # measured bursts per alternative, after one warm-up burst
    memory: int  # pending items whose memory is traced
    threads: int  # items per cross-thread burst (split over the producer threads)
    thread_rounds: int
    timer_ops: int  # arms / cancels / re-arms per timed round
    timer_rounds: int
    lateness: int  # timers armed at ``arm_rate`` per lateness round
    lateness_rounds: int
    arm_rate: float  # arms per second while measuring lateness
    latency: int  # idle-loop latency samples per alternative
    flush_wait: float  # bound on each wait of the flush-under-load scenario (seconds)
    flush_samples: int
    backlog: int  # items the producer keeps outstanding in the flush-under-load scenario
    runtime_burst: int  # items per burst of the per-CPU runtime scenario
    runtime_rounds: int
    tracecost_rounds: int  # rounds of one process per kind of build (``_tracecost``)
    # ``--only redis`` (``_redis``): jobs per enqueue round and per end-to-end run, enqueue
    # rounds, latency samples, and the counts of worker processes of the end-to-end runs.
    redis_jobs: int
    redis_rounds: int
    redis_latency: int
    redis_workers: tuple[int, ...]
    #: Jobs per run of the scaling rows (aioworkqueue.redis with 1 and then 2 worker processes).
    redis_scale_jobs: int


FULL = Sizes(
    name="full",
    burst=10_000,
    rounds=15,
    memory=10_000,
    threads=100_000,
    thread_rounds=7,
    timer_ops=10_000,
    timer_rounds=9,
    lateness=50_000,
    lateness_rounds=3,
    arm_rate=100_000.0,
    latency=10_000,
    flush_wait=0.5,
    flush_samples=7,
    backlog=1_000,
    runtime_burst=10_000,
    runtime_rounds=7,
    tracecost_rounds=7,
    redis_jobs=5_000,
    redis_rounds=3,
    redis_latency=200,
    redis_workers=(1, 2, 4),
    redis_scale_jobs=20_000,
)
QUICK = Sizes(
    name="quick",
    burst=3_000,
    rounds=5,
    memory=3_000,
    threads=30_000,
    thread_rounds=3,
    timer_ops=3_000,
    timer_rounds=3,
    lateness=10_000,
    lateness_rounds=2,
    arm_rate=100_000.0,
    latency=1_000,
    flush_wait=0.25,
    flush_samples=3,
    backlog=500,
    runtime_burst=3_000,
    runtime_rounds=3,
    tracecost_rounds=3,
    redis_jobs=1_000,
    redis_rounds=2,
    redis_latency=200,
    redis_workers=(1, 2, 4),
    redis_scale_jobs=5_000,
)
#: For the test suite: every code path, tiny sizes, one loop; the numbers mean nothing.
SMOKE = Sizes(
    name="smoke",
    burst=40,
    rounds=1,
    memory=40,
    threads=80,
    thread_rounds=1,
    timer_ops=40,
    timer_rounds=1,
    lateness=40,
    lateness_rounds=1,
    arm_rate=100_000.0,
    latency=10,
    flush_wait=0.02,
    flush_samples=1,
    backlog=20,
    runtime_burst=40,
    runtime_rounds=1,
    tracecost_rounds=1,
    redis_jobs=50,
    redis_rounds=1,
    redis_latency=20,
    redis_workers=(1,),
    redis_scale_jobs=50,
)


class Counter:
    """What the items increment; each burst checks it moved by exactly the burst size."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


def make_item(kind: Kind, c: Counter) -> ItemFn:
    """The measured item, as an ``async def`` without arguments (for the alternatives)."""
    if kind == "plain":

        async def plain() -> None:
            c.n += 1

        return plain

    async def sleep0() -> None:
        await asyncio.sleep(0)
        c.n += 1

    return sleep0


def make_work_fn(kind: Kind, c: Counter) -> WorkFn:
    """The same item as a work function: it receives its work item, which it ignores."""
    if kind == "plain":

        async def plain(_work: object) -> None:
            c.n += 1

        return plain

    async def sleep0(_work: object) -> None:
        await asyncio.sleep(0)
        c.n += 1

    return sleep0


def import_optional(name: str) -> Any | None:
    """Import an optional dependency (the ``bench`` extra), or return None when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def best(times: Sequence[float]) -> float:
    """The shortest time: the run least disturbed by everything else on the machine."""
    return min(times)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values; ``q`` in 0..1."""
    if not sorted_values:
        raise ValueError("percentile of nothing")
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


class Progress:
    """Where the run is, on stderr: ``[3/18] uvloop: throughput, plain items: aiojobs 2/7``.

    On a terminal it is one line rewritten in place (cut to the terminal's width); elsewhere
    (a pipe, a log file) one line per scenario, without the details.
    """

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty is not None and isatty())
        self.columns = shutil.get_terminal_size().columns - 1 if self.live else 0
        self.index = 0
        self.head = ""
        self._width = 0

    def step(self, head: str) -> None:
        self.index += 1
        self.head = head
        if self.live:
            self.show("")
        else:
            self.stream.write(f"[{self.index}/{self.total}] {head}\n")
            self.stream.flush()

    def show(self, detail: str) -> None:
        if not self.live:
            return
        text = f"[{self.index}/{self.total}] {self.head}" + (f": {detail}" if detail else "")
        text = text[: self.columns]
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def clear(self) -> None:
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


@dataclass
class Ctx:
    """What a scenario gets: the sizes, the loop it runs on, where results go, progress."""

    sizes: Sizes
    loop_name: str
    results: Results
    progress: Progress
