"""What the tracepoints cost: switched off, against a build that has none; and switched on.

The claim of ``_hooks.py`` is that a tracepoint nobody listens to costs one attribute test, and
that opt-in timing (``enable_timing``) adds one test of a local per item on top. To measure it,
this scenario builds two copies of the installed package in a temporary directory, both passed
through the same ``ast.parse``/``ast.unparse`` round trip so that they differ in nothing else:

* *stubbed*: every ``if HOOKS.on:`` block (or ``if hooks.on:``, where a hot loop binds ``HOOKS``
  to a local) removed by an AST transform (an ``else`` branch, if any, stays in its place), and
  so is the worker's ``if timed is not None:`` test (its ``elif`` chain stays); the build is
  checked to read ``.on`` nowhere any more;
* *normal*: the same code with the tracepoints in place.

Each run is a fresh process (``python -m aioworkqueue._tools.bench._tracecost child ...``, the copy
first on ``PYTHONPATH``) that measures the reused-Work throughput scenario: bursts of
``sizes.burst`` plain items, each burst queued with ``queue_work`` and flushed, best of
``sizes.rounds`` bursts after a warm-up burst. Four kinds of run: stubbed, normal (tracing and
timing off), normal with tracing on (``enable_tracing`` to a structlog logger that renders every
event with ``KeyValueRenderer`` and writes it to ``os.devnull``), and normal with timing on. They
run in rounds, ``sizes.tracecost_rounds`` of them, in alternating order (ABCD, DCBA, ...), so a
slow moment of the machine or a drift hits every kind alike; each row's value is the median of
its runs in nanoseconds per item, lower is better, and the ``paired`` ratio in the JSON is the
median over rounds of that round's ratio to the stubbed run: the number the target is judged on
(tracepoints off cost at most 3%).
"""

from __future__ import annotations

import ast
import asyncio
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ._common import BenchError, Ctx
from ._model import Cell

__all__ = (
    "BASELINE",
    "LABELS",
    "ORDER",
    "build",
    "child",
    "hook_tests_left",
    "run",
)

BASELINE = "tracepoints removed (stubbed build)"
LABELS = {
    "stubbed": BASELINE,
    "normal": "tracing and timing off (normal build)",
    "tracing": "tracing on (structlog to /dev/null)",
    "timing": "timing on (enable_timing)",
}
ORDER = ("stubbed", "normal", "tracing", "timing")


#: The names ``_hooks.HOOKS`` goes by in the core (hot loops bind it to a local).
_HOOKS_NAMES = ("HOOKS", "hooks")


def _is_hook_test(test: ast.expr) -> bool:
    """``HOOKS.on`` or ``timed is not None``: the two tests the stubbed build drops."""
    if (
        isinstance(test, ast.Attribute)
        and test.attr == "on"
        and isinstance(test.value, ast.Name)
        and test.value.id in _HOOKS_NAMES
    ):
        return True
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "timed"
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.IsNot)
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value is None
    )


class _Strip(ast.NodeTransformer):
    """Replace each ``if <hook test>:`` by its ``else`` branch (or ``pass``: no bytecode), and
    drop ``HOOKS.on`` from the conditions it is one operand of (``a or b or HOOKS.on``: a fast
    path taken only while nobody listens), as if it were always False."""

    def __init__(self) -> None:
        self.removed = 0

    def visit_If(self, node: ast.If) -> Any:
        self.generic_visit(node)
        if _is_hook_test(node.test):
            self.removed += 1
            return node.orelse or ast.Pass()
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> Any:
        self.generic_visit(node)
        kept = [v for v in node.values if not _is_hook_test(v)]
        if len(kept) == len(node.values):
            return node
        self.removed += len(node.values) - len(kept)
        if isinstance(node.op, ast.And):
            return ast.Constant(False)  # ... and HOOKS.on: never true without tracepoints
        if not kept:
            return ast.Constant(False)
        return kept[0] if len(kept) == 1 else ast.BoolOp(op=node.op, values=kept)


def build(dest: Path, *, stub: bool) -> int:
    """Copy the installed package to ``dest/aioworkqueue``, every module through
    ``ast.unparse``; with ``stub``, without its hook tests.

    Returns: how many ``if`` statements were removed (0 for the normal build).
    """
    src = Path(__file__).resolve().parents[2]
    pkg = dest / "aioworkqueue"
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    removed = 0
    for path in sorted(pkg.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        if stub:
            strip = _Strip()
            tree = ast.fix_missing_locations(strip.visit(tree))
            removed += strip.removed
        path.write_text(ast.unparse(tree) + "\n", encoding="utf-8")
    return removed


def hook_tests_left(root: Path) -> list[str]:
    """Where a build still reads ``HOOKS.on`` (in an ``if`` or any other expression) or tests
    ``timed is not None`` (file:line)."""
    left = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Load):
                continue  # HOOKS.on = ... in add_instrument: not a test
            if isinstance(node, ast.Attribute | ast.Compare) and _is_hook_test(node):
                left.append(f"{path.relative_to(root)}:{node.lineno}")
    return left


