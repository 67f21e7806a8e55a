"""Every example in ``examples/`` runs by itself, exits 0 within its time limit, and says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# example file -> lines its output must contain
EXPECTED = {
    "starlette_service.py": [
        "200 {'queued': 'linus'}",
        "stopped; done: welcome ada, welcome grace, welcome linus",
        "not finished, reported: tips ada (armed), tips grace (armed), tips linus (armed)",
    ],
    "aiohttp_service.py": [
        "202 {'accepted': 'img4'}",
        "stopped; thumbnails made: 5 of 5, unfinished: 0",
    ],
    "interrupt_handler.py": [
        "every successful queue_work ran exactly once: True",
    ],
    "observability.py": [
        "instrument saw: {'completed': 102, 'failed': 1, 'queue_work': 103}",
        "started=103 completed=102 failed=1",
        "latency p50 known: True; cpu_time > 0.04 s: True",
        "CPU hog counted: True",
        "show_state names the running item and for how long: True",
        "monitor exit status: 0; lists the queue: True",
        "unfinished at shutdown: []",
    ],
    "per_cpu_runtime.py": [
        "hashed 16 chunks; runs per pool thread:",
        "  aiowq/0 (queue_work_on): 1",
        "  aiowq/1 (queue_work_on): 1",
        "threads left: []",
    ],
}


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for line in EXPECTED[name]:
        assert line in lines, f"{line!r} not in the output of {name}:\n{proc.stdout}"
