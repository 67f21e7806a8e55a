"""``aioworkqueue bench`` runs end to end and reports what it measured.

These are smoke tests: tiny sizes on one loop (``--smoke``), so every scenario's code path runs
and the table and the JSON come out whole. Speed is never asserted here: performance is judged
by the ratios of a real run (``aioworkqueue bench``), never inside the test suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aioworkqueue._tools.bench import STEP_KEYS, main

GROUPS = {
    "throughput.plain",
    "throughput.sleep0",
    "memory",
    "threads.1",
    "threads.4",
    "timers.arm",
    "timers.cancel",
    "timers.rearm",
    "lateness.p50",
    "lateness.p99",
    "lateness.max",
    "lateness.early",
    "latency.median",
    "latency.p99",
    "flush.sleep0",
    "flush.plain",
    "runtime",
    "tracecost",
}


def test_smoke_run_prints_the_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    t0 = time.monotonic()
    status = main(["--smoke", "--json", str(path), "--markdown", str(md)])
    elapsed = time.monotonic() - t0
    out, err = capsys.readouterr()
    assert status == 0, out + err
    assert elapsed < 30  # a hang guard, not a speed check
    assert out.startswith("aioworkqueue bench (smoke run)\n")
    for text in (
        "Python ",
        "CPUs: ",
        "machine: ",
        "date: ",
        "aioworkqueue 0.1.0",
        "Throughput, plain",
        "higher is better",
        "lower is better",
        "* asyncio.Queue + 4 workers",
        "Performance goals (informational",
        "wall time: ",
    ):
        assert text in out, text
    assert "Errors" not in out
    assert "[1/10] asyncio: throughput, plain items" in err  # progress, on stderr
    # A user reads this output: no wording from the project's own tracker.
    assert "issue" not in (out + err + path.read_text(encoding="utf-8")).lower()

    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["header"]["mode"] == "smoke"
    assert doc["header"]["loops"] == ["asyncio"]
    assert doc["errors"] == []
    assert doc["command"] == f"aioworkqueue bench --smoke --json {path} --markdown {md}"
    groups = {g["key"]: g for g in doc["groups"]}
    assert set(groups) == GROUPS
    for g in groups.values():
        assert g["better"] in ("higher", "lower")
        labels = [row["label"] for row in g["rows"]]
        assert g["baseline"] in labels, g["key"]
        for row in g["rows"]:
            cell = row["loops"]["asyncio"]
            assert cell["value"] is not None or cell["note"], (g["key"], row["label"])
    base = next(
        r for r in groups["throughput.plain"]["rows"] if r["label"] == "asyncio.Queue + 4 workers"
    )
    assert base["loops"]["asyncio"]["ratio"] == 1.0
    assert len(doc["targets"]) == 14
    for t in doc["targets"]:
        assert t["met"] in (True, False, None)

    text = md.read_text(encoding="utf-8")
    assert text.startswith(f"Command: `aioworkqueue bench --smoke --json {path} --markdown {md}`")
    assert "| | asyncio | ratio |" in text
    assert "| **asyncio.Queue + 4 workers** (baseline) | " in text
    assert "Performance goals:" in text
    assert "issue" not in text.lower()


def test_only_and_a_missing_aiojobs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "aiojobs", None)  # import aiojobs now raises ImportError
    path = tmp_path / "bench.json"
    assert main(["--smoke", "--only", "throughput-plain,mem", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "aiojobs not installed" in out
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert [g["key"] for g in doc["groups"]] == ["throughput.plain", "memory"]
    for g in doc["groups"]:
        row = next(r for r in g["rows"] if r["label"].startswith("aiojobs"))
        assert row["loops"]["asyncio"] == {"value": None, "ratio": None, "note": "not installed"}


def test_plot_without_matplotlib_says_so_before_running(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["--smoke", "--plot", str(tmp_path / "r.png")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "--plot needs matplotlib" in err
    assert "pip install 'aioworkqueue[bench]'" in err
    assert not (tmp_path / "r.png").exists()


def test_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "r.png"
    assert main(["--smoke", "--only", "throughput-plain,memory", "--plot", str(path)]) == 0
    assert f"plot written to {path}" in capsys.readouterr().out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--smoke", "--only", "nonsense"]) == 2
    assert (
        "--only: no scenario named 'nonsense'; choose from throughput-plain"
        in capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as e:
        main(["--loop", "tokio"])
    assert e.value.code == 2


def test_bench_help_from_the_console_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aioworkqueue._cli", "bench", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: aioworkqueue bench")
    for option in ("--quick", "--loop", "--json", "--markdown", "--plot", "--only", *STEP_KEYS):
        assert option in proc.stdout, option
    assert "--smoke" not in proc.stdout  # for the test suite only


def test_tracecost_builds_a_copy_without_hook_tests_that_runs(tmp_path: Path) -> None:
    import aioworkqueue
    from aioworkqueue._tools.bench import _tracecost

    src = Path(aioworkqueue.__file__).parent
    in_source = _tracecost.hook_tests_left(src)  # the tests as the source has them
    assert sum(f.startswith("_pool.py:") for f in in_source) >= 5  # 4 tracepoints, timed
    stubbed, normal = tmp_path / "stubbed", tmp_path / "normal"
    assert _tracecost.build(stubbed, stub=True) == len(in_source)
    assert _tracecost.build(normal, stub=False) == 0
    assert _tracecost.hook_tests_left(stubbed) == []
    assert len(_tracecost.hook_tests_left(normal)) == len(in_source)
    text = (stubbed / "aioworkqueue" / "_pool.py").read_text(encoding="utf-8")
    assert "HOOKS.on" not in text and "timed is not None" not in text
    # The stubbed build imports and runs work (tracing simply has no effect there).
    code = (
        "import asyncio, aioworkqueue as aw\n"
        "async def main():\n"
        "    ran = []\n"
        "    async with aw.alloc_workqueue('q') as wq:\n"
        "        aw.queue_work(wq, aw.Work(ran.append))\n"
        "        aw.queue_work(wq, aw.Work(lambda w: None))\n"
        "        await wq.flush()\n"
        "    assert len(ran) == 1 and wq.stats().completed == 2\n"
        "asyncio.run(main())\n"
        "print(aw.__file__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=stubbed,
        env={**os.environ, "PYTHONPATH": str(stubbed)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(stubbed)
    for kind in _tracecost.ORDER:  # each kind of child runs (no speed is asserted)
        root = stubbed if kind == "stubbed" else normal
        assert _tracecost._run_child(root, kind, "asyncio", 20, 1) > 0
