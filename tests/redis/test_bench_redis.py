"""``aioworkqueue bench --only redis`` runs end to end and leaves nothing behind.

Tiny sizes, arq and saq only, one worker process: every code path of the harness runs (the
private server, the gate, the counter, the latency samples, the stop), and the numbers come
out whole. Speed is never asserted; the real figures come from a run of the command
(benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from dataclasses import replace
from io import StringIO
from pathlib import Path

import pytest

from aioworkqueue._tools.bench import _redis
from aioworkqueue._tools.bench._common import SMOKE, Ctx, Progress
from aioworkqueue._tools.bench._main import _steps
from aioworkqueue._tools.bench._model import Results
from aioworkqueue._tools.bench._report import print_table

pytest.importorskip("arq")
pytest.importorskip("saq")


def _children() -> set[int]:
    """The pids of this process's live children (redis-server, worker processes), less
    multiprocessing's resource tracker, which the spawn context starts once and keeps."""
    me = os.getpid()
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        if int(fields[1]) != me or fields[0] == "Z":
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            pids.add(int(entry.name))
    return pids


def test_the_redis_scenario_measures_arq_and_saq_and_cleans_up() -> None:
    before = _children()  # the session's own redis-server, if another test started it
    results = Results()
    sizes = replace(SMOKE, redis_jobs=50, redis_latency=10, redis_workers=(1,))
    ctx = Ctx(sizes, "asyncio", results, Progress(1, StringIO()))
    t0 = time.monotonic()
    with asyncio.Runner() as runner:
        runner.run(_redis.measure(ctx, systems=("arq", "saq")))
    assert time.monotonic() - t0 < 60  # a hang guard, not a speed check
    assert results.errors == []

    keys = [
        "redis.enqueue",
        "redis.enqueue.batched",
        "redis.e2e.1",
        "redis.latency.median",
        "redis.latency.p99",
    ]
    assert list(results.groups) == keys
    for key in keys:
        g = results.groups[key]
        assert g.baseline.startswith("arq"), key
        assert len(g.rows) == 2, (key, g.rows)
        for row in g.rows:
            value = g.value("asyncio", row)
            assert value is not None and value > 0, (key, row)
        assert g.ratio("asyncio", g.baseline) == 1.0
    out = StringIO()
    print_table(results, ["asyncio"], out)
    text = out.getvalue()
    assert "* arq enqueue_job " in text and "saq enqueue " in text
    assert "(no batch API)" in text and "x 10 concurrent jobs" in text

    # Every worker process and the private server are gone.
    assert multiprocessing.active_children() == []
    deadline = time.monotonic() + 5
    while _children() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _children() - before == set()


def test_the_aioworkqueue_column_measures_the_backend_and_cleans_up() -> None:
    pytest.importorskip("aioworkqueue.redis")
    before = _children()
    results = Results()
    sizes = replace(SMOKE, redis_jobs=60, redis_latency=10, redis_workers=(1, 2))
    ctx = Ctx(sizes, "asyncio", results, Progress(1, StringIO()))
    t0 = time.monotonic()
    with asyncio.Runner() as runner:
        runner.run(_redis.measure(ctx, systems=("aioworkqueue.redis",)))
    assert time.monotonic() - t0 < 60  # a hang guard, not a speed check
    assert results.errors == []  # which includes: every e2e run counted exactly 60 jobs
    rows = {key: g.rows for key, g in results.groups.items()}
    gather = f"aioworkqueue.redis queue_work, gather of {_redis.CHUNK}"
    many = f"aioworkqueue.redis queue_work_many, {_redis.CHUNK} per call"
    assert rows == {
        "redis.enqueue": ["aioworkqueue.redis queue_work"],
        "redis.enqueue.batched": [gather, many],
        "redis.e2e.1": ["aioworkqueue.redis"],
        "redis.e2e.2": ["aioworkqueue.redis"],
        "redis.latency.median": ["aioworkqueue.redis"],
        "redis.latency.p99": ["aioworkqueue.redis"],
        "redis.scaling": list(_redis.SCALE_ROWS.values()),  # 1 and 2 worker processes
        "redis.scaling.cpu": list(_redis.CPU_ROWS.values()),  # server and workers, per job
        "redis.scaling.work": list(_redis.SCALE_ROWS.values()),  # jobs with CPU work
    }
    for key, g in results.groups.items():
        for row in g.rows:
            cell = g.cells["asyncio"][row]
            # CPU per job of 50 jobs may round to 0 clock ticks; a rate may not
            low = 0 if key == "redis.scaling.cpu" else 1e-9
            assert not cell.note and cell.value is not None and cell.value >= low, (key, row)
    p50 = results.groups["redis.latency.median"].value("asyncio", "aioworkqueue.redis")
    p99 = results.groups["redis.latency.p99"].value("asyncio", "aioworkqueue.redis")
    assert p50 is not None and p99 is not None and p50 <= p99
    assert multiprocessing.active_children() == []
    deadline = time.monotonic() + 5
    while _children() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _children() - before == set()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_the_scaling_cpu_reader_counts_cpu_time_and_a_work_job_spends_it() -> None:
    # The work jobs spin on CPU time, so a preempted worker still does all of its work, and
    # the reader sees it: both sides in CPU time, so the bounds below do not depend on the load.
    before = _redis._cpu_seconds(os.getpid())
    _redis._spin(0.05)
    after = _redis._cpu_seconds(os.getpid())
    assert before is not None and after is not None
    assert after[0] - before[0] >= 0.05 - 0.011  # one clock tick of rounding
    assert _redis._cpu_seconds(os.getpid(), None) is None  # no pid: no number, not a guess


def test_redis_runs_only_when_named_in_full() -> None:
    default = _steps(None)
    assert not isinstance(default, str)
    assert "redis" not in [s.key for s in default]
    assert [s.key for s in default] == [s.key for s in default if s.key != "redis"]
    chosen = _steps("redis")
    assert not isinstance(chosen, str) and [s.key for s in chosen] == ["redis"]
    prefixed = _steps("r")
    assert not isinstance(prefixed, str) and [s.key for s in prefixed] == ["runtime"]
    assert isinstance(_steps("red"), str)  # no scenario is named "red"
