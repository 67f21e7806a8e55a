"""The reference model of SPEC §3 that the model-based tests replay their logs into.

Two hypothesis state machines drive the library and check every step against this model:
``tests/test_model.py`` (one loop with a virtual clock, timers with deadlines) and
``tests/reliability/test_model_runtime.py`` (a ``Runtime`` with two pools, called from several
threads, with drains, destroys, freezes and a shutdown). What they share is here: the bookkeeping
of items, their instances and the ``max_active`` slots of each queue, the return value every call
must have (R1, R9, R10, R11), the checks made on every start, end and barrier return (R2-R4, R6-R8,
R11-R13), the progress check, R4 at the end, and the comparison of the library's observable state
(``work_busy``, ``wq.stats()``) with the model. What only one machine needs is in its subclass of
:class:`RefModel` and :class:`ModelMachine`.

A queue has *links*, each with its own ``max_active`` slots and FIFO of waiting items: a per-CPU
queue of a runtime one per pool (link = the pool's cpu), an unbound queue, and every queue of the
one-loop test, one (link :data:`UNBOUND`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hypothesis.stateful import RuleBasedStateMachine, precondition

import aioworkqueue as aw

UNBOUND = -1  # the one link of a queue that is not per-CPU

#: The barriers (background calls) both machines make, and the rule each one's wait is about.
BARRIER_RULES = {
    "flush_work": "R12",
    "flush_delayed_work": "R12",
    "flush_workqueue": "R13",
    "cancel_work_sync": "R11",
}


class Item(aw.DelayedWork):
    __slots__ = ("idx",)

    def __init__(self, func: aw.WorkFunc, idx: int) -> None:
        super().__init__(func)
        self.idx = idx


# -- the state ----------------------------------------------------------------------------------


@dataclass
class Inst:
    """One queued instance of an item: from its insertion into a queue link to its end or cancel."""

    iid: int
    wq: str
    link: int = UNBOUND
    deadline: float | None = None  # set when its timer queued it on time (R8)


@dataclass
class Armed:
    """An item's armed timer."""

    wq: str
    link: int
    order: int  # the how-manieth timer armed
    deadline: float | None  # None: not due during the example (the runtime test's hour-long ones)


@dataclass
class MItem:
    armed: Armed | None = None  # while the timer is armed
    queued: Inst | None = None  # the pending instance, on a queue link
    active: bool = False  # ... and it holds a max_active slot of that link (R7)
    running: Inst | None = None
    released: bool = False  # the test let the current run finish
    disabled: int = 0  # cancel_work_sync calls in progress (R11)
    queues: int = 0  # successful queue_* (and mod_delayed_work of an idle item)
    cancels: int = 0  # successful cancel_* / cancel_work_sync
    starts: int = 0
    ends: int = 0
    fails: int = 0  # runs that raised (R16)

    @property
    def pending(self) -> bool:
        return self.armed is not None or self.queued is not None


@dataclass
class MWq:
    max_active: int
    inactive: dict[int, list[int]] = field(default_factory=dict)  # link -> items, FIFO
    live: set[int] = field(default_factory=set)  # instances queued or running (flush waits)
    queued: int = 0
    cancelled: int = 0
    completed: int = 0
    failed: int = 0


@dataclass
class Bg:
    """A barrier call in progress, from its call to its return."""

    desc: str
    kind: str
    item: int | None
    wq: str | None
    expect: object  # what it must return
    waits_for: set[int] = field(default_factory=set)  # instances it must wait for


# -- the model ----------------------------------------------------------------------------------


