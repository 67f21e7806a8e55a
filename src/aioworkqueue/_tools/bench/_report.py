"""Printing a run: the header, the table of values and ratios, the targets, JSON and a plot.

The targets are the performance goals the library is built to: each says how it should compare
with an alternative (or a bound on a value). They are informational: each is printed with what
was measured and MET or NOT MET, and the command never fails on them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from ._common import Sizes, import_optional
from ._model import UNITS, Results, fmt_ratio, fmt_value

__all__ = (
    "TARGETS",
    "Target",
    "evaluate",
    "header",
    "json_doc",
    "markdown",
    "plot",
    "print_errors",
    "print_header",
    "print_table",
    "print_targets",
    "write_json",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def header(sizes: Sizes, loops: Sequence[str]) -> dict[str, Any]:
    """What the run was measured on: enough to tell two runs' machines apart."""
    from ... import __version__

    getaffinity = getattr(os, "sched_getaffinity", None)
    usable = len(getaffinity(0)) if getaffinity is not None else os.cpu_count()
    loop_names = [
        f"uvloop {_version('uvloop') or '?'}" if name == "uvloop" else name for name in loops
    ]
    return {
        "mode": sizes.name,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "loops": loop_names,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "machine": platform.platform(),
        "arch": platform.machine(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "aioworkqueue": __version__,
        "anyio": _version("anyio"),
        "aiojobs": _version("aiojobs") if import_optional("aiojobs") is not None else None,
        "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def print_header(h: dict[str, Any], sizes: Sizes, out: TextIO) -> None:
    print(f"aioworkqueue bench ({h['mode']} run)", file=out)
    print(f"  Python {h['python']}; loops: {', '.join(h['loops'])}", file=out)
    load = h["loadavg"]
    print(
        f"  CPUs: {h['cpu_count']} ({h['cpus_usable']} usable); machine: {h['machine']} "
        f"({h['arch']})" + (f"; load average at start: {load[0]:.2f}" if load else ""),
        file=out,
    )
    if load and h["cpus_usable"] and load[0] > h["cpus_usable"]:
        print(
            f"  warning: this machine is busy (load {load[0]:.2f} on {h['cpus_usable']} CPUs): "
            "ratios stay comparable within the run, tails (p99, max) much less so",
            file=out,
        )
    print(
        f"  date: {h['date']}; aioworkqueue {h['aioworkqueue']}; anyio {h['anyio']}; "
        f"aiojobs {h['aiojobs'] or 'not installed (pip install aioworkqueue[bench])'}",
        file=out,
    )
    print(
        f"  bursts of {sizes.burst:,} items, best of {sizes.rounds} (after a warm-up burst); "
        "ratios are value / baseline on the same loop in this run",
        file=out,
    )


def print_table(results: Results, loops: Sequence[str], out: TextIO) -> None:
    """Every group: its values and ratios, one pair of columns per loop."""
    width = max((len(r) for g in results.groups.values() for r in g.rows), default=20)
    vw, rw = 16, 8
    for g in results.groups.values():
        print(file=out)
        print(g.title, file=out)
        print(
            f"  [{UNITS[g.unit]}, {g.better} is better; ratio = value / {g.baseline}]",
            file=out,
        )
        print(
            "  " + " " * width + "".join(f"  {lp:>{vw}} {'ratio':>{rw}}" for lp in loops),
            file=out,
        )
        for row in g.rows:
            cols = []
            for lp in loops:
                cell = g.cells.get(lp, {}).get(row)
                text = "-" if cell is None else fmt_value(g.unit, cell.value, cell.note)
                cols.append(f"  {text:>{vw}} {fmt_ratio(g.ratio(lp, row)):>{rw}}")
            mark = "*" if row == g.baseline else " "
            print(f"{mark} {row:<{width}}" + "".join(cols), file=out)
    print("\n(* the baseline of its group)", file=out)


def markdown(
    h: dict[str, Any], results: Results, evaluated: list[dict[str, Any]], command: str
) -> str:
    """The results as Markdown: one table per group (values and ratios), then the targets."""
    loops = list(h["loops"])
    names = [lp.split()[0] for lp in loops]
    lines = [
        f"Command: `{command}`  ",
        f"Python {h['python']}; loops: {', '.join(loops)}; CPUs: {h['cpu_count']} "
        f"({h['cpus_usable']} usable); {h['machine']}; {h['date']}; "
        f"aioworkqueue {h['aioworkqueue']}; anyio {h['anyio']}; "
        f"aiojobs {h['aiojobs'] or 'not installed'}"
        + (f"; load average at start {h['loadavg'][0]:.2f}" if h.get("loadavg") else ""),
    ]
    for g in results.groups.values():
        lines += [
            "",
            f"**{g.title}** — {UNITS[g.unit]}, {g.better} is better; ratio = value / {g.baseline}",
            "",
            "| | " + " | ".join(f"{lp} | ratio" for lp in names) + " |",
            "|---|" + "---:|---:|" * len(names),
        ]
        for row in g.rows:
            label = f"**{row}** (baseline)" if row == g.baseline else row
            cols = []
            for lp in names:
                cell = g.cells.get(lp, {}).get(row)
                cols.append("-" if cell is None else fmt_value(g.unit, cell.value, cell.note))
                cols.append(fmt_ratio(g.ratio(lp, row)))
            lines.append(f"| {label} | " + " | ".join(cols) + " |")
    lines += ["", "Performance goals:", ""]
    for t in evaluated:
        status = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
        got = ", ".join(f"{lp} {v}" for lp, v in t["measured"].items()) or "not measured"
        why = verdict(t)
        lines.append(f"- {status}: {t['target']} ({got})" + (f"; {why}" if why else ""))
    if results.errors:
        lines += ["", "Errors:", ""] + [f"- {e}" for e in results.errors]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Target:
    """A performance goal: ``check`` gives (what was measured, met) for one loop, or None."""

    text: str
    check: Callable[[Results, str], tuple[str, bool] | None]
    loops: tuple[str, ...] | None = None  # None: every loop of the run
    # The same check on the floor's row (``_floor.py``): does the least design meet it?
    floor: Callable[[Results, str], tuple[str, bool] | None] | None = None


def _ratio_at_least(
    key: str, row: str, bound: float, baseline: str | None = None
) -> Callable[[Results, str], tuple[str, bool] | None]:
    def check(res: Results, loop: str) -> tuple[str, bool] | None:
        g = res.groups.get(key)
        r = None if g is None else g.ratio(loop, row, baseline)
        return None if r is None else (f"{r:.2f}x", r >= bound)

    return check


def _ratio_at_most(
    key: str, row: str, bound: float
) -> Callable[[Results, str], tuple[str, bool] | None]:
    def check(res: Results, loop: str) -> tuple[str, bool] | None:
        g = res.groups.get(key)
        r = None if g is None else g.ratio(loop, row)
        return None if r is None else (f"{r:.2f}x", r <= bound)

    return check


def _value(
    key: str, row: str, ok: Callable[[float], bool]
) -> Callable[[Results, str], tuple[str, bool] | None]:
    def check(res: Results, loop: str) -> tuple[str, bool] | None:
        g = res.groups.get(key)
        v = None if g is None else g.value(loop, row)
        return None if v is None or g is None else (fmt_value(g.unit, v), ok(v))

    return check


def _paired_at_most(
    key: str, row: str, bound: float
) -> Callable[[Results, str], tuple[str, bool] | None]:
    """A ratio to the baseline taken run by run (``extra["paired"]``, median over rounds)."""

    def check(res: Results, loop: str) -> tuple[str, bool] | None:
        g = res.groups.get(key)
        cell = None if g is None else g.cells.get(loop, {}).get(row)
        r = None if cell is None else cell.extra.get("paired")
        return None if r is None else (f"{r:.3f}x", r <= bound)

    return check


_REUSED = "aioworkqueue queue_work (reused Work)"
_SUBMIT = "aioworkqueue wq.submit (fresh item)"
_GATHER = "create_task per item + gather"
# The floors with the lock a thread-safe queue_work needs (see _floor.py).
_FLOOR = "floor: deque + 4 workers + lock, reused item"
_FLOOR_FRESH = "floor: deque + 4 workers + lock, fresh item"
_FLOOR_THREADS = "floor: deque + 4 workers + lock, def item"
TARGETS = (
    Target(
        "reused Work, plain items: >= 1.6x asyncio.Queue + 4 workers, on every loop",
        _ratio_at_least("throughput.plain", _REUSED, 1.6),
        floor=_ratio_at_least("throughput.plain", _FLOOR, 1.6),
    ),
    Target(
        "reused Work, plain items: >= 10x create_task per item + gather",
        _ratio_at_least("throughput.plain", _REUSED, 10.0, _GATHER),
        floor=_ratio_at_least("throughput.plain", _FLOOR, 10.0, _GATHER),
    ),
    Target(
        "wq.submit, plain items: >= 1.2x asyncio.Queue + 4 workers",
        _ratio_at_least("throughput.plain", _SUBMIT, 1.2),
        floor=_ratio_at_least("throughput.plain", _FLOOR_FRESH, 1.2),
    ),
    Target(
        "reused Work, sleep0 items: >= 1.5x asyncio.Queue + 4 workers",
        _ratio_at_least("throughput.sleep0", _REUSED, 1.5),
        floor=_ratio_at_least("throughput.sleep0", _FLOOR, 1.5),
    ),
    Target(
        "memory per pending fresh item (wq.submit): <= 100 B",
        _value("memory", "aioworkqueue wq.submit(fn)", lambda v: v <= 100),
    ),
    Target(
        "memory of queueing an already allocated Work: <= 16 B",
        _value("memory", "aioworkqueue queue_work (already allocated Work)", lambda v: v <= 16),
    ),
    Target(
        "cross-thread, 1 producer (def item): >= 1M items/s on the stdlib loop",
        _value("threads.1", "aioworkqueue queue_work, def item", lambda v: v >= 1e6),
        ("asyncio",),
        floor=_value("threads.1", _FLOOR_THREADS, lambda v: v >= 1e6),
    ),
    Target(
        "cross-thread, 1 producer (def item): >= 5x call_soon_threadsafe on the stdlib loop",
        _ratio_at_least("threads.1", "aioworkqueue queue_work, def item", 5.0),
        ("asyncio",),
        floor=_ratio_at_least("threads.1", _FLOOR_THREADS, 5.0),
    ),
    Target(
        "timer arm: queue_delayed_work costs <= loop.call_later",
        _ratio_at_most("timers.arm", "aioworkqueue queue_delayed_work", 1.0),
        floor=_ratio_at_most("timers.arm", "floor: lock section + heap push", 1.0),
    ),
    Target(
        "timer cancel: cancel_delayed_work costs <= TimerHandle.cancel",
        _ratio_at_most("timers.cancel", "aioworkqueue cancel_delayed_work", 1.0),
        floor=_ratio_at_most("timers.cancel", "floor: lock section", 1.0),
    ),
    Target(
        "no timer fires early, on every loop",
        _value("lateness.early", "aioworkqueue queue_delayed_work", lambda v: v == 0),
    ),
    Target(
        "timer lateness p99 < 2 ms at 100k arms/s",
        _value("lateness.p99", "aioworkqueue queue_delayed_work", lambda v: v < 2000),
        floor=_value("lateness.p99", "floor: loop.call_at, never early", lambda v: v < 2000),
    ),
    Target(
        "latency to start, median: queue_work <= loop.call_soon",
        _ratio_at_most("latency.median", "aioworkqueue queue_work", 1.0),
        floor=_ratio_at_most("latency.median", "floor: parked worker + lock", 1.0),
    ),
    Target(
        "tracing and timing off cost <= 3%: normal / stubbed build <= 1.03 (paired runs)",
        _paired_at_most("tracecost", "tracing and timing off (normal build)", 1.03),
    ),
)


def evaluate(results: Results, loops: Sequence[str]) -> list[dict[str, Any]]:
    """Every target: per-loop measurements and whether all the measured loops met it."""
    out = []
    for t in TARGETS:
        want = [lp for lp in loops if t.loops is None or lp in t.loops]
        measured = {lp: got for lp in want if (got := t.check(results, lp)) is not None}
        met: bool | None = all(ok for _v, ok in measured.values()) if measured else None
        entry: dict[str, Any] = {
            "target": t.text,
            "met": met,
            "measured": {lp: v for lp, (v, _ok) in measured.items()},
        }
        if t.floor is not None:
            floor = {lp: got for lp in want if (got := t.floor(results, lp)) is not None}
            entry["met_on"] = {lp: ok for lp, (_v, ok) in measured.items()}
            entry["floor"] = {lp: v for lp, (v, _ok) in floor.items()}
            entry["floor_met_on"] = {lp: ok for lp, (_v, ok) in floor.items()}
        out.append(entry)
    return out


def verdict(t: dict[str, Any]) -> str:
    """What the floor says about a target that was not met ("" when there is nothing to say):
    per loop it was missed on, out of reach (the floor misses it too) or the library's gap."""
    if t["met"] is not False or not t.get("floor_met_on"):
        return ""
    floor_ok: dict[str, bool] = t["floor_met_on"]
    missed = [lp for lp, ok in t["met_on"].items() if not ok and lp in floor_ok]
    beyond = [lp for lp in missed if not floor_ok[lp]]
    ours = [lp for lp in missed if floor_ok[lp]]
    parts = []
    if beyond:
        parts.append(f"out of reach on {', '.join(beyond)}: the floor misses it too")
    if ours:
        parts.append(f"the gap is this library's on {', '.join(ours)}: the floor meets it")
    got = ", ".join(f"{lp} {v}" for lp, v in t["floor"].items())
    return "; ".join(parts) + f" (floor: {got})"


def print_targets(evaluated: list[dict[str, Any]], out: TextIO) -> None:
    print("\nPerformance goals (informational: the command never fails on them)", file=out)
    print("  (a floor is the least design that does the same job; see _bench/_floor.py)", file=out)
    for t in evaluated:
        status = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
        got = ", ".join(f"{lp} {v}" for lp, v in t["measured"].items()) or "not measured"
        print(f"  {status:<8} {t['target']}: {got}", file=out)
        if why := verdict(t):
            print(f"  {'':<8}   {why}", file=out)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def json_doc(
    h: dict[str, Any],
    *,
    sizes: Sizes,
    results: Results,
    evaluated: list[dict[str, Any]],
    wall: float,
    argv: Sequence[str],
) -> dict[str, Any]:
    return {
        "header": h,
        "command": "aioworkqueue bench " + " ".join(argv),
        "sizes": asdict(sizes),
        "groups": [g.to_json() for g in results.groups.values()],
        "targets": evaluated,
        "errors": results.errors,
        "wall_time_s": round(wall, 2),
    }


#: The groups the plot shows, in order, with a short title each.
PLOTTED = {
    "throughput.plain": "Throughput, plain items",
    "throughput.sleep0": "Throughput, sleep0 items",
    "memory": "Memory per pending item",
    "threads.1": "Cross-thread, 1 producer",
    "latency.median": "Latency to start, median",
    "runtime": "Per-CPU runtime, mixed items",
}


def plot(results: Results, loops: Sequence[str], path: Path, title: str) -> None:
    """Ratios of the main groups as horizontal bars, one colour per loop; a log scale where
    they span more than 20x. Raises ImportError when matplotlib is missing (the command checks
    before the run starts)."""
    mpl = import_optional("matplotlib")
    if mpl is None:
        raise ImportError("matplotlib is not installed")
    mpl.use("Agg")
    plt: Any = import_optional("matplotlib.pyplot")
    groups = [(results.groups[k], t) for k, t in PLOTTED.items() if k in results.groups]
    if not groups:
        return
    cols = 2
    rows = (len(groups) + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(14, 2.8 * rows + 0.6), squeeze=False, layout="constrained"
    )
    height = 0.8 / max(1, len(loops))
    for ax, (g, short) in zip(axes.flat, groups, strict=False):
        labels = list(g.rows)
        ratios = [r for lp in loops for row in labels if (r := g.ratio(lp, row)) is not None]
        log = bool(ratios) and max(ratios) / max(min(ratios), 1e-9) > 20
        for j, lp in enumerate(loops):
            ys = [i + j * height for i in range(len(labels))]
            xs = [g.ratio(lp, row) or 0.0 for row in labels]
            ax.barh(ys, xs, height=height, label=lp)
            for y, x in zip(ys, xs, strict=True):
                if x:
                    ax.text(x, y, f" {x:.2f}x", va="center", fontsize=6)
        ax.set_yticks([i + height * (len(loops) - 1) / 2 for i in range(len(labels))])
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        if log:
            ax.set_xscale("log")
        ax.set_xlim(right=(max(ratios, default=1.0) * (3.0 if log else 1.25)))
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_title(
            f"{short} ({g.better} is better)\nratio = value / {g.baseline}", fontsize=8, loc="left"
        )
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=60)
    plt.close(fig)


def print_errors(results: Results, out: TextIO) -> None:
    if results.errors:
        print("\nErrors (these scenarios have no numbers):", file=out)
        for e in results.errors:
            print(f"  {e}", file=out)
