"""The documentation keeps its promises: every ``python`` block runs, every rule it cites links to
``docs/spec.md``, and every link into a Markdown page names an anchor that exists."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aioworkqueue.testing import run_virtual

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "docs" / "spec.md"
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
SNIPPET_TIMEOUT = 60.0  # seconds; a hang guard, the snippets take well under one

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
_LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
_RULE = re.compile(r"\bR(\d+)\b")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
_HTML_ID = re.compile(r"""<a\s+(?:id|name)=["']([^"']+)["']""")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _blocks(path: Path) -> list[tuple[str, int, str]]:
    """Returns: every fenced block of ``path`` as (info string, first line number, body)."""
    text = path.read_text(encoding="utf-8")
    return [
        (m.group(1).strip(), text.count("\n", 0, m.start()) + 2, m.group(2))
        for m in _FENCE.finditer(text)
    ]


def _prose(path: Path) -> str:
    """Returns: the text of ``path`` with its fenced blocks blanked out (line numbers kept)."""
    text = path.read_text(encoding="utf-8")
    return _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def _slug(heading: str) -> str:
    """Returns: the anchor GitHub gives a heading: lower case, punctuation dropped, spaces to
    hyphens (inline code and emphasis marks go with the punctuation)."""
    text = _LINK.sub(r"\1", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Returns: the anchors a link into ``path`` may name (headings, with GitHub's -1, -2 suffix
    for repeats, and explicit ``<a id=...>``)."""
    prose = _prose(path)
    seen: dict[str, int] = {}
    out = set(_HTML_ID.findall(prose))
    for heading in _HEADING.findall(prose):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _rule_anchors() -> dict[int, str]:
    """Returns: rule number -> the anchor of its heading in docs/spec.md."""
    out = {}
    for heading in _HEADING.findall(_prose(SPEC)):
        if m := re.match(r"R(\d+)\.", heading):
            out[int(m.group(1))] = _slug(heading)
    return out


def test_the_spec_has_every_rule_and_the_status_notes() -> None:
    rules = _rule_anchors()
    assert sorted(rules) == list(range(1, 22))
    assert rules[1] == "r1-the-pending-bit"
    text = SPEC.read_text(encoding="utf-8")

    def section(part: str) -> str:
        rest = text[text.index(part) :]
        return rest[: rest.find("\n#", 1) if "\n#" in rest[1:] else None]

    # Built: none may say it is not (the doc must not lie either way); nothing is open today.
    assert text.count("**Status:**") == 1 and "today there is none" in text
    assert "raise `WorkqueueError`" not in section("### Interrupt context")
    assert "reported exactly once" in section("### Interrupt context")
    for part in (
        "### R20.",
        "### R21.",
        "### Binding a queue to a loop",
        "Redis Streams",
        "### Interrupt context",
    ):
        assert "**Status:**" not in section(part), part


def test_no_doc_cites_the_spec_file_outside_the_repository() -> None:
    for path in [*PAGES, *sorted((ROOT / "src").rglob("*.py"))]:
        text = path.read_text(encoding="utf-8")
        assert re.search(r"\bSPEC\b", text) is None, _rel(path)


def rule_mentions_without_a_link(path: Path) -> list[str]:
    """Returns: "file:line: Rn" for every rule number in the prose of ``path`` that is not (in)
    the text of a link to its own anchor in docs/spec.md."""
    rules = _rule_anchors()
    problems = []
    for lineno, raw in enumerate(_prose(path).splitlines(), 1):
        line = re.sub(r"`[^`]*`", "", raw)  # inline code is code, not a citation
        where = f"{_rel(path)}:{lineno}"
        for m in _LINK.finditer(line):
            text, target = m.group(1), m.group(2)
            file, _, anchor = target.partition("#")
            cited = [int(n) for n in _RULE.findall(text)]
            if cited and (len(cited) != 1 or (path.parent / file).resolve() != SPEC):
                problems.append(f"{where}: link {m.group(0)} must cite one rule")
            elif cited and anchor != rules.get(cited[0]):
                problems.append(f"{where}: {m.group(0)} is not R{cited[0]}'s anchor")
        rest = _LINK.sub("", line)
        problems += [f"{where}: R{n}" for n in _RULE.findall(rest)]
    return problems


@pytest.mark.parametrize("path", [p for p in PAGES if p != SPEC], ids=_rel)
def test_every_rule_cited_links_to_its_anchor(path: Path) -> None:
    assert rule_mentions_without_a_link(path) == []


def broken_links(path: Path) -> list[str]:
    """Returns: every relative link of ``path`` whose file, or anchor in a Markdown file, is
    missing."""
    problems = []
    for m in _LINK.finditer(_prose(path)):
        target = m.group(2)
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:: not ours to check
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            problems.append(f"{_rel(path)}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{_rel(path)}: {target}: no such anchor in {_rel(dest)}")
    return problems