class RefModel:
    """SPEC §3 for a handful of items, driven by the log of what happened."""

    item_type: type[MItem] = MItem
    barrier_rules: ClassVar[dict[str, str]] = BARRIER_RULES
    #: What a start without a ``max_active`` slot breaks (for the message).
    no_slot = "beyond max_active or out of FIFO order (R7/R6)"

    def __init__(self, n_items: int, wqs: dict[str, MWq]) -> None:
        self.items = [self.item_type() for _ in range(n_items)]
        self.wqs = wqs
        self.live: set[int] = set()  # all instances in flight
        self.next_iid = 0
        self.arm_order = 0
        self.bgs: dict[int, Bg] = {}
        self.auto_release = False
        # A shutdown began (the runtime test): an item with a slot need not start any more, and
        # a barrier may return once the shutdown takes back what it waits for.
        self.shut = False

    # -- mechanics --

    def limit(self, wq: str) -> int:
        return self.wqs[wq].max_active

    def nr_active(self, wq: str, link: int) -> int:
        n = 0
        for it in self.items:
            for inst, counts in ((it.queued, it.active), (it.running, True)):
                if inst is not None and counts and inst.wq == wq and inst.link == link:
                    n += 1
        return n

    def insert(self, i: int, wq: str, link: int = UNBOUND, deadline: float | None = None) -> None:
        it = self.items[i]
        inst = Inst(self.next_iid, wq, link, deadline)
        self.next_iid += 1
        self.live.add(inst.iid)
        self.wqs[wq].live.add(inst.iid)
        it.queued = inst
        it.active = self.nr_active(wq, link) < self.limit(wq)
        if not it.active:
            self.wqs[wq].inactive.setdefault(link, []).append(i)

    def activate(self, wq: str, link: int, all_: bool = False) -> None:
        """Give free slots of a link to the items waiting for one, in FIFO order (R6, R7)."""
        waiting = self.wqs[wq].inactive.get(link, [])
        while waiting and self.nr_active(wq, link) < self.limit(wq):
            self.items[waiting.pop(0)].active = True
            if not all_:
                return

    def end_instance(self, inst: Inst) -> None:
        self.live.discard(inst.iid)
        self.wqs[inst.wq].live.discard(inst.iid)

    def arm(self, i: int, wq: str, link: int, deadline: float | None) -> None:
        self.items[i].armed = Armed(wq, link, self.arm_order, deadline)
        self.arm_order += 1

    def fire(self, i: int, deadline: float | None = None) -> None:
        """The timer of item i fired: on time (its ``deadline``), or forced early (None)."""
        it = self.items[i]
        armed = it.armed
        assert armed is not None
        it.armed = None
        self.insert(i, armed.wq, armed.link, deadline)

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
            self.activate(inst.wq, inst.link)
        else:
            self.wqs[inst.wq].inactive[inst.link].remove(i)
        self.end_instance(inst)

    def pending_wq(self, i: int) -> str:
        it = self.items[i]
        if it.armed is not None:
            return it.armed.wq
        assert it.queued is not None
        return it.queued.wq

    def cancel(self, i: int) -> None:
        it = self.items[i]
        self.wqs[self.pending_wq(i)].cancelled += 1
        it.cancels += 1
        self.steal(i)

    # -- calls: queue (queue_work[_on], queue_delayed_work[_on]), mod, cancel --

    def is_disabled(self, i: int, caller: object = None) -> bool:
        """Whether a ``cancel_work_sync`` of item i that ``caller``'s queue_* must respect is in
        progress (R11). Here every caller respects every one; a backend whose mark reaches only
        the calling client overrides this."""
        return bool(self.items[i].disabled)

    def expected(self, i: int, call: str, caller: object = None) -> tuple[bool, str]:
        """What ``call`` of item i (made by ``caller``) must return now, and the rule that says
        so."""
        it = self.items[i]
        if call == "cancel":
            return it.pending, "R10"
        disabled = self.is_disabled(i, caller)
        why = "R11" if disabled else "R9" if call == "mod" else "R1"
        if call == "mod":
            return it.pending and not disabled, why
        assert call == "queue", call
        return not it.pending and not disabled, why

    def takes_effect(self, i: int, call: str, caller: object = None) -> bool:
        """Whether a queue or mod call of item i that returned as ``expected`` queued or armed it.

        A mod of an idle item queues it (R9); a disabled item is not armed (R11)."""
        it = self.items[i]
        return not self.is_disabled(i, caller) and (call == "mod" or not it.pending)

    def place(
        self,
        i: int,
        wq: str,
        *,
        mod: bool,
        delay: float,
        link: int = UNBOUND,
        deadline: float | None = None,
    ) -> None:
        """Apply a queue or mod call that ``takes_effect``: arm the item, or queue it at once."""
        it = self.items[i]
        if mod and it.pending:
            self.steal(i)
        else:
            it.queues += 1
            self.wqs[wq].queued += 1
        if delay:
            self.arm(i, wq, link, deadline)
        else:
            self.insert(i, wq, link)

    # -- runs --

    def starting(self, i: int, inst: Inst) -> None:
        """A hook, before the slot check of a start."""

    def started(self, i: int, where: str) -> Inst:
        """Check a start of item i (``where``: when or on which pool, for the messages)."""
        it = self.items[i]
        assert it.running is None, f"item {i} started {where} while it was running (R3)"
        assert it.armed is None, f"item {i} started {where} with its timer still armed (R8)"
        inst = it.queued
        assert inst is not None, (
            f"item {i} started {where} but was not pending (R4: ran more than queued)"
        )
        self.starting(i, inst)
        assert it.active, (
            f"item {i} started on {inst.wq} {self.no_slot}; inactive={self.wqs[inst.wq].inactive}"
        )
        it.queued = None
        it.active = False
        it.running = inst
        it.released = self.auto_release  # from teardown on, runs finish without waiting
        it.starts += 1
        return inst

    def release(self, i: int) -> None:
        it = self.items[i]
        assert it.running is not None and not it.released, f"release of item {i}: {it}"
        it.released = True

    def releasable(self) -> list[int]:
        """The items whose run waits for the test to release it."""
        return [i for i, it in enumerate(self.items) if it.running is not None and not it.released]

    def ended(self, i: int) -> Inst:
        it = self.items[i]
        inst = it.running
        assert inst is not None, f"item {i} ended but was not running"
        it.running = None
        it.released = False
        self.end_instance(inst)
        return inst

    def end(self, i: int, outcome: str = "ok") -> None:
        it = self.items[i]
        assert it.running is not None and it.released, f"item {i} ended but was not released"
        inst = self.ended(i)
        it.ends += 1
        if outcome == "raised":
            it.fails += 1
            self.wqs[inst.wq].failed += 1
        else:
            self.wqs[inst.wq].completed += 1
        self.activate(inst.wq, inst.link)

    # -- barriers --

    def bg_call(
        self, bid: int, kind: str, i: int | None, wq: str | None, caller: str | None = None
    ) -> None:
        desc = f"{kind}({wq if i is None else f'item {i}'})"
        desc += f" from {caller} #{bid}" if caller else f" #{bid}"
        self.bgs[bid] = self.barrier(desc, kind, i, wq)

    def barrier(self, desc: str, kind: str, i: int | None, wq: str | None) -> Bg:
        """A barrier call was made: what it must return and wait for."""
        if kind == "flush_workqueue":
            assert wq is not None
            return Bg(desc, kind, None, wq, None, set(self.wqs[wq].live))
        assert i is not None
        it = self.items[i]
        if kind == "cancel_work_sync":
            expect = it.pending
            it.disabled += 1
            if expect:
                self.cancel(i)
            waits = {it.running.iid} if it.running is not None else set()
            return Bg(desc, kind, i, None, expect, waits)
        assert kind in ("flush_work", "flush_delayed_work"), kind
        if kind == "flush_delayed_work" and it.armed is not None:
            self.fire(i)  # fired at once, deliberately before its deadline (R12)
        # The pending instance and the one running at the call: if the pending one is cancelled
        # or re-armed, the flush still waits for the run (R12, SPEC §5). Idle, or only armed:
        # nothing to wait for.
        waits = {inst.iid for inst in (it.queued, it.running) if inst is not None}
        return Bg(desc, kind, i, None, bool(waits), waits)

    def bg_ready(self, bg: Bg) -> bool:
        """Whether what ``bg`` waits for has happened."""
        return not bg.waits_for & self.live

    def sync_return_excused(self, bg: Bg) -> bool:
        """Whether the ``cancel_work_sync`` ``bg`` may find its item busy on return (R11 says
        idle). Never here; a backend with a documented exception overrides this."""
        return False

    def bg_done(self, bid: int, result: object) -> Bg:
        bg = self.bgs.pop(bid)
        assert not isinstance(result, BaseException), f"{bg.desc} raised {result!r}"
        assert result is bg.expect, f"{bg.desc} returned {result!r}, expected {bg.expect!r}"
        rule_ = self.barrier_rules[bg.kind]
        # After a shutdown began, its take-backs (known only from its return value, applied
        # last) release barriers: what they waited for is checked at the very end instead.
        assert self.shut or self.bg_ready(bg), (
            f"{bg.desc} returned before what it waits for finished ({rule_}); "
            f"left: {sorted(bg.waits_for & self.live)}"
        )
        if bg.kind == "cancel_work_sync":
            assert bg.item is not None
            it = self.items[bg.item]
            it.disabled -= 1
            idle = not it.pending and it.running is None
            assert self.shut or idle or self.sync_return_excused(bg), (
                f"{bg.desc}: on return {it} (R11)"
            )
        return bg

    # -- log entries --

    def apply(self, e: Sequence[Any]) -> None:
        """Check one log entry (its kind, then its fields) and bring the model up to date."""
        kind = e[0]
        if kind == "end":
            self.end(*e[1:])
        elif kind == "release":
            self.release(e[1])
        elif kind == "auto_release":
            self.auto_release = True
            for it in self.items:
                it.released = it.running is not None
        elif kind == "bg_call":
            self.bg_call(*e[1:])
        elif kind == "bg_done":
            self.bg_done(e[1], e[2])
        else:  # pragma: no cover
            raise AssertionError(f"unknown log entry {e!r}")

    # -- progress, and the end --

    def stuck(self) -> list[str]:
        """What should have happened by now, once the loop(s) had time to run."""
        problems = []
        for i, it in enumerate(self.items):
            if it.queued is not None and it.active and it.running is None and not self.shut:
                problems.append(f"item {i} is queued on {it.queued.wq} with a slot, not started")
            if it.running is not None and it.released:
                problems.append(f"item {i} was released but its run did not end")
        for bg in self.bgs.values():
            if self.bg_ready(bg):
                problems.append(f"{bg.desc} did not return though what it waits for finished")
        return problems

    def runs_over(self, it: MItem) -> int:
        """The runs of ``it`` that are over (ended, or cut)."""
        return it.ends

    def check_end(self, took_back: str = "cancelled") -> None:
        """At the end: every item idle, and run exactly once per successful queue that was not
        taken back (R4)."""
        for i, it in enumerate(self.items):
            assert it.running is None, f"item {i}: its run still going at the end: {it}"
            assert not it.pending, f"item {i} still pending at the end: {it}"
            assert it.starts == it.queues - it.cancels, (
                f"item {i} ran {it.starts} times; queued {it.queues}, {took_back} {it.cancels} (R4)"
            )
            assert it.starts == self.runs_over(it)


