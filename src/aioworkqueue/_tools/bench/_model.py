"""The results of one bench run: groups of rows, one cell per event loop, and their units.

A group is one question ("how many plain items per second?") with one unit, one direction
(higher or lower is better) and one named baseline: the alternative every row is divided by.
The ratio is always ``value / baseline value`` on the same loop in the same run, so it reads in
the group's own direction (a throughput ratio of 2 is twice as fast; a memory ratio of 0.5 is
half the bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ("UNITS", "Better", "Cell", "Group", "Results", "fmt_ratio", "fmt_value")

Better = Literal["higher", "lower"]

#: Unit key -> how it is named in the table header.
UNITS = {
    "items/s": "items/s",
    "B": "bytes per item",
    "ns": "ns per operation",
    "us": "microseconds",
    "ms": "milliseconds",
    "%": "percent of timers",
}


@dataclass
class Cell:
    """One measured number; ``value`` None means "no number", and ``note`` says why."""

    value: float | None
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Group:
    """One question, answered per loop; rows keep the order in which they were first measured."""

    key: str
    title: str
    unit: str
    better: Better
    baseline: str
    note: str = ""
    rows: list[str] = field(default_factory=list)
    cells: dict[str, dict[str, Cell]] = field(default_factory=dict)  # loop -> row -> cell

    def put(self, loop: str, row: str, cell: Cell) -> None:
        if row not in self.rows:
            self.rows.append(row)
        self.cells.setdefault(loop, {})[row] = cell

    def value(self, loop: str, row: str) -> float | None:
        cell = self.cells.get(loop, {}).get(row)
        return None if cell is None else cell.value

    def ratio(self, loop: str, row: str, baseline: str | None = None) -> float | None:
        """``row / baseline`` on ``loop``; None when either has no number, or when the ratio
        would mean nothing (a baseline of 0 or below, a negative value: early timers)."""
        v = self.value(loop, row)
        b = self.value(loop, self.baseline if baseline is None else baseline)
        if v is None or b is None or b <= 0 or v < 0:
            return None
        return v / b

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "unit": self.unit,
            "better": self.better,
            "baseline": self.baseline,
            "note": self.note,
            "rows": [
                {
                    "label": row,
                    "loops": {
                        loop: {
                            "value": cell.value,
                            "ratio": self.ratio(loop, row),
                            "note": cell.note,
                            **cell.extra,
                        }
                        for loop, cells in self.cells.items()
                        if (cell := cells.get(row)) is not None
                    },
                }
                for row in self.rows
            ],
        }


class Results:
    """Every group of a run, in the order they were first measured, and the errors met."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self.errors: list[str] = []

    def group(
        self,
        key: str,
        title: str,
        unit: str,
        better: Better,
        baseline: str,
        *,
        note: str = "",
    ) -> Group:
        """The group ``key``, created on first use (later calls return the same one)."""
        g = self.groups.get(key)
        if g is None:
            if unit not in UNITS:
                raise ValueError(f"unknown unit {unit!r}")
            g = self.groups[key] = Group(key, title, unit, better, baseline, note)
        return g


def fmt_value(unit: str, value: float | None, note: str = "") -> str:
    """A value for the table, e.g. ``1.23 M/s``, ``64.0 B``, ``850 ns``, ``12.3 us``."""
    if value is None:
        return note or "-"
    if unit == "items/s":
        if value >= 1e6:
            return f"{value / 1e6:.2f} M/s"
        if value >= 1e3:
            return f"{value / 1e3:.1f} k/s"
        return f"{value:.0f} /s"
    if unit == "B":
        return f"{value:.1f} B"
    if unit == "ns":
        return f"{value:,.0f} ns"
    if unit == "us":
        return f"{value:,.1f} us"
    if unit == "ms":
        return f"{value:,.2f} ms"
    if unit == "%":
        return f"{value:.2f} %"
    return f"{value:g} {unit}"  # pragma: no cover - every unit is listed in UNITS


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"
