"""``aioworkqueue worker MODULE:APP`` for real: worker processes against the session's server.

The items record what they do in Redis (a running counter and its maximum, a per-key running
flag, lists of starts and ends with the process id), so the assertions are about what every
process did, read back from the server. Nothing here waits on the wall clock for a result: each
wait polls a condition in Redis with a generous deadline.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import pytest_asyncio

import aioworkqueue.redis as awr
from aioworkqueue._cli import main
from aioworkqueue.redis._worker import handback_channel

TASKS = '''
import asyncio
import os

import aioworkqueue.redis as awr

P = os.environ["AWQ_TEST_PREFIX"]
app = awr.App(url=os.environ["REDIS_URL"], prefix=P)
mp = app.workqueue("mp", max_active=2)
slow = app.workqueue("slow")

# INCR the running counter, keep its maximum, and take the key's running flag (a second holder
# counts an overlap): one script, so the check and the count are one step.
ENTER = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX') then redis.call('INCR', KEYS[4]) end
return n
"""
LEAVE = """
redis.call('DEL', KEYS[3])
redis.call('DECR', KEYS[1])
"""


def keys(name):
    return 4, P + ":running", P + ":max", P + ":flag:" + name, P + ":overlap"


@app.function
async def step(name, n):
    r = app.client
    await r.eval(ENTER, *keys(name), str(os.getpid()))
    await r.rpush(P + ":ran", f"{name}:{n}:{os.getpid()}")
    await asyncio.sleep(0.02)  # the work: long enough for runs of two processes to overlap
    await r.eval(LEAVE, *keys(name))


@app.function
async def hold(i):
    r = app.client
    await r.eval(ENTER, *keys(f"hold{i}"), str(os.getpid()))
    await r.rpush(P + ":started", f"{i}:{os.getpid()}")
    try:
        while not await r.exists(P + ":release"):
            await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        await r.rpush(P + ":cut", f"{i}:{os.getpid()}")
        await r.eval(LEAVE, *keys(f"hold{i}"))
        raise
    await r.rpush(P + ":done", f"{i}:{os.getpid()}")
    await r.eval(LEAVE, *keys(f"hold{i}"))
