"""The live monitor (SPEC §4): Runtime(monitor=ADDRESS) and `aioworkqueue monitor`."""

from __future__ import annotations

import asyncio
import io
import json
import pathlib

import pytest

import aioworkqueue as aw
from aioworkqueue._monitor import run_monitor


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
            "total", "infl", "pend", "run", "armed", "CPUhog", "failed", "cancel", "maxact",
            "mayday", "rescued",
        ]  # fmt: skip
        assert row.split()[:3] == ["mon-jobs", "7", "0"]
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
        finally:
            proc.kill()
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("live-jobs")]
    assert len(rows) == 2 and rows[0].split()[1] == "11"
    assert "total" in out.stdout and "CPUhog" in out.stdout
    gone = subprocess.run(monitor, check=False, capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1 and "cannot read" in gone.stderr and "Traceback" not in gone.stderr