@pytest.mark.parametrize("path", PAGES, ids=_rel)
def test_every_link_target_exists(path: Path) -> None:
    assert broken_links(path) == []


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    page = ROOT / "docs" / "_probe_of_test_docs.md"
    page.write_text(
        "As [R1](spec.md#r1-the-pending-bit) says, and R2 too; see\n"
        "[R3](spec.md#r4-exactly-once), [here](spec.md#no-such-anchor) and `R5` in code.\n"
        "```python\nR6 = 1\n```\n",
        encoding="utf-8",
    )
    try:
        assert rule_mentions_without_a_link(page) == [
            "docs/_probe_of_test_docs.md:1: R2",
            "docs/_probe_of_test_docs.md:2: [R3](spec.md#r4-exactly-once) is not R3's anchor",
        ]
        assert broken_links(page) == [
            "docs/_probe_of_test_docs.md: spec.md#no-such-anchor: no such anchor in docs/spec.md"
        ]
    finally:
        page.unlink()


# -- every python block runs ---------------------------------------------------------------------

SNIPPETS = [
    pytest.param(body, id=f"{_rel(path)}:{line}")
    for path in PAGES
    for info, line, body in _blocks(path)
    if info == "python"
]


def run_snippet(body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run one block as a script of its own, or, when it defines pytest tests, under pytest.

    Returns: the finished process (its output captured).
    """
    is_test = re.search(r"^(async )?def test_", body, re.M) is not None
    script = tmp_path / ("test_snippet.py" if is_test else "snippet.py")
    script.write_text(body, encoding="utf-8")
    if is_test:
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"]
        argv += ["-o", "asyncio_default_fixture_loop_scope=function", str(script)]
    else:
        argv = [sys.executable, str(script)]
    return subprocess.run(
        argv,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SNIPPET_TIMEOUT,
        check=False,
    )


def lint_snippet(body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run pyflakes' checks (through ruff) on one block: a name used only inside a function that
    the block never calls is undefined all the same. Returns: the finished process."""
    script = tmp_path / "lint_snippet.py"
    script.write_text(body, encoding="utf-8")
    argv = [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F", str(script)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("body", SNIPPETS)
def test_python_block_runs(body: str, tmp_path: Path) -> None:
    lint = lint_snippet(body, tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    proc = run_snippet(body, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_a_broken_block_fails(tmp_path: Path) -> None:
    good = SNIPPETS[0].values[0]
    assert isinstance(good, str)
    assert run_snippet(good, tmp_path).returncode == 0
    broken = good.replace("aw.queue_work(wq, item)", "aw.queue_work(wq, undefined_item)", 1)
    assert broken != good
    assert run_snippet(broken, tmp_path).returncode != 0
    # A name that only an uncalled function uses: running passes, the lint does not.
    unused = good + "\n\nasync def later() -> None:\n    aw.queue_work(wq, other)\n"
    assert run_snippet(unused, tmp_path).returncode == 0
    assert lint_snippet(unused, tmp_path).returncode != 0


def test_the_lifespan_pattern_runs_on_a_two_cpu_runtime(tmp_path: Path) -> None:
    # A loop-bound resource made per pool loop: the guide shows it on a two-CPU runtime.
    page = ROOT / "docs" / "guide" / "integrations.md"
    bodies = [b for info, _, b in _blocks(page) if info == "python" and "per_loop" in b]
    assert len(bodies) == 1
    assert "Runtime(cpus=2)" in bodies[0] or '"cpus": 2' in bodies[0]
    proc = run_snippet(bodies[0], tmp_path)  # it asserts one semaphore per pool loop itself
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_quick_start_says_what_leaving_does_to_an_armed_item(
    capsys: pytest.CaptureFixture[str],
) -> None:
    body = next(b for info, _, b in _blocks(ROOT / "README.md") if info == "python")
    lines = body.splitlines()
    at = next(i for i, line in enumerate(lines) if "queue_delayed_work(" in line)
    comment = " ".join(line.partition("#")[2] for line in lines[at : at + 4])
    assert "`async with`" in comment
    assert "at once" in comment
    # And it is true: on a virtual clock, leaving the block runs the retry long before the
    # 1 s it was re-armed for (destroy fires armed items, R14), so little virtual time passes.
    ns: dict[str, Any] = {"__name__": "quick_start"}
    exec(compile(body.replace("asyncio.run(main())", ""), "README.md", "exec"), ns)

    async def timed() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await ns["main"]()
        return loop.time() - start

    assert run_virtual(timed) < 0.5
    assert "retry" in capsys.readouterr().out.split()


def test_max_active_is_documented_per_pool_with_the_way_to_a_global_bound() -> None:
    """Issue item: with Runtime(cpus=2), max_active=4 ran 8 at once. Wherever max_active is
    documented for users, it says that it counts per pool and names WQ.UNBOUND for one bound."""
    import aioworkqueue as aw

    flat = " ".join
    places = {
        "README.md": flat((ROOT / "README.md").read_text(encoding="utf-8").split()),
        "docs/spec.md": flat(SPEC.read_text(encoding="utf-8").split()),
        "alloc_workqueue.__doc__": flat((aw.alloc_workqueue.__doc__ or "").split()),
        "docs/guide/integrations.md": flat(
            (ROOT / "docs" / "guide" / "integrations.md").read_text(encoding="utf-8").split()
        ),
    }
    for where, text in places.items():
        assert re.search(r"max_active`?`? (bounds|counts|is)[^.]*per pool", text), where
        if where != "docs/guide/integrations.md":  # the guide counts its own example's queues
            assert "max_active=4" in text and "8" in text, where  # the example that surprised
        assert "WQ.UNBOUND" in text, where
