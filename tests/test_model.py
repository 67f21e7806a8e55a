"""A model-based test: random operations against the library, checked against SPEC §3.

A hypothesis ``RuleBasedStateMachine`` drives three ``DelayedWork`` items over two workqueues (one
with ``max_active=2``, one ordered) in embedded mode, on one :class:`~tests.vclock.VirtualClockLoop`
per example, so timers are deterministic. Every run of an item blocks on an ``asyncio.Event`` the
test owns until the "release" rule sets it, which makes RUNNING, RUNNING+PENDING (R2) and
``cancel_work_sync`` waiting for a running instance reachable.

Everything that happens is appended to one log, in the order it happens on the loop: the result
of each operation, the start and end of each run (with the virtual time), the call and the return
of each background ``flush_*`` / ``cancel_work_sync`` task. The reference model of SPEC §3 shared
with ``tests/reliability/test_model_runtime.py`` (``tests/_refmodel.py``), with timers that fire
at their deadline (:class:`ClockModel`), replays the log and checks each entry:

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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

import aioworkqueue as aw
from tests._refmodel import (
    Item,
    ModelMachine,
    MWq,
    RefModel,
    a_run_waits,
    call_barrier,
    model_step,
    run_violations,
)
from tests.vclock import VirtualClockLoop

N_ITEMS = 3
WQ_LIMITS = {"m": 2, "o": 1}  # workqueue name in the model -> max_active ("o" is ordered)
DELAYS = (0, 1.0, 2.5)
MAX_BG = 3  # background flush / cancel_sync tasks outstanding at once
SETTLE_ROUNDS = 20
NUDGE = 0.25  # added to a delay whose deadline would tie with another armed timer

Entry = tuple[Any, ...]


# -- the reference model (tests/_refmodel.py), with timers that fire at their deadline ----------


class ClockModel(RefModel):
    """SPEC §3 for a handful of items on one loop: every log entry carries its virtual time."""

    def __init__(self) -> None:
        super().__init__(N_ITEMS, {name: MWq(limit) for name, limit in WQ_LIMITS.items()})

    def deadlines(self) -> dict[int, float]:
        """Item -> the deadline of its armed timer."""
        out = {}
        for i, it in enumerate(self.items):
            if it.armed is not None:
                assert it.armed.deadline is not None
                out[i] = it.armed.deadline
        return out

    def fire_until(self, t: float) -> None:
        """The timers due by virtual time ``t`` fired, in deadline order (R8)."""
        due = sorted((deadline, i) for i, deadline in self.deadlines().items() if deadline <= t)
        for deadline, i in due:
            self.fire(i, deadline)

    def armed_deadlines(self, but: int) -> set[float]:
        return {deadline for j, deadline in self.deadlines().items() if j != but}

    def apply(self, entry: Sequence[Any]) -> None:
        kind, t = entry[0], entry[1]
        self.fire_until(t)
        if kind == "op":
            self.op(entry)
        elif kind == "start":
            inst = self.started(entry[2], f"at {t}")
            assert inst.deadline is None or t >= inst.deadline, (
                f"item {entry[2]} started at {t}, before its deadline {inst.deadline} (R8)"
            )
        else:
            super().apply((kind, *entry[2:]))

    def op(self, entry: Sequence[Any]) -> None:
        _, t, name, i, wq, delay, result = entry
        it = self.items[i]
        args = [f"item {i}"] + ([wq] if wq else [])
        if name in ("queue_delayed_work", "mod_delayed_work"):
            args.append(str(delay))
        what = f"{name}({', '.join(args)})"
        if name == "release":
            self.release(i)
            return
        call = {"queue_work": "queue", "queue_delayed_work": "queue", "mod_delayed_work": "mod"}
        call_ = call.get(name, "cancel")
        expect, rule_ = self.expected(i, call_)
        assert result is expect, (
            f"{what} returned {result!r}, expected {expect!r} ({rule_}); model state {it}"
        )
        if call_ == "cancel":
            if expect:
                self.cancel(i)
        elif self.takes_effect(i, call_):
            assert wq is not None
            self.place(i, wq, mod=call_ == "mod", delay=delay, deadline=t + delay)


# -- the machine --------------------------------------------------------------------------------

ITEM = st.integers(0, N_ITEMS - 1)
WQ = st.sampled_from(sorted(WQ_LIMITS))
room_for_bg = precondition(lambda self: len(self.tasks) < MAX_BG)


class Machine(ModelMachine):
    #: Fire loop timers up to this many seconds early (uvloop does; the library re-checks, R8).
    early = 0.0
    model: ClockModel

    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualClockLoop(early=self.early)
        self.wqs = {
            "m": aw.alloc_workqueue("model-m", 0, max_active=WQ_LIMITS["m"]),
            "o": aw.alloc_ordered_workqueue("model-o"),
        }
        self.items = [Item(self._body, i) for i in range(N_ITEMS)]
        self.model = ClockModel()
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
        self.violations += run_violations(work, overlap=self.in_run[i] > 1)
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
            if entry[0] == "bg_done":
                self.tasks.pop(entry[2], None)
            self.model.apply(entry)
        self.model.fire_until(self.loop.time())

    catch_up = sync

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
        work = None if i is None else self.items[i]
        try:
            r = await call_barrier(kind, work, None if wq is None else self.wqs[wq])
        except Exception as exc:
            r = exc
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

    @rule(i=ITEM, wq=WQ)
    @model_step
    def queue_work(self, i: int, wq: str) -> None:
        self._op("queue_work", i, wq)

    @rule(i=ITEM, wq=WQ, delay=st.sampled_from(DELAYS))
    @model_step
    def queue_delayed_work(self, i: int, wq: str, delay: float) -> None:
        self._op("queue_delayed_work", i, wq, self._delay(i, delay))

    @rule(i=ITEM, wq=WQ, delay=st.sampled_from(DELAYS))
    @model_step
    def mod_delayed_work(self, i: int, wq: str, delay: float) -> None:
        self._op("mod_delayed_work", i, wq, self._delay(i, delay))

    @rule(i=ITEM)
    @model_step
    def cancel_work(self, i: int) -> None:
        self._op("cancel_work", i)

    @rule(i=ITEM)
    @model_step
    def cancel_delayed_work(self, i: int) -> None:
        self._op("cancel_delayed_work", i)

    @a_run_waits
    @rule(k=ITEM)
    @model_step
    def release(self, k: int) -> None:
        running = self.model.releasable()
        self._op("release", running[k % len(running)])

    @rule()
    @model_step
    def run_loop(self) -> None:
        self.loop.run_until_complete(self._settle())
        self.sync()
        problems = self.model.stuck()
        assert not problems, "no progress: " + "; ".join(problems)

    @rule(step=st.sampled_from(("next", 0.5, 1.0)))
    @model_step
    def advance(self, step: str | float) -> None:
        now = self.loop.time()
        deadlines = self.model.deadlines().values()
        if step == "next":
            target = min(deadlines) if deadlines else now + 0.5
        else:
            target = now + float(step)
        self.loop.run_until_complete(asyncio.sleep(target - now))
        assert target - self.early <= self.loop.time() <= target

    @room_for_bg
    @rule(i=ITEM)
    @model_step
    def flush_work(self, i: int) -> None:
        self._start_bg("flush_work", i)

    @room_for_bg
    @rule(i=ITEM)
    @model_step
    def flush_delayed_work(self, i: int) -> None:
        self._start_bg("flush_delayed_work", i)

    @room_for_bg
    @rule(wq=WQ)
    @model_step
    def flush_workqueue(self, wq: str) -> None:
        self._start_bg("flush_workqueue", wq=wq)

    @room_for_bg
    @rule(i=ITEM)
    @model_step
    def cancel_work_sync(self, i: int) -> None:
        self._start_bg("cancel_work_sync", i)

    # -- checks after every step --

    @invariant()
    def library_agrees_with_model(self) -> None:
        self.broken = True
        self.sync()
        assert not self.violations, "; ".join(self.violations)
        problems = self.disagreements()
        assert not problems, "; ".join(problems)
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

    def finish(self) -> None:
        """Let everything run and finish, then check R4 and that nothing is left over."""

        def release_all() -> None:
            self.auto_release = True
            for gate in self.all_gates:
                gate.set()
            self.log.append(("auto_release", self.loop.time()))

        self.run_sync(release_all)
        self.loop.run_until_complete(self._settle())
        self.sync()
        while deadlines := self.model.deadlines().values():
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
        self.model.check_end()
        for w in self.items:
            assert aw.work_busy(w) == aw.WorkBusy(0)
        self.library_agrees_with_model()
        for wq in self.wqs.values():
            self._wait(functools.partial(aw.destroy_workqueue, wq), f"destroy_workqueue({wq.name})")

    async def _cancel_all(self) -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
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


class EarlyTimersMachine(Machine):
    """The same on a loop whose timers fire up to 1 ms early, as uvloop's do (R8)."""

    early = 0.001


Machine.TestCase.settings = settings(max_examples=400, stateful_step_count=50, deadline=None)
EarlyTimersMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None
)
TestModel = Machine.TestCase
TestModelEarlyTimers = EarlyTimersMachine.TestCase
