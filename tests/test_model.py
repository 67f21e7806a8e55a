"""A model-based test: random operations against the library, checked against SPEC §3.

A hypothesis ``RuleBasedStateMachine`` drives three ``DelayedWork`` items over two workqueues (one
with ``max_active=2``, one ordered) in embedded mode, on one :class:`~tests.vclock.VirtualClockLoop`
per example, so timers are deterministic. Every run of an item blocks on an ``asyncio.Event`` the
test owns until the "release" rule sets it, which makes RUNNING, RUNNING+PENDING (R2) and
``cancel_work_sync`` waiting for a running instance reachable.

Everything that happens is appended to one log, in the order it happens on the loop: the result
of each operation, the start and end of each run (with the virtual time), the call and the return
of each background ``flush_*`` / ``cancel_work_sync`` task. A small pure-Python model of SPEC §3
(:class:`Model`) replays the log and checks each entry:

- return values of ``queue_*``, ``mod_delayed_work``, ``cancel_*``, ``flush_*`` and
  ``cancel_work_sync`` (R1, R9, R10, R11, R12);
- a start is legal only for an item whose instance is queued and holds a ``max_active`` slot (R7),
  that is not running (R3), and whose timer deadline has passed (R8);
- ``flush_work`` / ``flush_workqueue`` / ``cancel_work_sync`` return only once the instances they
  wait for have finished (R11, R12, R13), and do return once those have finished;
- while a ``cancel_work_sync`` runs, ``queue_*`` of its work returns False; when it returns the work
  is neither pending nor running (R11).

Timers are not logged; the model fires an armed item at its deadline, before any log entry made at
or after that virtual time (the loop only moves time when nothing else is ready; deadlines that
would tie are nudged apart, since equal timers fire in heap order). After every step
``work_pending`` / ``work_busy`` and the workqueue counters must match the model, and the "run the
loop" rule checks progress: nothing startable is left unstarted. The work function itself checks
that it is not pending when it starts (R2) and not already running (R3). At teardown everything is
let run and flushed, and every item has run exactly as often as it was queued minus cancelled (R4).

``EarlyTimersMachine`` runs the same on a loop whose timers fire 1 ms early, as uvloop's may (R8).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import aioworkqueue as aw
from tests.vclock import VirtualClockLoop

N_ITEMS = 3
WQ_LIMITS = {"m": 2, "o": 1}  # workqueue name in the model -> max_active ("o" is ordered)
DELAYS = (0, 1.0, 2.5)
MAX_BG = 3  # background flush / cancel_sync tasks outstanding at once
SETTLE_ROUNDS = 20
NUDGE = 0.25  # added to a delay whose deadline would tie with another armed timer

Entry = tuple[Any, ...]


class Item(aw.DelayedWork):
    __slots__ = ("idx",)

    def __init__(self, func: aw.WorkFunc, idx: int) -> None:
        super().__init__(func)
        self.idx = idx


# -- the reference model ----------------------------------------------------------------------


@dataclass
class Inst:
    """One queued instance of an item: from its insertion into a queue to its end or cancel."""

    iid: int
    wq: str
    deadline: float | None = None  # set when its timer queued it (R8)


@dataclass
class MItem:
    armed: tuple[str, float] | None = None  # (workqueue, deadline) while the timer is armed
    queued: Inst | None = None  # the pending instance, on a queue
    active: bool = False  # ... and it holds a max_active slot of that queue (R7)
    running: Inst | None = None
    released: bool = False  # the test let the current run finish
    disabled: int = 0  # cancel_work_sync calls in progress (R11)
    queues: int = 0  # successful queue_* (and mod_delayed_work of an idle item)
    cancels: int = 0  # successful cancel_* / cancel_work_sync
    starts: int = 0
    ends: int = 0

    @property
    def pending(self) -> bool:
        return self.armed is not None or self.queued is not None


@dataclass
class MWq:
    max_active: int
    inactive: list[int] = field(default_factory=list)  # items waiting for a slot, FIFO
    live: set[int] = field(default_factory=set)  # instances queued or running (flush waits)
    queued: int = 0
    cancelled: int = 0
    completed: int = 0


@dataclass
class Bg:
    desc: str
    kind: str
    item: int | None
    expect: bool | None
    waits_for: set[int]
    done: bool = False


class Model:
    """SPEC §3 for a handful of items on one pool, driven by the log of what happened."""

    def __init__(self) -> None:
        self.items = [MItem() for _ in range(N_ITEMS)]
        self.wqs = {name: MWq(limit) for name, limit in WQ_LIMITS.items()}
        self.live: set[int] = set()  # all instances in flight
        self.next_iid = 0
        self.bgs: dict[int, Bg] = {}
        self.auto_release = False

    # -- mechanics --

    def nr_active(self, wq: str) -> int:
        n = 0
        for it in self.items:
            if it.queued is not None and it.active and it.queued.wq == wq:
                n += 1
            if it.running is not None and it.running.wq == wq:
                n += 1
        return n

    def insert(self, i: int, wq: str, deadline: float | None = None) -> None:
        it = self.items[i]
        inst = Inst(self.next_iid, wq, deadline)
        self.next_iid += 1
        self.live.add(inst.iid)
        self.wqs[wq].live.add(inst.iid)
        it.active = self.nr_active(wq) < self.wqs[wq].max_active
        it.queued = inst
        if not it.active:
            self.wqs[wq].inactive.append(i)

    def release_slot(self, wq: str) -> None:
        q = self.wqs[wq]
        if q.inactive and self.nr_active(wq) < q.max_active:
            self.items[q.inactive.pop(0)].active = True

    def end_instance(self, inst: Inst) -> None:
        self.live.discard(inst.iid)
        self.wqs[inst.wq].live.discard(inst.iid)

    def steal(self, i: int) -> None:
        """Take the pending instance back (cancel, or mod_delayed_work re-arming it)."""
        it = self.items[i]
        if it.armed is not None:
            it.armed = None
            return
        inst = it.queued
        assert inst is not None
        it.queued = None
        if it.active:
            it.active = False
            self.release_slot(inst.wq)
        else:
            self.wqs[inst.wq].inactive.remove(i)
        self.end_instance(inst)

    def cancel(self, i: int) -> None:
        it = self.items[i]
        wq = it.armed[0] if it.armed is not None else it.queued.wq  # type: ignore[union-attr]
        self.wqs[wq].cancelled += 1
        it.cancels += 1
        self.steal(i)

    def fire(self, i: int, deadline: float | None) -> None:
        it = self.items[i]
        assert it.armed is not None
        wq = it.armed[0]
        it.armed = None
        self.insert(i, wq, deadline)

    def fire_until(self, t: float) -> None:
        """The timers due by virtual time ``t`` fired, in deadline order (R8)."""
        due = sorted(
            (it.armed[1], i)
            for i, it in enumerate(self.items)
            if it.armed is not None and it.armed[1] <= t
        )
        for deadline, i in due:
            self.fire(i, deadline)

    def armed_deadlines(self, but: int) -> set[float]:
        return {it.armed[1] for j, it in enumerate(self.items) if it.armed and j != but}

    # -- log entries --

    def apply(self, entry: Entry) -> None:
        kind, t = entry[0], entry[1]
        self.fire_until(t)
        if kind == "op":
            self.op(entry)
        elif kind == "start":
            self.start(t, entry[2])
        elif kind == "end":
            self.end(entry[2])
        elif kind == "auto_release":
            self.auto_release = True
            for it in self.items:
                it.released = it.running is not None
        elif kind == "bg_call":
            self.bg_call(*entry[2:])
        elif kind == "bg_done":
            self.bg_done(*entry[2:])
        elif kind == "bg_error":
            raise AssertionError(f"background call {entry[2]} raised {entry[3]}")
        else:  # pragma: no cover
            raise AssertionError(f"unknown log entry {entry!r}")

    def op(self, entry: Entry) -> None:
        _, t, name, i, wq, delay, result = entry
        it = self.items[i]
        args = [f"item {i}"] + ([wq] if wq else [])
        if name in ("queue_delayed_work", "mod_delayed_work"):
            args.append(str(delay))
        what = f"{name}({', '.join(args)})"
        if name == "release":
            assert it.running is not None and not it.released, f"{what}: not running"
            it.released = True
            return
        if name in ("queue_work", "queue_delayed_work"):
            expect = not it.pending and not it.disabled
            rule_ = "R1" if not it.disabled else "R11"
        elif name == "mod_delayed_work":
            expect = it.pending and not it.disabled
            rule_ = "R9" if not it.disabled else "R11"
        else:
            expect = it.pending
            rule_ = "R10"
        assert result is expect, (
            f"{what} returned {result!r}, expected {expect!r} ({rule_}); model state {it}"
        )
        if name in ("queue_work", "queue_delayed_work"):
            if expect:
                assert wq is not None
                it.queues += 1
                self.wqs[wq].queued += 1
                if delay:
                    it.armed = (wq, t + delay)
                else:
                    self.insert(i, wq)
        elif name == "mod_delayed_work":
            assert wq is not None
            if it.disabled:
                return
            if it.pending:
                self.steal(i)
            else:
                it.queues += 1
                self.wqs[wq].queued += 1
            if delay:
                it.armed = (wq, t + delay)
            else:
                self.insert(i, wq)
        elif expect:
            self.cancel(i)

    def start(self, t: float, i: int) -> None:
        it = self.items[i]
        assert it.running is None, f"item {i} started while it was running (R3)"
        assert it.armed is None, f"item {i} started at {t} with its timer still armed (R8)"
        inst = it.queued
        assert inst is not None, f"item {i} started but was not pending (R4: ran more than queued)"
        assert it.active, (
            f"item {i} started on {inst.wq} beyond max_active or out of FIFO order (R7/R6); "
            f"inactive={self.wqs[inst.wq].inactive}"
        )
        assert inst.deadline is None or t >= inst.deadline, (
            f"item {i} started at {t}, before its deadline {inst.deadline} (R8)"
        )
        it.queued = None
        it.active = False
        it.running = inst
        it.released = self.auto_release  # from teardown on, runs finish without waiting
        it.starts += 1

    def end(self, i: int) -> None:
        it = self.items[i]
        inst = it.running
        assert inst is not None and it.released, f"item {i} ended but was not released"
        it.running = None
        it.released = False
        it.ends += 1
        self.wqs[inst.wq].completed += 1
        self.end_instance(inst)
        self.release_slot(inst.wq)

    def bg_call(self, bid: int, kind: str, i: int | None, wq: str | None) -> None:
        desc = f"{kind}({wq if i is None else f'item {i}'}) #{bid}"
        if kind == "flush_workqueue":
            assert wq is not None
            self.bgs[bid] = Bg(desc, kind, None, None, set(self.wqs[wq].live))
            return
        assert i is not None
        it = self.items[i]
        if kind == "cancel_work_sync":
            expect = it.pending
            it.disabled += 1
            if expect:
                self.cancel(i)
            waits = {it.running.iid} if it.running is not None else set()
            self.bgs[bid] = Bg(desc, kind, i, expect, waits)
            return
        if kind == "flush_delayed_work" and it.armed is not None:
            self.fire(i, None)  # fired at once, deliberately before its deadline
        if it.queued is not None or it.running is not None:
            # The pending instance and the one running at the call: if the pending one is
            # cancelled or re-armed, the flush still waits for the run (R12, SPEC §5).
            waits = {inst.iid for inst in (it.queued, it.running) if inst is not None}
        else:
            waits = set()  # idle, or only armed: nothing to wait for (SPEC §5)
        self.bgs[bid] = Bg(desc, kind, i, bool(waits), waits)

    def bg_done(self, bid: int, result: object) -> None:
        bg = self.bgs.pop(bid)
        bg.done = True
        rule_ = {"flush_workqueue": "R13", "cancel_work_sync": "R11"}.get(bg.kind, "R12")
        assert result is bg.expect, f"{bg.desc} returned {result!r}, expected {bg.expect!r}"
        left = bg.waits_for & self.live
        assert not left, (
            f"{bg.desc} returned before instances {sorted(left)} it waits for finished ({rule_})"
        )
        if bg.kind == "cancel_work_sync":
            assert bg.item is not None
            it = self.items[bg.item]
            it.disabled -= 1
            assert not it.pending and it.running is None, f"{bg.desc}: on return {it} (R11)"

    def stuck(self) -> list[str]:
        """What should have happened by now, once the loop has had time to run."""
        problems = []
        for i, it in enumerate(self.items):
            if it.queued is not None and it.active and it.running is None:
                problems.append(
                    f"item {i} is queued on {it.queued.wq} with a slot but never started"
                )
            if it.running is not None and it.released:
                problems.append(f"item {i} was released but its run did not end")
        for bg in self.bgs.values():
            if not bg.waits_for & self.live:
                problems.append(f"{bg.desc} did not return though what it waits for has finished")
        return problems


# -- the machine --------------------------------------------------------------------------------


def _step(fn: Callable[..., None]) -> Callable[..., None]:
    """Run a rule, then replay the log into the model; remember if the rule failed."""

    @functools.wraps(fn)
    def wrapper(self: Machine, *args: Any, **kwargs: Any) -> None:
        self.broken = True
        fn(self, *args, **kwargs)
        self.sync()
        self.broken = False

    return wrapper


class Machine(RuleBasedStateMachine):
    #: Fire loop timers up to this many seconds early (uvloop does; the library re-checks, R8).
    early = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.loop = VirtualClockLoop(early=self.early)
        self.wqs = {
            "m": aw.alloc_workqueue("model-m", 0, max_active=WQ_LIMITS["m"]),
            "o": aw.alloc_ordered_workqueue("model-o"),
        }
        self.items = [Item(self._body, i) for i in range(N_ITEMS)]
        self.model = Model()
        self.log: list[Entry] = []
        self.seen = 0
        self.gates: list[asyncio.Event | None] = [None] * N_ITEMS  # of the current run
        self.all_gates: list[asyncio.Event] = []  # to let everything end at teardown
        self.auto_release = False
        self.in_run = [0] * N_ITEMS
        self.violations: list[str] = []
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.next_bid = 0

    # -- plumbing --

    async def _body(self, work: Item) -> None:
        i = work.idx
        self.log.append(("start", self.loop.time(), i))
        self.in_run[i] += 1
        # Checked here, independently of the model: R3, R2, and current_work().
        if self.in_run[i] > 1:
            self.violations.append(f"item {i} started while running (R3)")
        if aw.work_pending(work):
            self.violations.append(f"item {i} was still pending when its function started (R2)")
        if aw.current_work() is not work:
            self.violations.append(f"current_work() is not item {i} in its own function")
        if not self.auto_release:
            gate = self.gates[i] = asyncio.Event()
            self.all_gates.append(gate)
            await gate.wait()
        self.in_run[i] -= 1
        self.log.append(("end", self.loop.time(), i))

    async def _in_loop(self, fn: Callable[[], None]) -> None:
        fn()

    def run_sync(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` inside a task on the loop (queue_work binds to the running loop)."""
        self.loop.run_until_complete(self._in_loop(fn))

    async def _settle(self, rounds: int = SETTLE_ROUNDS) -> None:
        for _ in range(rounds):
            await asyncio.sleep(0)

    def sync(self) -> None:
        while self.seen < len(self.log):
            entry = self.log[self.seen]
            self.seen += 1
            if entry[0] == "bg_done" or entry[0] == "bg_error":
                self.tasks.pop(entry[2], None)
            self.model.apply(entry)
        self.model.fire_until(self.loop.time())

    def _op(self, name: str, i: int, wq: str | None = None, delay: float = 0) -> None:
        w = self.items[i]

        def act() -> None:
            t = self.loop.time()
            r: bool | None
            if name == "queue_work":
                r = aw.queue_work(self.wqs[wq], w)  # type: ignore[index]
            elif name == "queue_delayed_work":
                r = aw.queue_delayed_work(self.wqs[wq], w, delay)  # type: ignore[index]
            elif name == "mod_delayed_work":
                r = aw.mod_delayed_work(self.wqs[wq], w, delay)  # type: ignore[index]
            elif name == "cancel_work":
                r = aw.cancel_work(w)
            elif name == "cancel_delayed_work":
                r = aw.cancel_delayed_work(w)
            else:
                assert name == "release"
                gate = self.gates[i]
                assert gate is not None and not gate.is_set()
                gate.set()
                r = None
            self.log.append(("op", t, name, i, wq, delay, r))

        self.run_sync(act)

    async def _bg(self, bid: int, kind: str, i: int | None, wq: str | None) -> None:
        self.log.append(("bg_call", self.loop.time(), bid, kind, i, wq))
        r: bool | None
        try:
            if kind == "flush_workqueue":
                r = await aw.flush_workqueue(self.wqs[wq])  # type: ignore[func-returns-value, index]
            elif kind == "flush_work":
                r = await aw.flush_work(self.items[i])  # type: ignore[index]
            elif kind == "flush_delayed_work":
                r = await aw.flush_delayed_work(self.items[i])  # type: ignore[index]
            else:
                r = await aw.cancel_work_sync(self.items[i])  # type: ignore[index]
        except Exception as exc:
            self.log.append(("bg_error", self.loop.time(), bid, repr(exc)))
            return
        self.log.append(("bg_done", self.loop.time(), bid, r))

    def _start_bg(self, kind: str, i: int | None = None, wq: str | None = None) -> None:
        bid = self.next_bid
        self.next_bid += 1

        async def starter() -> None:
            self.tasks[bid] = asyncio.get_running_loop().create_task(self._bg(bid, kind, i, wq))
            await asyncio.sleep(0)  # its synchronous part (the call itself) runs now

        self.loop.run_until_complete(starter())

    def _delay(self, i: int, delay: float) -> float:
        """Keep armed deadlines distinct: timers due at the same instant fire in heap order."""
        if delay:
            now = self.loop.time()
            taken = self.model.armed_deadlines(but=i)
            while now + delay in taken:
                delay += NUDGE
        return delay

    # -- rules --

    @rule(i=st.integers(0, N_ITEMS - 1), wq=st.sampled_from(sorted(WQ_LIMITS)))
    @_step
    def queue_work(self, i: int, wq: str) -> None:
        self._op("queue_work", i, wq)

    @rule(
        i=st.integers(0, N_ITEMS - 1),
        wq=st.sampled_from(sorted(WQ_LIMITS)),
        delay=st.sampled_from(DELAYS),
    )
    @_step
    def queue_delayed_work(self, i: int, wq: str, delay: float) -> None:
        self._op("queue_delayed_work", i, wq, self._delay(i, delay))

    @rule(
        i=st.integers(0, N_ITEMS - 1),
        wq=st.sampled_from(sorted(WQ_LIMITS)),
        delay=st.sampled_from(DELAYS),
    )
    @_step
    def mod_delayed_work(self, i: int, wq: str, delay: float) -> None:
        self._op("mod_delayed_work", i, wq, self._delay(i, delay))

    @rule(i=st.integers(0, N_ITEMS - 1))
    @_step
    def cancel_work(self, i: int) -> None:
        self._op("cancel_work", i)

    @rule(i=st.integers(0, N_ITEMS - 1))
    @_step
    def cancel_delayed_work(self, i: int) -> None:
        self._op("cancel_delayed_work", i)

    @precondition(lambda self: any(it.running and not it.released for it in self.model.items))
    @rule(k=st.integers(0, N_ITEMS - 1))
    @_step
    def release(self, k: int) -> None:
        running = [i for i, it in enumerate(self.model.items) if it.running and not it.released]
        self._op("release", running[k % len(running)])

    @rule()
    @_step
    def run_loop(self) -> None:
        self.loop.run_until_complete(self._settle())
        self.sync()
        problems = self.model.stuck()
        assert not problems, "no progress: " + "; ".join(problems)

    @rule(step=st.sampled_from(("next", 0.5, 1.0)))
    @_step
    def advance(self, step: str | float) -> None:
        now = self.loop.time()
        deadlines = [it.armed[1] for it in self.model.items if it.armed]
        if step == "next":
            target = min(deadlines) if deadlines else now + 0.5
        else:
            target = now + float(step)
        self.loop.run_until_complete(asyncio.sleep(target - now))
        assert target - self.early <= self.loop.time() <= target

    @precondition(lambda self: len(self.tasks) < MAX_BG)
    @rule(i=st.integers(0, N_ITEMS - 1))
    @_step
    def flush_work(self, i: int) -> None:
        self._start_bg("flush_work", i)

    @precondition(lambda self: len(self.tasks) < MAX_BG)
    @rule(i=st.integers(0, N_ITEMS - 1))
    @_step
    def flush_delayed_work(self, i: int) -> None:
        self._start_bg("flush_delayed_work", i)

    @precondition(lambda self: len(self.tasks) < MAX_BG)
    @rule(wq=st.sampled_from(sorted(WQ_LIMITS)))
    @_step
    def flush_workqueue(self, wq: str) -> None:
        self._start_bg("flush_workqueue", wq=wq)

    @precondition(lambda self: len(self.tasks) < MAX_BG)
    @rule(i=st.integers(0, N_ITEMS - 1))
    @_step
    def cancel_work_sync(self, i: int) -> None:
        self._start_bg("cancel_work_sync", i)

    # -- checks after every step --

    @invariant()
    def library_agrees_with_model(self) -> None:
        self.broken = True
        self.sync()
        assert not self.violations, "; ".join(self.violations)
        for i, w in enumerate(self.items):
            it = self.model.items[i]
            busy = aw.work_busy(w)
            want = aw.WorkBusy(0)
            if it.pending:
                want |= aw.WorkBusy.PENDING
            if it.running is not None:
                want |= aw.WorkBusy.RUNNING
            assert busy == want, f"work_busy(item {i}) is {busy!r}, model says {want!r}: {it}"
            assert aw.work_pending(w) is it.pending
            assert aw.delayed_work_pending(w) is it.pending
        for name, wq in self.wqs.items():
            m = self.model.wqs[name]
            s = wq.stats()
            armed = sum(1 for it in self.model.items if it.armed and it.armed[0] == name)
            got = (s.in_flight, s.armed, s.queued, s.cancelled, s.completed)
            want_ = (len(m.live), armed, m.queued, m.cancelled, m.completed)
            assert got == want_, (
                f"stats of {name} (in_flight, armed, queued, cancelled, completed) = {got}, "
                f"model says {want_}"
            )
        self.broken = False

    # -- the end --

    def _wait(self, make: Callable[[], Awaitable[Any]], what: str) -> None:
        """Await ``make()`` on the loop with a (virtual) time limit: a hang fails, never blocks."""

        async def bounded() -> None:
            await asyncio.wait_for(make(), 3600)

        try:
            self.loop.run_until_complete(bounded())
        except TimeoutError:
            raise AssertionError(f"{what} did not finish") from None

    def _finish(self) -> None:
        """Let everything run and finish, then check R4 and that nothing is left over."""

        def release_all() -> None:
            self.auto_release = True
            for gate in self.all_gates:
                gate.set()
            self.log.append(("auto_release", self.loop.time()))

        self.run_sync(release_all)
        self.loop.run_until_complete(self._settle())
        self.sync()
        while deadlines := [it.armed[1] for it in self.model.items if it.armed]:
            self.loop.run_until_complete(asyncio.sleep(max(deadlines) - self.loop.time()))
            self.loop.run_until_complete(self._settle())
            self.sync()
        if self.tasks:
            self._wait(lambda: asyncio.wait(self.tasks.values()), "background flush/cancel_sync")
        self._wait(
            lambda: asyncio.gather(*(aw.flush_workqueue(wq) for wq in self.wqs.values())),
            "flush_workqueue at teardown",
        )
        self.loop.run_until_complete(self._settle())
        self.sync()
        assert not self.tasks, f"background calls never returned: {sorted(self.tasks)}"
        problems = self.model.stuck()
        assert not problems, "at teardown: " + "; ".join(problems)
        for i, it in enumerate(self.model.items):
            w = self.items[i]
            assert not it.pending and it.running is None, f"item {i} not idle at the end: {it}"
            assert aw.work_busy(w) == aw.WorkBusy(0)
            assert it.starts == it.ends
            assert it.starts == it.queues - it.cancels, (
                f"item {i} ran {it.starts} times; queued {it.queues}, cancelled {it.cancels} (R4)"
            )
        self.library_agrees_with_model()
        for wq in self.wqs.values():
            self._wait(functools.partial(aw.destroy_workqueue, wq), f"destroy_workqueue({wq.name})")

    async def _cancel_all(self) -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _close(self) -> None:
        loop = self.loop
        self.auto_release = True
        for gate in self.all_gates:
            gate.set()
        try:
            loop.run_until_complete(self._settle())
            loop.run_until_complete(self._cancel_all())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def teardown(self) -> None:
        try:
            if not self.broken:
                self._finish()
        finally:
            self._close()


class EarlyTimersMachine(Machine):
    """The same on a loop whose timers fire up to 1 ms early, as uvloop's do (R8)."""

    early = 0.001


Machine.TestCase.settings = settings(max_examples=400, stateful_step_count=50, deadline=None)
EarlyTimersMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None
)
TestModel = Machine.TestCase
TestModelEarlyTimers = EarlyTimersMachine.TestCase
