"""Shutdown under load, for real (R4 at the end of a process's life; SPEC §5 "Runtime").

A separate process (``_ledger_service.py``) runs a ``Runtime`` with a steady stream of work and
a SQLite ledger: every job that a ``queue_*`` call accepted, every start, every finished run, and
what ``rt.shutdown(timeout=...)`` reported unfinished. The test sends SIGTERM at a seeded random
moment, waits for the process to exit, and reads the ledger. Per accepted job, exactly one of:

* it ran to the end once (``start`` and ``done`` once each) and was not reported;
* it never started and was reported ``queued`` or ``armed``;
* it started, did not finish, and was reported ``running`` (its run was cut at the deadline).

Never silently lost, never run twice, nothing runs that was not accepted, and the shutdown
keeps its deadline (plus a margin for a loaded machine).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import closing
from pathlib import Path

import pytest

import aioworkqueue

from ._support import GUARD, LOOP_KINDS

SERVICE = Path(__file__).with_name("_ledger_service.py")
DEADLINE = 0.3
#: ``tools/soak.py`` passes other seeds (comma-separated) in the environment.
SEEDS = [int(x) for x in os.environ.get("AIOWQ_LEDGER_SEEDS", "1,2,3,4,5").split(",")]


def run_trial(tmp_path: Path, seed: int, loop_kind: str) -> tuple[dict[str, int], list[str]]:
    db = tmp_path / f"ledger-{seed}-{loop_kind}.sqlite"
    proc = subprocess.Popen(
        [sys.executable, str(SERVICE), str(db), str(seed), loop_kind, str(DEADLINE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", (line, proc.stderr.read() if proc.stderr else "")
        time.sleep(random.Random(seed).uniform(0.2, 0.8))  # the random moment of the SIGTERM
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    with closing(sqlite3.connect(db)) as conn:  # a bare `with` commits but does not close
        rows = conn.execute("SELECT id, kind, info FROM events").fetchall()
    return check_ledger(rows)


def check_ledger(rows: list[tuple[int, str, str]]) -> tuple[dict[str, int], list[str]]:
    kinds: dict[int, Counter[str]] = defaultdict(Counter)
    states: dict[int, list[str]] = defaultdict(list)
    control = [(k, info) for i, k, info in rows if i == 0]
    for jid, kind, info in rows:
        if jid:
            kinds[jid][kind] += 1
            if kind == "unfinished":
                states[jid].append(info.split()[0])
    problems: list[str] = []
    figures: Counter[str] = Counter()
    for jid, c in kinds.items():
        if c["refused"]:
            figures["refused"] += 1
            if c["accepted"] or c["start"] or c["done"] or c["unfinished"]:
                problems.append(f"job {jid} was refused but {dict(c)}")
            continue
        if not c["accepted"]:
            problems.append(f"job {jid} was never accepted but {dict(c)}")
            continue
        figures["accepted"] += 1
        if c["accepted"] > 1 or c["start"] > 1 or c["done"] > 1 or c["unfinished"] > 1:
            problems.append(f"job {jid} counted twice: {dict(c)} {states[jid]}")
        elif c["done"]:
            figures["ran"] += 1
            if c["unfinished"] or not c["start"]:
                problems.append(f"job {jid} ran and was reported {states[jid]}: {dict(c)}")
        elif not c["unfinished"]:
            problems.append(f"job {jid} accepted, never finished and never reported: {dict(c)}")
        else:
            (state,) = states[jid]
            figures[state] += 1
            if (state == "running") != bool(c["start"]):
                problems.append(f"job {jid} reported {state!r} with {dict(c)}")
    kinds_of_control = [k for k, _ in control]
    if kinds_of_control != ["sigterm", "exit"]:
        problems.append(f"control records {kinds_of_control}")
    else:
        figures["shutdown_ms"] = round(float(control[1][1]) * 1000)
    return dict(figures), problems


@pytest.mark.parametrize("seed", SEEDS)
def test_sigterm_at_a_random_moment_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path, seed: int
) -> None:
    loop_kind = LOOP_KINDS[seed % len(LOOP_KINDS)]
    figures, problems = run_trial(tmp_path, seed, loop_kind)
    assert not problems, "\n".join(problems[:20])
    # The trial did what it is for: a busy runtime, stopped with work in every state.
    assert figures["accepted"] > 200, figures
    assert figures["ran"] > 100, figures
    assert figures.get("armed", 0) + figures.get("queued", 0) > 0, figures
    assert figures.get("running", 0) > 0, figures
    assert figures["shutdown_ms"] < DEADLINE * 1000 + 2000, figures
    print(f"ledger seed={seed} {loop_kind}: {figures}")


class _Job(aioworkqueue.Work):
    __slots__ = ("jid",)

    def __init__(self, jid: int, ran: list[int]) -> None:
        super().__init__(lambda w: ran.append(w.jid))
        self.jid = jid


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_producer_thread_outliving_running_and_its_loop_loses_nothing(loop_kind: str) -> None:
    """R20 with a ledger: every queue_work either returned True and its item ran or was
    reported, or raised; none returned True once running() had exited; zero silent."""
    accepted: list[int] = []
    raised: list[tuple[int, type[BaseException]]] = []
    ran: list[int] = []
    reported: list[int] = []
    true_after_exit: list[int] = []
    wqs: list[aioworkqueue.Workqueue] = []
    started = threading.Event()
    exited = threading.Event()  # running() has returned
    loop_gone = threading.Event()  # asyncio.run has returned: the loop is closed
    seen_exit = threading.Event()  # the producer made calls after running() exited
    stop = threading.Event()

    def producer() -> None:
        jid = after_exit = after_end = 0
        while not stop.is_set():
            jid += 1
            was_exited = exited.is_set()  # read before the call: its outcome must follow
            try:
                ok = aioworkqueue.queue_work(wqs[0], _Job(jid, ran))
            except aioworkqueue.WorkqueueError as exc:
                raised.append((jid, type(exc)))
            else:
                assert ok  # a fresh item is never pending
                accepted.append(jid)
                if was_exited:
                    true_after_exit.append(jid)
            if jid == 200:
                started.set()
            if was_exited:
                after_exit += 1
                if after_exit == 50:
                    seen_exit.set()
            if loop_gone.is_set():
                after_end += 1
                if after_end == 50:
                    return

    th = threading.Thread(target=producer, name="ledger-producer")

    async def main() -> None:
        wqs.append(aioworkqueue.alloc_workqueue("ledger-thread", max_active=4))
        accepted.append(0)  # one use from the loop: bound here even without binding at allocation
        assert aioworkqueue.queue_work(wqs[0], _Job(0, ran))
        r = aioworkqueue.running(timeout=5)
        async with r:
            th.start()
            await asyncio.to_thread(started.wait, GUARD)  # a guard only: set after 200 calls
        reported.extend(w.jid for w, _wq, _state in r.unfinished)  # type: ignore[attr-defined]
        exited.set()
        await asyncio.to_thread(seen_exit.wait, GUARD)

    try:
        if loop_kind == "uvloop":
            import uvloop

            uvloop.run(main())
        else:
            asyncio.run(main())
        loop_gone.set()
        th.join(GUARD)
    finally:
        stop.set()
        th.join()
    assert started.is_set() and seen_exit.is_set()
    cancelled_at_loop_end = wqs[0].stats().cancelled - len(reported)
    assert len(set(ran)) == len(ran) and len(set(reported)) == len(reported)
    assert not set(ran) & set(reported)
    assert set(ran) | set(reported) <= set(accepted)
    silent = len(accepted) - len(ran) - len(reported) - cancelled_at_loop_end
    assert silent == 0, (len(accepted), len(ran), len(reported), cancelled_at_loop_end)
    assert true_after_exit == [], f"{len(true_after_exit)} accepted after running() exited"
    assert len(accepted) >= 200 and raised  # the trial did overlap the end
    refusals = (aioworkqueue.WorkqueueLoopError, aioworkqueue.WorkqueueDrainingError)
    assert all(issubclass(cls, refusals) for _jid, cls in raised), {c for _j, c in raised}
