"""The live monitor (SPEC §4): Runtime(monitor=ADDRESS) and `aioworkqueue monitor`."""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import io
import itertools
import json
import os
import pathlib
import select
import socket
import stat
import sys
import threading
from typing import Any

import pytest

import aioworkqueue as aw
from aioworkqueue import _timing
from aioworkqueue._cli import main
from aioworkqueue._monitor import MISSING_RICH, MonitorServer, _table, run_monitor
from tests.conftest import ExpectedErrors


async def _read(address: str, **kw: object) -> tuple[int, str]:
    out = io.StringIO()
    status = await asyncio.to_thread(
        run_monitor,
        address,
        interval=kw.get("interval"),  # type: ignore[arg-type]
        json_lines=bool(kw.get("json_lines")),
        regex=kw.get("regex"),  # type: ignore[arg-type]
        count=kw.get("count"),  # type: ignore[arg-type]
        out=out,
        rich=bool(kw.get("rich")),
        console=kw.get("console"),
    )
    return status, out.getvalue()


@pytest.mark.asyncio
async def test_monitor_over_a_unix_socket_prints_the_table(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "wq.sock")
    async with aw.Runtime(cpus=2, loop_factory="asyncio", monitor=path) as rt:
        assert rt.monitor_address == path
        mon = aw.alloc_workqueue("mon-jobs")
        other = aw.alloc_workqueue("other")
        for _ in range(7):
            aw.queue_work(mon, aw.Work(lambda w: None))
        aw.queue_work(other, aw.Work(lambda w: None))
        await aw.flush_workqueue(mon)
        await aw.flush_workqueue(other)
        status, text = await _read(path, regex="^mon")
        assert status == 0
        head, row, pools = text.strip().splitlines()
        assert head.split() == [
            "total", "infl", "pend", "run", "armed", "CPUtime", "CPUhog", "p50ms", "p99ms",
            "failed", "cancel", "maxact", "mayday", "rescued",
        ]  # fmt: skip
        assert row.split()[:3] == ["mon-jobs", "7", "0"]
        assert row.split()[6] == row.split()[8] == row.split()[9] == "-"  # timing is off
        assert "other" not in text
        assert pools.startswith("pools (running/workers): cpu0:") and "cpu1:" in pools
        status, text = await _read(path, json_lines=True, interval=0.01, count=2)
        docs = [json.loads(line) for line in text.splitlines()]
        assert len(docs) == 2 and {q["name"] for q in docs[0]["workqueues"]} >= {"mon-jobs"}
    assert not await asyncio.to_thread(pathlib.Path(path).exists)  # removed at shutdown
    status, _ = await _read(path)
    assert status == 1  # the process (here: the runtime) is gone


@pytest.mark.asyncio
async def test_monitor_over_loopback_tcp_picks_a_free_port() -> None:
    async with aw.Runtime(cpus=1, loop_factory="asyncio", monitor="127.0.0.1:0") as rt:
        addr = rt.monitor_address
        assert addr is not None and addr.startswith("127.0.0.1:") and not addr.endswith(":0")
        status, text = await _read(addr, json_lines=True)
        assert status == 0 and json.loads(text)["pools"][0]["cpu"] == 0


@pytest.mark.parametrize("bad", ["", "10.0.0.1:80", "example.com:80", "127.0.0.1:http"])
def test_bad_monitor_addresses_are_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="monitor address"):
        aw.Runtime(cpus=1, monitor=bad)
    assert run_monitor(bad, interval=None, json_lines=False, regex=None) == 2
    assert "aioworkqueue monitor:" in capsys.readouterr().err


