"""The work-item state machine (``aioworkqueue._state``): named transitions, each checking its
legal source state in debug mode, and nothing else writes a work item's state."""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import aioworkqueue as aw
from aioworkqueue import _state
from aioworkqueue._lock import LOCK
from aioworkqueue._state import (
    ARMED,
    DEFERRED,
    DISABLE_UNIT,
    INACTIVE,
    PENDING,
    QUEUED,
    REDO,
    RUNNING,
    WAITED,
    IllegalTransition,
)

SRC = Path(aw.__file__).resolve().parent


async def _noop(work: aw.Work) -> None:
    pass


def test_the_suite_runs_in_debug_mode() -> None:
    assert _state.DEBUG  # tests/conftest.py
    assert os.environ["AIOWORKQUEUE_DEBUG"] == "1"  # and for the processes tests start


@pytest.mark.parametrize(
    ("env", "flags", "on"),
    [
        ("", [], False),
        ("0", [], False),
        ("1", [], True),
        ("yes", [], True),
        ("", ["-X", "dev"], True),
    ],
)
def test_debug_mode_comes_from_the_variable_or_python_dev_mode(
    env: str, flags: list[str], on: bool
) -> None:
    code = "import aioworkqueue._state as s; print(s.DEBUG)"
    proc = subprocess.run(
        [sys.executable, *flags, "-c", code],
        env={**os.environ, "AIOWORKQUEUE_DEBUG": env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert proc.stdout.strip() == str(on)


# (transition, a legal source, the state it leads to, an illegal source)
CASES = [
    ("mark_pending", 0, PENDING, PENDING),
    ("mark_pending", RUNNING | WAITED, RUNNING | WAITED | PENDING, QUEUED),
    ("mark_pending", RUNNING, RUNNING | PENDING, DISABLE_UNIT),
    ("activate", PENDING, PENDING | QUEUED, 0),
    ("activate", PENDING | INACTIVE, PENDING | QUEUED, PENDING | ARMED),
    ("park_inactive", PENDING, PENDING | INACTIVE, PENDING | QUEUED),
    ("arm", PENDING, PENDING | ARMED, 0),
    ("disarm", PENDING | ARMED, PENDING, PENDING | QUEUED),
    ("take", PENDING | QUEUED, RUNNING, PENDING | QUEUED | RUNNING),
    ("take", PENDING | QUEUED | REDO | WAITED, RUNNING | WAITED, PENDING | INACTIVE),
    ("defer", PENDING | QUEUED | RUNNING, PENDING | DEFERRED | RUNNING, PENDING | QUEUED),
    ("end_run", RUNNING, 0, 0),
    ("untake", RUNNING | WAITED, WAITED, PENDING | RUNNING),
    ("end_run", RUNNING | PENDING | QUEUED, PENDING | QUEUED, PENDING | QUEUED),
    ("run_deferred", PENDING | DEFERRED | RUNNING | REDO, RUNNING, PENDING | DEFERRED),
    ("dequeue", PENDING | INACTIVE, PENDING, PENDING | ARMED),
    ("dequeue", PENDING | DEFERRED | RUNNING, PENDING | RUNNING, PENDING),
    ("unqueue", PENDING | QUEUED, 0, PENDING),
    ("unqueue", PENDING | DEFERRED, 0, PENDING | ARMED),
    ("clear_pending", PENDING, 0, PENDING | QUEUED),
    ("take_back", PENDING | QUEUED, 0, RUNNING),
    ("enable", 2 * DISABLE_UNIT, DISABLE_UNIT, 0),
    ("mark_waited", RUNNING, RUNNING | WAITED, 0),
    ("mark_waited", PENDING | QUEUED, PENDING | QUEUED | WAITED, DISABLE_UNIT),
    ("mark_redo", PENDING | QUEUED, PENDING | QUEUED | REDO, RUNNING),
    ("clear_redo", PENDING | REDO, PENDING, PENDING),
]
# Legal from any state: (transition, a source, the state it leads to)
ANY = [
    ("strand", PENDING | QUEUED | RUNNING | WAITED, WAITED),
    ("strand", 0, 0),
    ("disable", PENDING | QUEUED, PENDING | QUEUED | DISABLE_UNIT),
    ("clear_waited", RUNNING | WAITED, RUNNING),
    ("clear_waited", 0, 0),
]


def _transitions() -> set[str]:
    return {
        name
        for name, fn in vars(_state).items()
        if inspect.isfunction(fn)
        and fn.__module__ == _state.__name__
        and not name.startswith(("_", "check_", "shadow_"))
        and name not in ("set_debug", "state_name")
    }


def test_every_transition_is_tested_and_documented() -> None:
    assert {c[0] for c in CASES} | {c[0] for c in ANY} == _transitions()
    for name in _transitions():
        doc = getattr(_state, name).__doc__
        assert "Legal from:" in doc and re.search(r"\bR\d+\b", doc), name  # its rule
        assert name in _state.__doc__, name  # the module's table


@pytest.fixture
def no_shadow() -> Iterator[None]:
    """For a test that sets ``_state`` by hand: no table op made that state, so the pending
    table's shadow (step 1 of Core v2) would rightly disagree with it."""
    _state.SHADOW = False
    try:
        yield
    finally:
        _state.SHADOW = True


@pytest.mark.usefixtures("no_shadow")
@pytest.mark.parametrize(("name", "src", "dst", "bad"), CASES)
def test_a_transition_leads_from_its_legal_source_and_refuses_any_other(
    name: str, src: int, dst: int, bad: int
) -> None:
    transition = getattr(_state, name)
    work = aw.Work(lambda w: None)
    work._state = src
    transition(work)
    assert work._state == dst
    work._state = bad
    with pytest.raises(IllegalTransition) as err:
        transition(work)
    assert work._state == bad  # refused before it changed anything
    msg = str(err.value)
    assert f"illegal state transition {name} of <Work fn=" in msg
    assert _state.state_name(bad) in msg
    assert isinstance(err.value, AssertionError)


@pytest.mark.usefixtures("no_shadow")
@pytest.mark.parametrize(("name", "src", "dst"), ANY)
def test_a_transition_legal_from_any_state(name: str, src: int, dst: int) -> None:
    work = aw.Work(lambda w: None)
    work._state = src
    getattr(_state, name)(work)
    assert work._state == dst


def test_the_pending_table_shadows_the_pending_bit_through_a_life() -> None:
    """In debug mode every transition that sets or clears PENDING does the same to the pending
    table (docs/design.md §9, step 1): a queue, a run, a cancel, a disable and an enable."""
    work = aw.Work(lambda w: None)
    life = [
        ("mark_pending", True),
        ("activate", True),
        ("take", False),
        ("end_run", False),
        ("mark_pending", True),
        ("activate", True),
        ("dequeue", True),
        ("clear_pending", False),
        ("disable", False),
        ("enable", False),
        ("mark_pending", True),
        ("take_back", False),
    ]
    for name, pending in life:
        getattr(_state, name)(work)
        assert bool(work._state & PENDING) is pending is _state.TABLE.is_pending(work), name
    assert aw.Work(lambda w: None)._tok is None  # a fresh item has no chain yet


def test_the_pending_table_says_when_it_disagrees() -> None:
    """A state the table did not see made (set by hand here; a transition that forgot the
    table, in the core) is reported at the next transition that sets or clears PENDING."""
    work = aw.Work(lambda w: None)
    work._state = PENDING | QUEUED
    with pytest.raises(IllegalTransition, match=r"pending table disagrees with take .* no pending"):
        _state.take(work)
    assert work._state == PENDING | QUEUED  # refused before it changed anything
    work._state = 0
    _state.mark_pending(work)
    work._state = 0  # the core forgot the instance, the table did not
    with pytest.raises(IllegalTransition, match=r"disagrees with mark_pending .* pending or dis"):
        _state.mark_pending(work)
    work._state = 2 * DISABLE_UNIT  # disabled twice by hand: the table never was
    with pytest.raises(IllegalTransition, match=r"disagrees with enable .* answers None"):
        _state.enable(work)
    other = aw.Work(lambda w: None)
    other._state = PENDING  # pending by hand, sitting nowhere: the table never had it
    with pytest.raises(IllegalTransition, match=r"clear_pending .* no pending instance to end"):
        _state.clear_pending(other)


def test_the_message_names_the_transition_the_work_and_its_state() -> None:
    def job(w: aw.Work) -> None:
        pass

    work = aw.Work(job)
    with pytest.raises(IllegalTransition, match=r"take of <Work fn=.*job> in state IDLE \(0x0\)"):
        _state.take(work)
    assert _state.state_name(PENDING | QUEUED | 3 * DISABLE_UNIT) == (
        "PENDING|QUEUED|disabled x3 (0x3003)"
    )


def test_debug_mode_off_checks_nothing() -> None:
    work = aw.Work(lambda w: None)
    _state.set_debug(False)
    try:
        _state.take(work)  # idle: illegal, unchecked
    finally:
        _state.set_debug(True)
    assert work._state == RUNNING


def _frames(err: pytest.ExceptionInfo[BaseException]) -> list[str]:
    return [entry.name for entry in err.traceback]


async def _bound(name: str) -> aw.Workqueue:
    """A workqueue already bound to this loop's pool, so queue_work takes its inline path."""
    wq = aw.alloc_workqueue(name)
    aw.queue_work(wq, aw.Work(_noop))
    await aw.flush_workqueue(wq)
    return wq


@pytest.mark.asyncio
async def test_queue_work_checks_its_inline_transition() -> None:
    wq = await _bound("state-inline-queue")
    work = aw.Work(_noop)
    work._state = QUEUED  # on a worklist, yet not pending: no queue_* may start from here
    with pytest.raises(IllegalTransition, match="mark_pending") as err:
        aw.queue_work(wq, work)
    assert _frames(err)[-2:] == ["queue_work", "check_mark_pending"]  # inline, no call
    assert not LOCK._is_owned()  # type: ignore[attr-defined]
    work._state = 0
    assert aw.queue_work(wq, work)
    await aw.flush_workqueue(wq)
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_queue_delayed_work_and_cancel_delayed_work_check_their_inline_transitions() -> None:
    wq = await _bound("state-inline-delayed")
    dwork = aw.DelayedWork(_noop)
    dwork._state = INACTIVE
    with pytest.raises(IllegalTransition, match="mark_pending") as err:
        aw.queue_delayed_work(wq, dwork, 60.0)
    assert _frames(err)[-2:] == ["queue_delayed_work", "check_mark_pending"]
    dwork._state = 0
    assert aw.queue_delayed_work(wq, dwork, 60.0)
    dwork._state |= DEFERRED  # armed and deferred at once: no cancel may start from here
    with pytest.raises(IllegalTransition, match="disarm") as err:
        aw.cancel_delayed_work(dwork)
    assert _frames(err)[-2:] == ["cancel_delayed_work", "check_disarm"]
    dwork._state &= ~DEFERRED
    assert aw.cancel_delayed_work(dwork)
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_the_worker_checks_its_inline_take() -> None:
    wq = await _bound("state-inline-take")
    pwq = wq._pwq
    assert pwq is not None
    pool = pwq.pool
    (worker,) = pool.workers
    bad = aw.Work(_noop)
    with LOCK:
        bad._state = QUEUED  # on the worklist, yet not pending
        bad._pwq = pwq
        pool.worklist.append(bad)
        pool.wake()
    assert worker.task is not None
    with pytest.raises(IllegalTransition, match="take"):
        async with asyncio.timeout(10):
            await worker.task
    assert bad._state == QUEUED and not pool.worklist
    assert aw.queue_work(wq, aw.Work(_noop))  # another worker serves the queue
    async with asyncio.timeout(10):
        await aw.flush_workqueue(wq)
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_the_worker_checks_its_inline_end_of_a_run() -> None:
    wq = await _bound("state-inline-end")
    tasks: list[asyncio.Task[object]] = []

    def job(w: aw.Work) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        w._state &= ~RUNNING  # the run "ended" behind the worker's back

    work = aw.Work(job)
    assert aw.queue_work(wq, work)
    with pytest.raises(IllegalTransition, match="end_run"):
        async with asyncio.timeout(10):
            while not tasks:
                await asyncio.sleep(0)
            await tasks[0]
    pwq = wq._pwq
    assert pwq is not None
    with LOCK:  # account the run the worker could not
        pwq.finish(work._epoch, 0)
    async with asyncio.timeout(10):
        await aw.flush_workqueue(wq)
    await aw.destroy_workqueue(wq)


# The functions that write ``_state`` with the masks of ``_state.py`` instead of calling a
# transition (the hot paths); each must run the transition's check under a debug test.
INLINE = {
    ("_queueing.py", "queue_work"),
    ("_queueing.py", "queue_delayed_work"),
    ("_cancel.py", "cancel_delayed_work"),
    ("_pool.py", "_worker_main"),
}


def _writes_state(node: ast.AST) -> bool:
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AugAssign):
        targets = [node.target]
    return any(
        isinstance(t, ast.Attribute)
        and t.attr == "_state"
        and not (isinstance(t.value, ast.Name) and t.value.id == "self")  # construction
        for t in targets
    )


def _debug_checks(fn: ast.AST) -> int:
    checks = {name for name in vars(_state) if name.startswith("check_")}
    n = 0
    for node in ast.walk(fn):
        if not isinstance(node, ast.If):
            continue
        test = ast.unparse(node.test)
        if test not in ("debug", "_state.DEBUG"):
            continue
        for sub in node.body:
            for call in ast.walk(sub):
                if isinstance(call, ast.Call):
                    name = ast.unparse(call.func).removeprefix("_state.")
                    n += name in checks
    return n


def test_only_the_state_layer_writes_a_work_items_state() -> None:
    """Every write of ``work._state`` is a transition of ``_state.py``, or one of the inlined
    hot paths, which checks as many transitions as it writes (in debug mode)."""
    found: dict[tuple[str, str], int] = {}
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "_state.py":
            continue
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                n = sum(_writes_state(node) for node in ast.walk(fn))
                if n:
                    found[(path.name, fn.name)] = n
    assert set(found) == INLINE, "write work._state through aioworkqueue._state"
    for path_name, fn_name in INLINE:
        tree = ast.parse((SRC / path_name).read_text())
        (fn,) = [
            f
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and f.name == fn_name
        ]
        # queue_work writes QUEUE_ACTIVE or QUEUE_INACTIVE after one check of mark_pending.
        expected = found[(path_name, fn_name)] - (fn_name == "queue_work")
        assert _debug_checks(fn) >= expected, (path_name, fn_name)
