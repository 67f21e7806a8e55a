"""Thread stress of the per-CPU runtime with flush checking (R3, R4, R12, R13).

Producer threads make seeded random calls (``queue_work``, ``queue_work_on``,
``queue_delayed_work[_on]`` with delay 0, ``mod_delayed_work`` with delay 0, ``cancel_work``) on
shared items over five workqueues of a ``Runtime(cpus=2)`` (per-CPU ``max_active`` 4, ``WQ.HIGHPRI``
``max_active`` 2, ``WQ.UNBOUND`` ``max_active`` 3, ordered, ``WQ.CPU_INTENSIVE``); the runs
sometimes queue their own item again (R2). Meanwhile the host loop, and a coroutine on a pool loop,
keep calling ``flush_workqueue`` and ``flush_work``.

Every successful queue of an item gets the next *sequence number* of that item, recorded under a
per-item lock held across the call (so the record and the library's state change together). Each
instance ends exactly once, and the end gets a stamp from one global counter:

* a run pops the oldest unstarted sequence number when it starts (the pending instance is always
  the newest: R1) and stamps the end just before it returns;
* a ``cancel_work`` that returned True ends the newest unstarted one; the stamp is taken *before*
  the call;
* a ``mod_delayed_work(..., 0)`` that returned True moves the pending instance behind later ones
  (SPEC §5, R9): the old number ends (stamped before the call) and a new one starts.

A flush records the sequence numbers issued before it was called and a stamp when it returned.
Checked afterwards, exactly: every instance a flush had to wait for (R13: queued on its workqueue
before the call; R12: queued before the call at all) ended with a smaller stamp than the flush's
return — a stamp taken before the instance's end could only be larger if the flush returned
first. Plus R4 (every number ends exactly once; runs == successful queues - cancels, with a
re-queue counted once) and R3 (no run overlaps its item).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import random
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest

import aioworkqueue as aw

from ._support import LOOP_KINDS, guarded, runtime_threads, wait_until

#: One global order of events across threads (``next`` on ``itertools.count`` is atomic).
CLOCK = itertools.count(1)

WQ_NAMES = ("percpu", "highpri", "unbound", "ordered", "cpu")

#: Operations per producer thread, and a seed offset (``tools/soak.py`` raises both).
OPS = int(os.environ.get("AIOWQ_STRESS_OPS", "12000"))
SEED_OFFSET = int(os.environ.get("AIOWQ_STRESS_SEED", "0"))


class Item(aw.DelayedWork):
    """A shared item that records which queued instance each run serves."""

    __slots__ = (
        "active",
        "ends",
        "idx",
        "mu",
        "overlaps",
        "qseq",
        "requeues",
        "rng",
        "runs",
        "seq_wq",
        "stress",
        "unstarted",
        "violations",
    )

    def __init__(self, idx: int, func: Any, stress: Stress) -> None:
        super().__init__(func)
        self.idx = idx
        self.stress = stress
        self.mu = threading.Lock()
        self.qseq = 0  # last sequence number issued
        self.unstarted: deque[int] = deque()  # queued, neither started nor cancelled (<= 2)
        self.seq_wq: dict[int, int] = {}  # sequence number -> workqueue index
        self.ends: dict[int, tuple[str, int]] = {}  # sequence number -> (how, stamp)
        self.active = 0
        self.overlaps = 0
        self.runs = 0
        self.requeues = 0
        self.violations: list[str] = []
        self.rng = random.Random(idx)

    # Context: under self.mu.
    def issued(self, wqi: int) -> None:
        self.qseq += 1
        self.unstarted.append(self.qseq)
        self.seq_wq[self.qseq] = wqi

    def end(self, seq: int, how: str, stamp: int) -> None:
        if seq in self.ends:
            self.violations.append(f"instance {seq} ended twice: {self.ends[seq]} and {how}")
        self.ends[seq] = (how, stamp)


def _begin(w: Item) -> int:
    with w.mu:
        w.active += 1
        w.runs += 1
        if w.active > 1:
            w.overlaps += 1
        if not w.unstarted:
            w.violations.append(f"run {w.runs} started with no queued instance (R4)")
            return -1
        seq = w.unstarted.popleft()
        if w.runs % 5 == 0:  # queue itself again while running (R2), on any queue
            wqi = w.rng.randrange(len(WQ_NAMES))
            if aw.queue_work(w.stress.wqs[wqi], w):
                w.issued(wqi)
                w.requeues += 1
        return seq


def _finish(w: Item, seq: int) -> None:
    with w.mu:
        if seq >= 0:
            w.end(seq, "run", next(CLOCK))
        w.active -= 1


def sync_body(w: Item) -> None:
    _finish(w, _begin(w))


async def async_body(w: Item) -> None:
    seq = _begin(w)
    try:
        if w.runs % 3 == 0:
            await asyncio.sleep(0)
    finally:
        _finish(w, seq)


@dataclass
class FlushRecord:
    kind: str  # "wq" or "work"
    target: int  # workqueue index or item index
    snapshot: list[int]  # qseq of every item just before the call
    stamp: int = 0  # when it returned
    where: str = ""


@dataclass
class Stress:
    seed: int
    wqs: list[aw.Workqueue] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    flushes: list[FlushRecord] = field(default_factory=list)
    queues: int = 0
    cancels: int = 0
    moves: int = 0
    failures: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


def producer(t: int, s: Stress, ops: int) -> None:
    rng = random.Random(s.seed * 1000 + t)
    items, wqs = s.items, s.wqs
    queues = cancels = moves = 0
    try:
        for k in range(ops):
            w = items[rng.randrange(len(items))]
            wqi = rng.randrange(len(wqs))
            wq = wqs[wqi]
            r = rng.random()
            with w.mu:
                if r < 0.5:
                    if r < 0.2:
                        ok = aw.queue_work(wq, w)
                    elif r < 0.3:
                        ok = aw.queue_work_on(rng.randrange(2), wq, w)
                    elif r < 0.4:
                        ok = aw.queue_delayed_work(wq, w, 0)
                    else:
                        ok = aw.queue_delayed_work_on(rng.randrange(2), wq, w, 0)
                    if ok:
                        w.issued(wqi)
                        queues += 1
                elif r < 0.6:
                    stamp = next(CLOCK)
                    if aw.mod_delayed_work(wq, w, 0):  # pending: moved to the tail of wq
                        w.end(w.unstarted.pop(), "moved", stamp)
                        moves += 1
                    else:  # idle (or running only): queued now
                        queues += 1
                    w.issued(wqi)
                else:
                    stamp = next(CLOCK)
                    if aw.cancel_work(w):
                        w.end(w.unstarted.pop(), "cancel", stamp)
                        cancels += 1
            if not k & 63:
                time.sleep(0)  # let other threads in
    except BaseException as exc:
        s.failures.append(f"producer {t}: {exc!r}")
    with items[0].mu:
        s.queues += queues
        s.cancels += cancels
        s.moves += moves


async def flusher(s: Stress, rng: random.Random, where: str) -> None:
    """Flush, record, repeat until the producers are done."""
    while not s.done.is_set():
        if rng.random() < 0.7:
            wqi = rng.randrange(len(s.wqs))
            rec = FlushRecord("wq", wqi, [it.qseq for it in s.items], where=where)
            await guarded(aw.flush_workqueue(s.wqs[wqi]), f"flush_workqueue from {where}")
        else:
            i = rng.randrange(len(s.items))
            rec = FlushRecord("work", i, [it.qseq for it in s.items], where=where)
            await guarded(aw.flush_work(s.items[i]), f"flush_work from {where}")
        rec.stamp = next(CLOCK)
        s.flushes.append(rec)
        await asyncio.sleep(0)


def check_flushes(s: Stress) -> tuple[list[str], int]:
    """Every instance a flush waited for ended before it returned.

    Returns the problems and the number of (flush, instance) pairs checked.
    """
    # Per (item, workqueue), and per item over all queues (-1): sorted seqs and the running
    # maximum of their end stamps, so that "every seq <= k ended before T" is one bisect.
    never = ("", sys.maxsize)
    per: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    for it in s.items:
        rows: dict[int, list[tuple[int, int]]] = {}
        for seq, wqi in it.seq_wq.items():
            stamp = it.ends.get(seq, never)[1]
            rows.setdefault(wqi, []).append((seq, stamp))
            rows.setdefault(-1, []).append((seq, stamp))
        for wqi, row in rows.items():
            row.sort()
            seqs = [q for q, _ in row]
            prefix = list(itertools.accumulate((st for _, st in row), max))
            per[(it.idx, wqi)] = (seqs, prefix)
    problems: list[str] = []
    checks = 0
    for rec in s.flushes:
        if rec.kind == "wq":
            targets = [(i, rec.target) for i in range(len(s.items))]
        else:
            targets = [(rec.target, -1)]
        for i, wqi in targets:
            seqs, prefix = per.get((i, wqi), ([], []))
            n = bisect.bisect_right(seqs, rec.snapshot[i])
            checks += n
            if not n or prefix[n - 1] < rec.stamp:
                continue
            it = s.items[i]
            late = [q for q in seqs[:n] if it.ends.get(q, never)[1] > rec.stamp]
            what = WQ_NAMES[rec.target] if rec.kind == "wq" else f"item {rec.target}"
            problems.append(
                f"flush of {what} from {rec.where} returned (stamp {rec.stamp}) before item {i} "
                f"instance(s) {late[:5]} queued before the call ended: "
                f"{[it.ends.get(q) for q in late[:5]]} "
                f"({'R13' if rec.kind == 'wq' else 'R12, SPEC 5'})"
            )
    return problems, checks


async def run_stress(
    seed: int, loop_kind: str, threads: int, ops: int, nitems: int
) -> tuple[Stress, list[aw.Unfinished]]:
    errors: list[str] = []

    def on_error(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
        errors.append(f"{work!r} on {wq.name}: {exc!r}")

    s = Stress(seed)
    rt = aw.Runtime(cpus=2, loop_factory=loop_kind, exception_handler=on_error)
    async with rt:
        s.wqs = [
            aw.alloc_workqueue("percpu", 0, 4),
            aw.alloc_workqueue("highpri", aw.WQ.HIGHPRI, 2),
            aw.alloc_workqueue("unbound", aw.WQ.UNBOUND, 3),
            aw.alloc_ordered_workqueue("ordered"),
            aw.alloc_workqueue("cpu", aw.WQ.CPU_INTENSIVE, 2),
        ]
        s.items = [Item(i, sync_body if i % 2 else async_body, s) for i in range(nitems)]
        rng = random.Random(seed)
        ths = [
            threading.Thread(target=producer, args=(t, s, ops), name=f"producer/{t}")
            for t in range(threads)
        ]
        for th in ths:
            th.start()
        host = asyncio.ensure_future(flusher(s, random.Random(rng.random()), "host"))
        pool_flusher = asyncio.run_coroutine_threadsafe(
            flusher(s, random.Random(rng.random()), "pool 1 loop"), rt.pools[1].loop
        )
        try:
            await wait_until(lambda: not any(th.is_alive() for th in ths), "the producers", 60)
        finally:
            s.done.set()
            await guarded(host, "the host flusher")
            await guarded(asyncio.wrap_future(pool_flusher), "the pool-loop flusher")
        for th in ths:
            th.join()

        async def all_idle() -> None:
            while True:
                for wq in s.wqs:
                    await aw.flush_workqueue(wq)
                if not any(aw.work_busy(it) for it in s.items):
                    return
                await asyncio.sleep(0)

        await guarded(all_idle(), "every item going idle")
    s.failures += errors
    return s, rt.unfinished


CASES = [(kind, switch) for kind in LOOP_KINDS for switch in (None, 1e-5)]


@pytest.mark.parametrize(
    ("loop_kind", "seed", "switch"),
    [(kind, seed, switch) for seed, (kind, switch) in enumerate(CASES, 1)],
)
def test_threads_and_flushes_nothing_lost_nothing_twice_no_early_flush(
    loop_kind: str, seed: int, switch: float | None
) -> None:
    threads, ops, nitems = 6, OPS, 48
    seed += SEED_OFFSET
    old = sys.getswitchinterval()
    if switch is not None:
        sys.setswitchinterval(switch)
    try:
        s, unfinished = asyncio.run(run_stress(seed, loop_kind, threads, ops, nitems))
    finally:
        sys.setswitchinterval(old)
    assert not runtime_threads()
    assert not s.failures, s.failures[:10]
    assert unfinished == []
    problems: list[str] = []
    runs = 0
    for it in s.items:
        problems += [f"item {it.idx}: {v}" for v in it.violations]
        if it.overlaps:
            problems.append(f"item {it.idx} overlapped itself {it.overlaps} times (R3)")
        if it.unstarted:
            problems.append(f"item {it.idx}: instances {list(it.unstarted)} never ran (R4)")
        ran = sum(1 for how, _ in it.ends.values() if how == "run")
        runs += ran
        if ran != it.runs:
            problems.append(f"item {it.idx}: {it.runs} runs but {ran} instances ran (R4)")
        missing = set(it.seq_wq) - set(it.ends)
        if missing:
            problems.append(f"item {it.idx}: instances {sorted(missing)[:5]} never ended (R4)")
    requeues = sum(it.requeues for it in s.items)
    # R4 in aggregate: runs == successful queues (incl. requeues from runs) - cancels.
    assert runs == s.queues + requeues - s.cancels, (runs, s.queues, requeues, s.cancels)
    flush_problems, checks = check_flushes(s)
    problems += flush_problems
    assert not problems, "\n".join(problems[:20])
    # Everything was exercised.
    assert len(s.flushes) > 20, len(s.flushes)
    assert checks > 1000, checks
    assert s.cancels > 100 and s.moves > 100 and requeues > 100
    assert {r.where for r in s.flushes} == {"host", "pool 1 loop"}
    print(
        f"stress {loop_kind} seed={seed}: {threads}x{ops} ops, runs={runs} queues={s.queues} "
        f"requeues={requeues} cancels={s.cancels} moves={s.moves} flushes={len(s.flushes)} "
        f"(flush, instance) checks={checks}"
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["cancel_work", "mod_delayed_work"])
async def test_flush_work_waits_for_the_running_instance_when_the_pending_one_is_cancelled(
    how: str,
) -> None:
    """Regression (found by the stress above, fixed in 945ea13; was
    /tmp/repro_flush_work_returns_while_running.py): flush_work on a running and pending work
    returned as soon as the pending instance was cancelled or re-armed, while the instance
    running at the call still ran (R12, SPEC 5). Deterministic, embedded mode."""
    gate = asyncio.Event()

    async def fn(w: aw.Work) -> None:
        await gate.wait()

    async with aw.alloc_workqueue("flush-work-bug") as wq:
        w = aw.DelayedWork(fn)
        assert aw.queue_work(wq, w)
        await wait_until(lambda: aw.work_busy(w) == aw.WorkBusy.RUNNING, "the first run")
        assert aw.queue_work(wq, w)  # R2: pending again while running
        flush = asyncio.ensure_future(aw.flush_work(w))
        try:
            for _ in range(5):
                await asyncio.sleep(0)
            assert not flush.done()
            if how == "cancel_work":
                assert aw.cancel_work(w)
            else:
                assert aw.mod_delayed_work(wq, w, 3600)
            for _ in range(5):
                await asyncio.sleep(0)
            # The instance that was running at the call is still running: not flushed yet.
            assert aw.work_busy(w) & aw.WorkBusy.RUNNING
            assert not flush.done(), "flush_work returned while the work was still running"
        finally:
            gate.set()
            assert await guarded(flush, "flush_work")
            aw.cancel_work(w)
