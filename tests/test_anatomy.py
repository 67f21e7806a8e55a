"""``benchmarks/anatomy.py``: the opcode counts it reports are exact, so two runs agree, and they
name the lines they come from."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "anatomy.py"


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _totals(out: str) -> dict[str, float]:
    return {
        m.group(1).strip(): float(m.group(2))
        for m in re.finditer(r"^  (\S.*?)\s+(\d+\.\d)$", out, re.MULTILINE)
    }


def test_counts_are_exact_and_the_floors_are_below_the_library() -> None:
    first, second = _totals(_run()), _totals(_run())
    assert first == second
    for name in ("queue_work, same loop", "queue_delayed_work", "cancel_delayed_work"):
        assert first[name] > 0, name
    worker = "worker, per plain async item (after flush_workqueue)"
    assert first["floor: queue"] < first["queue_work, same loop"]
    assert first["floor: worker, per plain async item"] < first[worker]
    assert first["floor: arm"] < first["queue_delayed_work"]


def test_lines_name_the_source() -> None:
    out = _run("--lines", "3")
    assert re.search(r"_queueing\.py:\d+ queue_work: ", out)
    assert re.search(r"_pool\.py:\d+ _worker_main: ", out)
