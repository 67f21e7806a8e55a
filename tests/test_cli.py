"""The ``aioworkqueue`` command line: its entry points, ``--version`` and ``--help`` text."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

import pytest

from aioworkqueue._cli import main

# reST/Sphinx markup that reads as noise in a terminal: ``literal``, :func:`x`, :class:`x`, ...
_MARKUP = re.compile(r"``|:(?:func|class|meth|mod|attr|data|exc|obj|ref):`")


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def _subcommands(top_help: str) -> list[str]:
    match = re.search(r"\{([a-z,-]+)\}", top_help)
    assert match is not None, top_help
    return match.group(1).split(",")


def test_version_via_python_dash_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aioworkqueue", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"aioworkqueue {metadata.version('aioworkqueue')}\n"


def test_python_dash_m_runs_a_subcommand() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aioworkqueue", "demo", "--seconds", "5", "--datagrams", "50"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("aioworkqueue demo: UDP service on 127.0.0.1:")


def test_no_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "usage: aioworkqueue" in capsys.readouterr().err


def test_help_of_every_command_has_no_rest_markup(capsys: pytest.CaptureFixture[str]) -> None:
    top = _help(capsys)
    commands = _subcommands(top)
    assert {"demo", "bench", "monitor"} <= set(commands)
    assert "--version" in top
    texts = {"aioworkqueue": top} | {c: _help(capsys, c) for c in commands}
    for name, text in texts.items():
        assert text.startswith("usage: "), name
        found = _MARKUP.findall(text)
        assert not found, f"{name} --help shows markup {found}:\n{text}"