def _run_child(root: Path, kind: str, loop_name: str, n: int, rounds: int) -> float:
    """One process: the best burst's time in seconds. Raises BenchError when it fails or did
    not import the build it was given."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aioworkqueue._tools.bench._tracecost",
            "child",
            kind,
            loop_name,
            str(n),
            str(rounds),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode:
        raise BenchError(f"tracecost, {kind}: the child failed: {proc.stderr.strip()[-2000:]}")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    if not Path(doc["file"]).resolve().is_relative_to(root.resolve()):
        raise BenchError(f"tracecost, {kind}: imported {doc['file']}, not the build in {root}")
    best: float = doc["best"]
    return best


async def run(ctx: Ctx) -> None:
    """Nanoseconds per item: stubbed build, normal build, tracing on, timing on."""
    import tempfile

    s = ctx.sizes
    n, reps = s.burst, s.tracecost_rounds
    g = ctx.results.group(
        "tracecost",
        f"Cost of the tracepoints: reused Work, plain items, bursts of {n:,}; "
        f"{reps} rounds of one process per build, median",
        "ns",
        "lower",
        BASELINE,
    )
    times: dict[str, list[float]] = {k: [] for k in ORDER}
    with tempfile.TemporaryDirectory(prefix="aiowq-tracecost-") as tmp:
        roots = {"stubbed": Path(tmp, "stubbed"), "normal": Path(tmp, "normal")}
        removed = await asyncio.to_thread(build, roots["stubbed"], stub=True)
        await asyncio.to_thread(build, roots["normal"], stub=False)
        if not removed or hook_tests_left(roots["stubbed"]):
            raise BenchError("tracecost: the stubbed build still has hook tests")
        for rep in range(reps):
            order = ORDER if rep % 2 == 0 else ORDER[::-1]
            for kind in order:
                ctx.progress.show(f"{kind} {rep + 1}/{reps}")
                root = roots["stubbed" if kind == "stubbed" else "normal"]
                best = await asyncio.to_thread(_run_child, root, kind, ctx.loop_name, n, s.rounds)
                times[kind].append(best / n * 1e9)
    base = times["stubbed"]
    for kind in ORDER:
        ts = times[kind]
        paired = statistics.median(t / b for t, b in zip(ts, base, strict=True))
        g.put(
            ctx.loop_name,
            LABELS[kind],
            Cell(statistics.median(ts), extra={"paired": paired, "min": min(ts)}),
        )


def child(argv: list[str]) -> int:
    """In the child process: measure one kind of run, print JSON. Returns: the exit status."""
    kind, loop_name, n_text, rounds_text = argv
    n, rounds = int(n_text), int(rounds_text)
    import aioworkqueue as aw

    from ._common import Counter, make_work_fn

    if kind == "tracing":
        import logging

        import structlog

        sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        aw.enable_tracing(
            structlog.wrap_logger(
                structlog.PrintLogger(sink),
                processors=[
                    structlog.processors.add_log_level,
                    structlog.processors.KeyValueRenderer(),
                ],
                wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            )
        )
    elif kind == "timing":
        aw.enable_timing()

    async def bursts() -> float:
        c = Counter()
        fn = make_work_fn("plain", c)
        items = [aw.Work(fn) for _ in range(n)]
        wq = aw.alloc_workqueue("bench-tracecost")
        queue = aw.queue_work
        best = float("inf")
        for rnd in range(rounds + 1):  # round 0 warms up
            before = c.n
            gc.collect()
            t0 = time.perf_counter()
            for w in items:
                queue(wq, w)
            await aw.flush_workqueue(wq)
            dt = time.perf_counter() - t0
            if c.n - before != n:
                raise BenchError(f"tracecost, {kind}: {c.n - before} of {n} items ran")
            if rnd:
                best = min(best, dt)
        await aw.destroy_workqueue(wq)
        return best

    factory = asyncio.new_event_loop
    if loop_name == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        best = runner.run(bursts())
    print(json.dumps({"best": best, "file": aw.__file__}))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        sys.exit(child(sys.argv[2:]))
    sys.exit(f"usage: python -m {__spec__.name if __spec__ else __name__} child KIND LOOP N ROUNDS")