'''

DEADLINE = 30.0  # seconds any one condition may take; far above what it needs


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("tasks", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def env(
    tmp_path: Path, redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    (tmp_path / "tasks.py").write_text(TASKS)
    monkeypatch.setenv("AWQ_TEST_PREFIX", key_prefix)
    monkeypatch.setenv("REDIS_URL", redis_url)
    return {**os.environ, "AWQ_TEST_PREFIX": key_prefix, "REDIS_URL": redis_url}


@pytest_asyncio.fixture
async def tasks(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[ModuleType]:
    mod = _load(tmp_path / "tasks.py")
    try:
        yield mod
    finally:
        await mod.app.aclose()


class Procs:
    """The worker commands a test starts; any left running at the end are killed."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env, self.all = cwd, env, list[subprocess.Popen[str]]()

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start ``aioworkqueue worker tasks:app *args`` on the test's own kind of loop (so
        the uvloop pass of a test runs the workers with ``--loop uvloop``)."""
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        loop = "uvloop" if loop == "uvloop" else "asyncio"
        p = subprocess.Popen(
            [sys.executable, "-m", "aioworkqueue", "worker", "tasks:app", "--loop", loop, *args],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.all.append(p)
        return p

    async def stop(self, p: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Send ``sig``, wait for the exit. Returns: (exit status, stderr)."""
        p.send_signal(sig)
        _out, err = await asyncio.to_thread(p.communicate, timeout=DEADLINE)
        return p.returncode, err


@pytest.fixture
def procs(tmp_path: Path, env: dict[str, str]) -> Iterator[Procs]:
    ps = Procs(tmp_path, env)
    try:
        yield ps
    finally:
        for p in ps.all:
            if p.poll() is None:
                p.kill()
                p.communicate()


async def until(cond: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll ``cond`` until it answers truthy. Returns: its answer. Fails after DEADLINE."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not (got := await cond()):
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return got


async def listening(wq: awr.RemoteWorkqueue) -> int:
    """Returns: how many workers of ``wq`` are up: each follows its hand-back channel."""
    channel = handback_channel(wq)
    return int(dict(await wq.app.client.pubsub_numsub(channel)).get(channel.encode(), 0))


async def strings(client: Any, key: str) -> list[str]:
    return [v.decode() for v in await client.lrange(key, 0, -1)]


# -- the command line ---------------------------------------------------------------------------


def test_help_says_the_default_queues_and_that_no_process_is_restarted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["worker", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for opt in ("--queues", "--concurrency", "--processes", "--stop-timeout", "--lease", "--loop"):
        assert opt in out
    assert "every queue the app declared with app.workqueue(...)" in out
    assert "restarts none" in out and "not restarted" in out
    assert "hands them back" in out


def test_the_command_line_imports_no_redis_until_the_worker_runs() -> None:
    code = (
        "import sys, aioworkqueue, aioworkqueue._cli\n"
        "try:\n    aioworkqueue._cli.main(['worker', '--help'])\nexcept SystemExit:\n    pass\n"
        "bad = sorted(m for m in sys.modules if m == 'redis' or m.startswith(('redis.', "
        "'aioworkqueue.redis')))\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tasks", "expected MODULE:APP (e.g. service:app), got 'tasks'"),
        ("tasks:", "expected MODULE:APP"),
        ("no_such_module_x:app", "no module named 'no_such_module_x'"),
        ("tasks:nope", "module 'tasks' has no attribute 'nope'"),
        ("tasks:P", "'tasks:P' is builtins.str, not an aioworkqueue.redis.App"),
        ("tasks:app.nope", "module 'tasks' has no attribute 'app.nope'"),
    ],
)
@pytest.mark.usefixtures("env")
def test_a_bad_module_app_is_a_usage_error(
    spec: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command puts the directory first
    monkeypatch.delitem(sys.modules, "tasks", raising=False)
    try:
        assert main(["worker", spec]) == 2
    finally:
        sys.modules.pop("tasks", None)
    err = capsys.readouterr().err
    assert err.startswith("aioworkqueue worker: error: ") and message in err, err


def test_an_app_without_queues_needs_queues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bare.py").write_text("import aioworkqueue.redis as awr\napp = awr.App()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        assert main(["worker", "bare:app"]) == 2
        assert main(["worker", "bare:app", "--queues", " , "]) == 2
    finally:
        sys.modules.pop("bare", None)
    err = capsys.readouterr().err
    assert "declares no queue" in err and "--queues names no queue" in err


@pytest.mark.asyncio
async def test_one_process_runs_the_queued_items_and_stops_on_sigterm_with_status_0(
    tasks: ModuleType, procs: Procs, key_prefix: str
) -> None:
    p = procs.start("--queues", "mp", "--concurrency", "2")
    wq = tasks.mp
    accepted = await wq.queue_many([tasks.app.work(tasks.step, f"k{i}", 0) for i in range(6)])
    assert accepted == [True] * 6
    await asyncio.wait_for(wq.flush(), DEADLINE)
    rc, err = await procs.stop(p)
    assert rc == 0, err
    ran = await strings(tasks.app.client, f"{key_prefix}:ran")
    assert sorted(r.split(":")[0] for r in ran) == [f"k{i}" for i in range(6)]
    assert {r.split(":")[2] for r in ran} == {str(p.pid)}
    assert re.search(r"stopped: started 6, redelivered 0, handed back 0", err), err


# -- several processes ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_three_processes_keep_max_active_and_non_reentrancy_and_run_each_once(
    tasks: ModuleType, procs: Procs, key_prefix: str
) -> None:
    app, wq, r = tasks.app, tasks.mp, tasks.app.client
    await wq.declare()
    # concurrency 1 each: max_active=2 over three processes then needs two of them to run
    sup = procs.start("--processes", "3", "--concurrency", "1", "--queues", "mp")
    await until(lambda: _ge(listening(wq), 3), "three worker processes up")
    names = [f"n{i}" for i in range(10)]
    accepted: list[tuple[str, int]] = []
    for rnd in range(3):
        # The same keys again while earlier instances run or wait: a started one is queued
        # anew (R2) and must not run beside its previous run (R3); a pending one is refused (R1).
        got = await wq.queue_many([app.work(tasks.step, n, rnd, key=n) for n in names])
        accepted += [(n, rnd) for n, ok in zip(names, got, strict=True) if ok]
        want = 3 * (rnd + 1)
        await until(lambda w=want: _ge(r.llen(f"{key_prefix}:ran"), w), "some runs")  # type: ignore[misc]
    await asyncio.wait_for(wq.flush(), DEADLINE)

    ran = await strings(r, f"{key_prefix}:ran")
    runs = Counter((name, int(n)) for name, n, _pid in (x.split(":") for x in ran))
    assert runs == Counter(accepted)  # every accepted instance ran exactly once
    assert any(n > 0 for _name, n in accepted)  # some key was queued again after it started
    assert int(await r.get(f"{key_prefix}:max")) <= 2  # R7 over all processes together
    assert int(await r.get(f"{key_prefix}:overlap") or 0) == 0  # R3 over all processes
    pids = {pid for _n, _r, pid in (x.split(":") for x in ran)}
    assert len(pids) > 1 and str(sup.pid) not in pids
    st = await wq.stats()
    assert (st["started"], st["completed"], st["redelivered"]) == (len(accepted),) * 2 + (0,)

    # A child that dies on its own is reported, not restarted, and fails the supervisor.
    victim = int(sorted(pids)[0])
    os.kill(victim, signal.SIGKILL)

    async def reaped() -> bool:  # by the supervisor: until then the pid is a zombie, still there
        try:
            os.kill(victim, 0)
        except ProcessLookupError:
            return True
        return False

    await until(reaped, "the supervisor to notice the dead child")
    rc, err = await procs.stop(sup)
    assert rc == 1, err
    assert re.search(rf"worker process {victim} \(\d of 3\) was killed by SIGKILL on its own; "
                     r"not restarted, 2 left", err), err  # fmt: skip
    assert err.count("stopped: started") == 2


async def _ge(got: Awaitable[int], n: int) -> bool:
    return await got >= n


# -- a crash, and a stop that hands back --------------------------------------------------------


@pytest.mark.asyncio
async def test_a_worker_killed_mid_run_has_its_runs_rerun_by_another_and_counted(
    tasks: ModuleType, procs: Procs, key_prefix: str
) -> None:
    app, wq, r = tasks.app, tasks.slow, tasks.app.client
    a = procs.start("--queues", "slow", "--concurrency", "4", "--lease", "1")
    assert await wq.queue_many([app.work(tasks.hold, i) for i in range(6)]) == [True] * 6
    await until(lambda: _ge(r.llen(f"{key_prefix}:started"), 4), "four runs in the first worker")
    assert (await wq.stats())["active"] == 4  # the server says they run
    a.kill()
    a.communicate()
    cut = {x.split(":")[0] for x in await strings(r, f"{key_prefix}:started")}
    assert len(cut) == 4

    await r.set(f"{key_prefix}:release", 1)
    b = procs.start("--queues", "slow", "--concurrency", "8", "--lease", "1")
    await asyncio.wait_for(wq.flush(), DEADLINE)
    rc, err = await procs.stop(b)
    assert rc == 0, err

    done = await strings(r, f"{key_prefix}:done")
    assert sorted(int(x.split(":")[0]) for x in done) == list(range(6))  # none lost
    assert {x.split(":")[1] for x in done} == {str(b.pid)}
    started = Counter(x.split(":")[0] for x in await strings(r, f"{key_prefix}:started"))
    assert {i for i, n in started.items() if n == 2} == cut  # the cut ones ran again
    st = await wq.stats()
    assert st["redelivered"] == len(cut) == 4
    assert "redelivered 4," in err  # the worker's own report
    # (no overlap check here: the killed process never dropped its runs' flags)


@pytest.mark.asyncio
async def test_sigterm_hands_running_items_back_to_another_worker_long_before_the_lease(
    tasks: ModuleType, procs: Procs, key_prefix: str
) -> None:
    app, wq, r = tasks.app, tasks.slow, tasks.app.client
    lease = "600"  # ten minutes: only the hand-back can move these runs within the test
    a = procs.start("--queues", "slow", "--concurrency", "3", "--lease", lease,
                    "--stop-timeout", "0.3")  # fmt: skip
    assert await wq.queue_many([app.work(tasks.hold, i) for i in range(3)]) == [True] * 3
    await until(lambda: _ge(r.llen(f"{key_prefix}:started"), 3), "three runs in the first worker")
    b = procs.start("--queues", "slow", "--concurrency", "3", "--lease", lease)
    await until(lambda: _ge(listening(wq), 2), "the second worker following the hand-backs")

    rc, err = await procs.stop(a)
    assert rc == 0, err
    assert "handed back 3 (+0 unstarted), left to the lease 0" in err
    cut = await strings(r, f"{key_prefix}:cut")
    assert sorted(x.split(":")[0] for x in cut) == ["0", "1", "2"]  # A's runs were cancelled

    await until(lambda: _ge(r.llen(f"{key_prefix}:started"), 6), "the second worker's reruns")
    await r.set(f"{key_prefix}:release", 1)
    await asyncio.wait_for(wq.flush(), DEADLINE)
    rc, err_b = await procs.stop(b)
    assert rc == 0, err_b

    done = await strings(r, f"{key_prefix}:done")
    assert sorted(x.split(":")[0] for x in done) == ["0", "1", "2"]  # each once, none lost
    assert {x.split(":")[1] for x in done} == {str(b.pid)}
    assert int(await r.get(f"{key_prefix}:overlap") or 0) == 0  # never beside its cut run
    st = await wq.stats()
    assert (st["handedback"], st["redelivered"], st["completed"]) == (3, 3, 3)
    assert "redelivered 3," in err_b
