"""The package is layered (docs/design.md §1): no import circle among its modules, counting the
imports inside functions and under ``TYPE_CHECKING``; and the method forms, which call up
through tables instead of importing, find every table entry filled.

CI runs ``lint-imports`` (the layers contract in ``pyproject.toml``); this test runs the
stdlib-only ``tools/import_graph.py``, so a circle also fails a plain ``pytest`` run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aioworkqueue import _work, _workqueue

TOOL = Path(__file__).resolve().parent.parent / "tools" / "import_graph.py"


def test_no_import_circle_among_the_package_modules() -> None:
    proc = subprocess.run(
        [sys.executable, str(TOOL)], check=False, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith(" 0 cycle(s)"), proc.stdout


def test_every_method_form_has_its_function() -> None:
    for table in (_work.FORMS, _workqueue.WQ_FORMS):
        for name in type(table).__slots__:
            assert callable(getattr(table, name)), name
