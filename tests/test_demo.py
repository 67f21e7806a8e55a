"""The ``aioworkqueue demo`` service: it runs, its accounting is exact, and it stops cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from aioworkqueue._tools.demo import run_demo


def _summary(out: str) -> dict[str, str]:
    lines = [line for line in out.splitlines() if line.startswith("sent=")]
    assert len(lines) == 1, out
    return dict(field.split("=", 1) for field in lines[0].split())


def _check_summary(fields: dict[str, str]) -> None:
    count = {k: int(v) for k, v in fields.items() if v.isdigit()}
    assert count["lost"] == 0
    assert fields["log_in_order"] == "True"
    assert count["received"] == count["queued"] + count["deduplicated"]
    assert count["queued"] + count["retried"] == count["ran"] + count["cancelled"]
    assert count["received"] <= count["sent"]


@pytest.mark.parametrize("seed", [1, 7])
def test_demo_accounts_for_every_item(seed: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(seconds=5, datagrams=600, seed=seed) == 0
    out, err = capsys.readouterr()
    assert out.startswith("aioworkqueue demo: UDP service on 127.0.0.1:")
    assert err == ""
    fields = _summary(out)
    _check_summary(fields)
    for name in ("received", "ran", "retried", "deduplicated"):
        assert int(fields[name]) > 0, name
    assert fields["stop"] == "complete"
    assert fields["sent"] == fields["received"] == "600"


def test_demo_summary_has_a_legend_for_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(seconds=5, datagrams=200, seed=3) == 0
    out = capsys.readouterr().out
    fields = _summary(out)
    lines = out.splitlines()
    legend = lines[lines.index("where:") + 1 :]
    rows: dict[str, str] = {}
    name = ""
    for line in legend:
        assert line.startswith("  "), line
        head, _, meaning = line.strip().partition("  ")
        if line[2] != " ":  # a new entry; an indented line continues the one before
            name = head
            rows[name] = meaning.strip()
        else:
            rows[name] += " " + line.strip()
    assert list(rows) == list(fields)
    # The two a reader asks about: why ran > queued, and what lost=0 asserts.
    assert "retried" in rows["ran"]
    assert "queued + retried - ran - cancelled" in rows["lost"]
    assert "R4" in rows["lost"]


def test_demo_console_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aioworkqueue._cli", "demo", "--seconds", "5", "--datagrams", "500"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    fields = _summary(proc.stdout)
    _check_summary(fields)
    assert int(fields["received"]) > 0
    assert int(fields["ran"]) > 0


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery is POSIX here")
def test_demo_stops_cleanly_on_ctrl_c() -> None:
    # The child restores the default SIGINT handler itself: a shell running the suite in the
    # background may hand it down ignored, and then asyncio.run would not turn it into a cancel.
    script = (
        "import signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from aioworkqueue._cli import main\n"
        "sys.exit(main(['demo', '--seconds', '50', '--datagrams', '1000000']))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        header = proc.stdout.readline()
        assert header.startswith("aioworkqueue demo:"), header
        time.sleep(0.3)  # let it serve for a while: the interrupt must land mid-load
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    fields = _summary(out)
    _check_summary(fields)
    assert fields["stop"] == "interrupt"
    assert int(fields["sent"]) < 1_000_000