# -- the machines -------------------------------------------------------------------------------


def run_violations(work: Item, overlap: bool) -> list[str]:
    """What a work function checks as it starts, independently of the model: R3, R2, and
    ``current_work()``."""
    i = work.idx
    out = []
    if overlap:
        out.append(f"item {i} started while running (R3)")
    if aw.work_pending(work):
        out.append(f"item {i} was still pending when its function started (R2)")
    if aw.current_work() is not work:
        out.append(f"current_work() is not item {i} in its own function")
    return out


async def call_barrier(kind: str, work: Item | None, wq: aw.Workqueue | None) -> object:
    """Make the barrier call ``kind`` (a key of BARRIER_RULES); return what it returned."""
    if kind == "flush_workqueue":
        assert wq is not None
        return await aw.flush_workqueue(wq)  # type: ignore[func-returns-value]
    assert work is not None
    if kind == "flush_work":
        return await aw.flush_work(work)
    if kind == "flush_delayed_work":
        return await aw.flush_delayed_work(work)
    assert kind == "cancel_work_sync", kind
    return await aw.cancel_work_sync(work)


def model_step(fn: Callable[..., None]) -> Callable[..., None]:
    """A rule: run it, then bring the model up to date; if either fails, the teardown only cleans
    up."""

    @functools.wraps(fn)
    def wrapper(self: ModelMachine, *args: Any, **kwargs: Any) -> None:
        self.broken = True
        self.steps += 1
        fn(self, *args, **kwargs)
        self.catch_up()
        self.broken = False

    return wrapper


