"""``aioworkqueue bench``: the command line, and the run of every scenario on every loop.

Each scenario runs on a fresh event loop of each selected kind (``asyncio.Runner``), so nothing
one leaves behind (cancelled timers, idle workers, a grown deque) can slow down the next. A
scenario that fails is reported, the others still run, and the exit status is then 1; the
targets never change the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from . import _latency, _memory, _redis, _runtime, _threads, _throughput, _timers, _tracecost
from ._args import DESCRIPTION, MISSING_MPL, OPT_IN_KEYS, STEP_KEYS, add_arguments
from ._common import FULL, QUICK, SMOKE, Ctx, Progress, Sizes, import_optional
from ._model import Results
from ._report import (
    evaluate,
    header,
    json_doc,
    markdown,
    plot,
    print_errors,
    print_header,
    print_table,
    print_targets,
    write_json,
)

__all__ = ("STEPS", "Step", "main", "run")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


@dataclass(frozen=True)
class Step:
    """One scenario: its name for ``--only`` and the coroutine that measures it on a loop."""

    key: str
    title: str
    fn: Callable[[Ctx], Coroutine[Any, Any, None]]


STEPS = (
    Step("throughput-plain", "throughput, plain items", _throughput.run_plain),
    Step("throughput-sleep0", "throughput, sleep0 items", _throughput.run_sleep0),
    Step("memory", "memory per pending item", _memory.run),
    Step("threads", "cross-thread submission", _threads.run),
    Step("timers", "timer arm/cancel/re-arm cost", _timers.run_cost),
    Step("lateness", "timer firing lateness", _timers.run_lateness),
    Step("latency", "latency to start", _latency.run_latency),
    Step("flush", "flush under continuous load", _latency.run_flush),
    Step("runtime", "per-CPU runtime vs embedded", _runtime.run),
    Step("tracecost", "cost of the tracepoints, in processes", _tracecost.run),
    Step("redis", "Redis: arq, saq, aioworkqueue.redis", _redis.run),
)
assert tuple(s.key for s in STEPS) == STEP_KEYS


def _loops(choice: str | None, smoke: bool) -> dict[str, LoopFactory] | str:
    """The selected loop factories, or an error message."""
    factories: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
    uvloop = import_optional("uvloop")
    if uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    if choice is None:
        choice = "asyncio" if smoke else "both"
    if choice == "both":
        return factories
    if choice not in factories:
        return f"--loop {choice}: {choice} is not installed"
    return {choice: factories[choice]}


def _named(step: Step, name: str) -> bool:
    """Does ``--only`` name ``step``? By a prefix, or in full for an opt-in scenario."""
    return step.key == name if step.key in OPT_IN_KEYS else step.key.startswith(name)


def _steps(only: str | None) -> list[Step] | str:
    if not only:
        return [s for s in STEPS if s.key not in OPT_IN_KEYS]
    names = [n.strip() for n in only.split(",") if n.strip()]
    chosen = [s for s in STEPS if any(_named(s, n) for n in names)]
    unknown = [n for n in names if not any(_named(s, n) for s in STEPS)]
    if unknown or not chosen:
        names_given = ", ".join(repr(n) for n in (unknown or [only]))
        return f"--only: no scenario named {names_given}; choose from {', '.join(STEP_KEYS)}"
    return chosen


def run(
    args: argparse.Namespace,
    argv: Sequence[str] = (),
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the bench as parsed by :func:`add_arguments`. Returns: the exit status."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    sizes: Sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    loops = _loops(args.loop, args.smoke)
    steps = _steps(args.only)
    for problem in (loops, steps):
        if isinstance(problem, str):
            print(f"aioworkqueue bench: {problem}", file=err)
            return 2
    assert not isinstance(loops, str) and not isinstance(steps, str)
    if args.plot is not None and import_optional("matplotlib") is None:
        print(f"aioworkqueue bench: {MISSING_MPL}", file=err)
        return 2
    h = header(sizes, list(loops))
    print_header(h, sizes, out)
    out.flush()
    results = Results()
    progress = Progress(len(loops) * len(steps), err)
    t0 = time.perf_counter()
    for loop_name, factory in loops.items():
        for step in steps:
            progress.step(f"{loop_name}: {step.title}")
            ctx = Ctx(sizes, loop_name, results, progress)
            try:
                with asyncio.Runner(loop_factory=factory) as runner:
                    runner.run(step.fn(ctx))
            except Exception as exc:
                progress.clear()
                results.errors.append(f"{loop_name}, {step.key}: {type(exc).__name__}: {exc}")
                traceback.print_exc(file=err)
    wall = time.perf_counter() - t0
    progress.clear()
    names = list(loops)
    print_table(results, names, out)
    evaluated = evaluate(results, names)
    print_targets(evaluated, out)
    print_errors(results, out)
    print(f"\nwall time: {wall:.1f} s", file=out)
    if args.json is not None:
        write_json(
            args.json,
            json_doc(h, sizes=sizes, results=results, evaluated=evaluated, wall=wall, argv=argv),
        )
        print(f"results written to {args.json}", file=out)
    if args.markdown is not None:
        command = "aioworkqueue bench " + " ".join(argv)
        args.markdown.write_text(markdown(h, results, evaluated, command), encoding="utf-8")
        print(f"Markdown written to {args.markdown}", file=out)
    if args.plot is not None:
        title = f"aioworkqueue bench ({sizes.name}), {h['python']}, {h['machine']}, {h['date']}"
        plot(results, names, args.plot, title)
        print(f"plot written to {args.plot}", file=out)
    return 1 if results.errors else 0


def main(argv: Sequence[str] | None = None, prog: str = "aioworkqueue bench") -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run. Returns: the exit status."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    return run(parser.parse_args(argv), argv)