def test_monitor_of_a_vanished_process_says_so(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = run_monitor(str(tmp_path / "none.sock"), interval=None, json_lines=False, regex=None)
    assert status == 1
    err = capsys.readouterr().err
    assert "cannot read" in err and "Runtime(monitor=" in err and "Traceback" not in err


SERVICE = """
import asyncio, sys
import aioworkqueue as aw

async def main():
    async with aw.Runtime(cpus=2, loop_factory="asyncio", monitor=sys.argv[1]):
        wq = aw.alloc_workqueue("live-jobs")
        for _ in range(11):
            aw.queue_work(wq, aw.Work(lambda w: None))
        await aw.flush_workqueue(wq)
        aw.enable_timing()
        timed = aw.alloc_workqueue("live-timed")
        for _ in range(5):
            aw.queue_work(timed, aw.Work(lambda w: None))
        await aw.flush_workqueue(timed)
        print("ready", flush=True)
        await asyncio.sleep(30)  # until the test kills it

asyncio.run(main())
"""


def test_monitor_command_against_a_live_process(tmp_path: pathlib.Path) -> None:
    import subprocess
    import sys

    sock = str(tmp_path / "live.sock")
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    monitor = [sys.executable, "-m", "aioworkqueue._cli", "monitor", sock]
    with subprocess.Popen(
        [sys.executable, str(script), sock], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            out = subprocess.run(
                [*monitor, "live", "-i", "0.05", "-n", "2"],
                check=False,
                capture_output=True,
                text=True,
                timeout=30,
            )
            fancy = None
            if importlib.util.find_spec("rich") is not None:
                fancy = subprocess.run(
                    [*monitor, "-i", "0.05", "-n", "2", "--rich", "timed"],
                    check=False,
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
        finally:
            proc.kill()
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("live-jobs")]
    assert len(rows) == 2 and rows[0].split()[1] == "11"
    assert rows[0].split()[6] == "-"  # CPUtime: timing was off while these ran
    timed = [line.split() for line in out.stdout.splitlines() if line.startswith("live-timed")]
    assert len(timed) == 2 and timed[0][1] == "5"
    cpu, p50, p99 = float(timed[0][6]), float(timed[0][8]), float(timed[0][9])
    assert cpu >= 0.0 and 0.0 <= p50 <= p99
    assert "total" in out.stdout and "CPUhog" in out.stdout and "p99ms" in out.stdout
    if fancy is not None:  # not a terminal: each table printed in turn
        assert fancy.returncode == 0, fancy.stderr
        assert fancy.stdout.count("aioworkqueue monitor") == 2
        assert "live-timed" in fancy.stdout and "live-jobs" not in fancy.stdout
    gone = subprocess.run(monitor, check=False, capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1 and "cannot read" in gone.stderr and "Traceback" not in gone.stderr


class ThreadCPU(threading.local):
    """A CPU clock per thread, moved by the items only."""

    t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.asyncio
async def test_monitor_shows_cpu_time_and_latency_with_timing_on(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu = ThreadCPU()
    wall = [0.0]
    monkeypatch.setattr(_timing, "cpu_clock", cpu)
    monkeypatch.setattr(_timing, "clock", lambda: wall[0])

    def burn(w: aw.Work) -> None:
        cpu.t += 1.25

    path = str(tmp_path / "timed.sock")
    async with aw.Runtime(cpus=2, loop_factory="asyncio", monitor=path):
        untimed = aw.alloc_workqueue("untimed")
        aw.queue_work(untimed, aw.Work(burn))
        await aw.flush_workqueue(untimed)
        aw.enable_timing()
        try:
            wq = aw.alloc_workqueue("timed", aw.WQ.FREEZABLE)
            await aw.freeze_workqueues()  # so that nothing starts before the clock moves
            wall[0] = 10.0
            for cpu_nr in (0, 1):
                aw.queue_work_on(cpu_nr, wq, aw.Work(burn))
            wall[0] = 10.003  # each waits 3 ms: in the [2048, 4096) us bucket
            aw.thaw_workqueues()
            await aw.flush_workqueue(wq)
        finally:
            aw.disable_timing()
        status, text = await _read(path, regex="timed$")
        assert status == 0
        rows = {line.split()[0]: line.split() for line in text.splitlines()[1:-1]}
        assert rows["timed"][6:10] == ["2.500000", "0", "3.000", "3.000"]  # capped by the max
        assert rows["untimed"][6:10] == ["-", "0", "-", "-"]
        status, text = await _read(path, json_lines=True)
        (doc,) = [q for q in json.loads(text)["workqueues"] if q["name"] == "timed"]
        assert (doc["started"], doc["cpu_time"]) == (2, 2.5)
        assert doc["latency_p50"] == doc["latency_max"] == pytest.approx(0.003)
        if importlib.util.find_spec("rich") is None:
            return
        from rich.console import Console

        status, text = await _read(path, regex="timed$", rich=True)  # not a terminal
        assert status == 0
        assert f"aioworkqueue monitor {path}" in text
        for word in ("CPUtime", "p50ms", "p99ms", "timed", "untimed", "2.500000", "3.000"):
            assert word in text, word
        assert "pools (running/workers): cpu0:" in text
        screen = io.StringIO()
        console = Console(file=screen, force_terminal=True, width=200, color_system=None)
        status, _ = await _read(path, rich=True, console=console, interval=0.01, count=2)
        assert status == 0
        drawn = screen.getvalue()
        assert "\x1b[" in drawn and "2.500000" in drawn  # redrawn in place, on a terminal


def test_plain_table_formats_every_column() -> None:
    doc = {
        "pools": [{"cpu": 0, "running": 1, "workers": 2}],
        "unbound_waiting": 0,
        "workqueues": [
            {
                "name": "q",
                "queued": 3,
                "in_flight": 1,
                "pending": 0,
                "running": 1,
                "armed": 0,
                "cpu_time": 12345.5,
                "cpu_hogs": 0,
                "latency_p50": 0.000512,
                "latency_p99": 2.097152,
                "failed": 0,
                "cancelled": 0,
                "max_active_hits": 0,
                "mayday": 0,
                "rescued": 0,
            },
            {"name": "old", "queued": 1, "in_flight": 0},  # an older process: no such keys
        ],
    }
    text = _table(doc, None)  # type: ignore[arg-type]
    rows = {line.split()[0]: line.split() for line in text.splitlines()[1:-1]}
    assert rows["q"][6:10] == ["12346", "0", "0.512", "2097"]
    assert rows["old"][1:3] == ["1", "0"] and set(rows["old"][3:]) == {"-"}


def test_rich_missing_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich.console", None)  # importing it now fails
    status = run_monitor(
        str(tmp_path / "x.sock"), interval=None, json_lines=False, regex=None, rich=True
    )
    assert status == 2
    err = capsys.readouterr().err
    assert MISSING_RICH in err and "pip install 'aioworkqueue[monitor]'" in err


# -- issue 13 item 8: a client that never reads --------------------------------------------------


async def _bound(*names: str) -> list[aw.Workqueue]:
    """Workqueues that have run an item, so that they belong to the running runtime.

    The runtime holds its queues weakly: keep what this returns while the monitor should see it.
    """
    wqs = [aw.alloc_workqueue(name) for name in names]
    for wq in wqs:
        aw.queue_work(wq, aw.Work(lambda w: None))
    await asyncio.gather(*(aw.flush_workqueue(wq) for wq in wqs))
    return wqs


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def _read_all(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    chunks = []
    while chunk := s.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.asyncio
async def test_a_client_that_never_reads_stalls_neither_other_clients_nor_shutdown(
    tmp_path: pathlib.Path,
) -> None:
    path = str(tmp_path / "big.sock")
    async with aw.Runtime(cpus=1, loop_factory="asyncio", monitor=path) as rt:
        # ~500 kB of JSON: more than a Unix socket's buffer holds.
        wqs = await _bound(
            *(f"queue-{i:04d}-with-a-name-long-enough-to-matter" for i in range(1500))
        )
        # Accepted first (the backlog is FIFO): the server is writing to it when the next comes.
        stuck = await asyncio.to_thread(_connect, path)
        try:
            status, text = await _read(path, json_lines=True)
            assert status == 0, "a second client got no answer while the first did not read"
            assert len(json.loads(text)["workqueues"]) >= 1500
            shutdown = asyncio.ensure_future(rt.shutdown(timeout=1.0))
            done, _ = await asyncio.wait({shutdown}, timeout=1.0 + 1.5)
            assert shutdown in done, "Runtime.shutdown(timeout=1) waited on the stuck client"
        finally:
            stuck.close()  # without the fix, this is what lets the server go
        await shutdown
        del wqs


def _big_server(path: str, **kw: Any) -> MonitorServer:
    doc = {"pid": 1, "time": 0.0, "pools": [], "unbound_waiting": 0, "workqueues": []}
    doc["padding"] = "x" * (8 << 20)  # far beyond any socket buffer
    return MonitorServer(path, lambda: doc, **kw)


def test_a_slow_reader_is_dropped_after_the_send_timeout(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "slow.sock")
    srv = _big_server(path, send_timeout=0.2)
    srv.start()
    try:
        stuck = _connect(path)
        with stuck:
            poller = select.poll()
            poller.register(stuck, select.POLLRDHUP)
            # The server's end closes while most of the document is still unsent: dropped.
            assert poller.poll(10_000), "the server kept a client that does not read"
            assert len(_read_all(stuck, 5.0)) < 8 << 20
        full = _connect(path)
        with full:
            assert len(_read_all(full, 10.0)) > 8 << 20  # a reading client gets it all
    finally:
        srv.stop()


def test_clients_beyond_max_clients_are_closed_at_once(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "few.sock")
    srv = _big_server(path, max_clients=1)
    srv.start()
    try:
        with _connect(path) as first, _connect(path) as second:
            assert _read_all(second, 5.0) == b""  # closed without a document
            assert first.recv(1) == b"{"  # the first one is still being served
    finally:
        srv.stop()


def test_a_snapshot_that_raises_is_reported_and_the_server_goes_on(
    tmp_path: pathlib.Path, expect_errors: ExpectedErrors
) -> None:
    path = str(tmp_path / "flaky.sock")
    calls = [0]

    def snapshot() -> dict[str, Any]:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("broken stats")
        return {"ok": calls[0]}

    srv = MonitorServer(path, snapshot)
    srv.start()
    try:
        with _connect(path) as s:
            assert _read_all(s, 5.0) == b""  # closed without a document
        with _connect(path) as s:
            assert json.loads(_read_all(s, 5.0)) == {"ok": 2}
    finally:
        srv.stop()
    (msg,) = expect_errors.messages
    assert "snapshot failed" in msg and path in msg


# -- issue 13 item 9: what a Unix monitor address may remove --------------------------------------


def test_a_regular_file_at_the_address_is_refused_and_kept(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "precious"
    path.write_text("keep me")
    with pytest.raises(FileExistsError, match="not a socket") as info:
        MonitorServer(str(path), dict)
    assert info.value.filename == str(path) and str(path) in str(info.value)
    assert path.read_text() == "keep me"


def test_a_live_server_at_the_address_is_refused_and_keeps_serving(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "live.sock")
    first = MonitorServer(path, lambda: {"who": "first"})
    first.start()
    try:
        with pytest.raises(OSError, match="another server is listening") as info:
            MonitorServer(path, lambda: {"who": "second"})
        assert info.value.errno == errno.EADDRINUSE and info.value.filename == path
        with _connect(path) as s:
            assert json.loads(_read_all(s, 5.0)) == {"who": "first"}
    finally:
        first.stop()


@pytest.mark.asyncio
async def test_a_runtime_refused_its_monitor_address_starts_nothing(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "taken"
    path.write_text("")
    rt = aw.Runtime(cpus=1, loop_factory="asyncio", monitor=str(path))
    try:
        with pytest.raises(FileExistsError):
            await rt.start()
    finally:
        await rt.shutdown()  # nothing to do, unless start() went ahead regardless
    assert not rt.running and rt.monitor_address is None
    assert not [t for t in threading.enumerate() if t.name.startswith("aiowq")]
    async with aw.Runtime(cpus=1, loop_factory="asyncio"):  # none is left active
        pass


@pytest.mark.asyncio
async def test_a_runtime_whose_pools_fail_to_start_leaves_no_monitor_socket(
    tmp_path: pathlib.Path,
) -> None:
    def no_loop() -> asyncio.AbstractEventLoop:
        raise RuntimeError("no loop today")

    path = tmp_path / "early.sock"
    rt = aw.Runtime(cpus=1, loop_factory=no_loop, monitor=str(path))
    with pytest.raises(RuntimeError, match="no loop today"):
        await rt.start()  # the monitor was bound before the pool threads: it must be undone
    assert not await asyncio.to_thread(path.exists)


def test_a_stale_socket_is_replaced(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # a process that died: the file stays, nothing listens
    srv = MonitorServer(path, lambda: {"fresh": True})
    srv.start()
    try:
        with _connect(path) as s:
            assert json.loads(_read_all(s, 5.0)) == {"fresh": True}
    finally:
        srv.stop()
    assert not os.path.exists(path)


def test_stop_removes_only_its_own_socket_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "mine.sock"
    srv = MonitorServer(str(path), dict)
    srv.start()
    path.unlink()
    path.write_text("someone else's now")
    srv.stop()
    assert path.read_text() == "someone else's now"


@pytest.mark.parametrize("umask", [0o000, 0o277])
def test_the_socket_is_owner_only_whatever_the_umask(tmp_path: pathlib.Path, umask: int) -> None:
    path = str(tmp_path / "private.sock")
    old = os.umask(umask)
    try:
        srv = MonitorServer(path, lambda: {"ok": 1})
    finally:
        os.umask(old)
    srv.start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with _connect(path) as s:  # the owner can still connect
            assert json.loads(_read_all(s, 5.0)) == {"ok": 1}
    finally:
        srv.stop()


def test_the_listen_backlog_holds_a_burst_of_clients(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "burst.sock")
    srv = MonitorServer(path, dict)  # not started: nothing accepts, so the backlog fills
    clients: list[socket.socket] = []
    try:
        for _ in range(40):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            clients.append(s)
            s.setblocking(False)
            s.connect(path)  # BlockingIOError once the backlog is full
    finally:
        for s in clients:
            s.close()
        srv.stop()


# -- issue 13 item 10: REGEX with -j ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_monitor_json_lines_honour_the_regex(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "regex.sock")
    async with aw.Runtime(cpus=1, loop_factory="asyncio", monitor=path):
        wqs = await _bound("keep-a", "keep-b", "drop-c")
        status = await asyncio.to_thread(main, ["monitor", path, "-j", "^keep"])
        del wqs
    assert status == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert sorted(q["name"] for q in json.loads(line)["workqueues"]) == ["keep-a", "keep-b"]


# -- issue 13 item 10: running(monitor=...) in the embedded mode ----------------------------------


_RUN = itertools.count()  # a fresh name for each run of a test


@pytest.mark.asyncio
async def test_embedded_running_serves_the_host_pool_to_the_monitor_command(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "embedded.sock")
    # Names of this run only: entering running() also binds queues of earlier runs whose loops
    # have closed (docs/spec.md, "Binding"), and an earlier "emb-jobs" would make a second row.
    tag = f"emb{next(_RUN)}"
    ctx = aw.running(monitor=path)
    async with ctx:
        assert ctx.monitor_address == path
        emb = aw.alloc_workqueue(f"{tag}-jobs")
        unbound = aw.alloc_workqueue(f"{tag}-unbound", aw.WQ.UNBOUND)
        other = aw.alloc_workqueue(f"other-{tag}")
        for _ in range(4):
            aw.queue_work(emb, aw.Work(lambda w: None))
        aw.queue_work(unbound, aw.Work(lambda w: None))
        aw.queue_work(other, aw.Work(lambda w: None))
        await asyncio.gather(*(aw.flush_workqueue(q) for q in (emb, unbound, other)))
        status = await asyncio.to_thread(main, ["monitor", path, f"^{tag}"])
        assert status == 0
        rows = {
            ln.split()[0]: ln.split() for ln in capsys.readouterr().out.strip().splitlines()[1:-1]
        }
        assert set(rows) == {f"{tag}-jobs", f"{tag}-unbound"}
        assert rows[f"{tag}-jobs"][1:3] == ["4", "0"] and rows[f"{tag}-unbound"][1] == "1"
        status = await asyncio.to_thread(main, ["monitor", path, "-j"])
        assert status == 0
        doc = json.loads(capsys.readouterr().out)
        assert [p["cpu"] for p in doc["pools"]] == [0]  # the embedded mode's only pool
        names = {q["name"] for q in doc["workqueues"]}
        assert {f"{tag}-jobs", f"{tag}-unbound", f"other-{tag}"} <= names
    assert ctx.monitor_address is None
    assert not await asyncio.to_thread(os.path.exists, path)  # removed on the way out


@pytest.mark.asyncio
async def test_embedded_running_refused_its_monitor_address_starts_nothing(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "taken"
    path.write_text("keep")
    watchdogs = len([t for t in threading.enumerate() if t.name == "aiowq-watchdog"])
    ctx = aw.running(monitor=str(path))
    with pytest.raises(FileExistsError, match="not a socket"):
        await ctx.__aenter__()
    assert len([t for t in threading.enumerate() if t.name == "aiowq-watchdog"]) == watchdogs
    assert path.read_text() == "keep"
    path.unlink()
    async with ctx:  # it was left idle: it may be entered once the address is free
        assert ctx.monitor_address == str(path)


def test_running_with_a_runtime_takes_no_monitor_of_its_own() -> None:
    with pytest.raises(ValueError, match="runtime=\\{'monitor'"):
        aw.running(runtime=True, monitor="127.0.0.1:0")
    with pytest.raises(ValueError, match="monitor address"):
        aw.running(monitor="10.0.0.1:80")