#: For the rule that releases a run: there is one waiting for it.
a_run_waits = precondition(lambda self: bool(self.model.releasable()))


class ModelMachine(RuleBasedStateMachine):
    """What both machines share: step bookkeeping, the teardown, and the comparison of the
    library's observable state with the model."""

    model: RefModel
    items: list[Item]
    wqs: dict[str, aw.Workqueue]

    def __init__(self) -> None:
        super().__init__()
        self.broken = False  # a rule or a check failed
        self.steps = 0

    def catch_up(self) -> None:
        """After a rule: replay into the model what the rule set off."""
        raise NotImplementedError

    def disagreements(self) -> list[str]:
        """Where ``work_busy``, ``work_pending`` and ``wq.stats()`` differ from the model."""
        out = []
        for i, w in enumerate(self.items):
            it = self.model.items[i]
            want = aw.WorkBusy(0)
            if it.pending:
                want |= aw.WorkBusy.PENDING
            if it.running is not None:
                want |= aw.WorkBusy.RUNNING
            busy = aw.work_busy(w)
            if busy != want:
                out.append(f"work_busy(item {i}) is {busy!r}, model says {want!r}: {it}")
            if aw.work_pending(w) is not it.pending or aw.delayed_work_pending(w) is not it.pending:
                out.append(f"work_pending(item {i}) is not {it.pending}: {it}")
        for name, wq in self.wqs.items():
            m = self.model.wqs[name]
            s = wq.stats()
            armed = sum(1 for it in self.model.items if it.armed and it.armed.wq == name)
            got = (s.queued, s.completed, s.failed, s.cancelled, s.in_flight, s.armed)
            want_ = (m.queued, m.completed, m.failed, m.cancelled, len(m.live), armed)
            if got != want_:
                out.append(
                    f"stats of {name} (queued, completed, failed, cancelled, in_flight, armed) "
                    f"= {got}, model says {want_}"
                )
        return out

    def finish(self) -> None:
        """Let everything end, and check the end."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the example holds, whatever happened."""
        raise NotImplementedError

    def teardown(self) -> None:
        try:
            if not self.broken:
                self.finish()
        finally:
            self.close()
