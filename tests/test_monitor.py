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
