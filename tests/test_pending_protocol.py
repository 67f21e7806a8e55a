"""The lock-free pending bit (``_pending.py``), checked under every interleaving within a bound.

Each scenario runs the real :class:`PendingTable` on threads (greenlets) whose shared dict and deque
steps are scheduled one at a time (``tests/_interleave.py``), with signal handlers landing at any
step of the threads that have them. Every run's history must be linearizable against the
sequential model of the pending bit (R1 queue, R10 cancel, the start of a run), and once every
entry is taken no instance may be left pending: each successful queue ran or was cancelled,
exactly once (R4), and no chain may have a cycle. The mutants at the end each weaken one step of
the protocol; the scenarios must catch each of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aioworkqueue._pending import _RUN, PendingTable, _Disabled, _Mark, _Moved, _next

from ._interleave import Event, Run, TracedDeque, TracedDict, TracedList, entries, explore

# -- the sequential model, and the linearizability check -------------------------------------


def _apply(ev: Event, state: dict[Any, object]) -> dict[Any, object] | None:
    """The model's answer to ``ev``: the state after it, or None if it could not answer so."""
    w = ev.args[0]
    cur = state.get(w)  # the pending instance's token, or None
    depth = state.get(("disabled", w), 0)
    assert isinstance(depth, int)
    new = dict(state)
    if ev.op == "queue":
        ok, n = ev.result
        if ok != (cur is None and depth == 0):
            return None
        if ok:
            new[w] = n
    elif ev.op == "disable":
        if ev.result is not cur:
            return None
        new[w] = None
        new[("disabled", w)] = depth + 1
    elif ev.op == "enable":
        if ev.result != (None if depth == 0 else depth == 1):
            return None
        new[("disabled", w)] = max(depth - 1, 0)
    elif ev.op == "move":
        old, n = ev.result
        if old is not cur or (n is None) != (depth > 0):
            return None
        new[w] = n
    elif ev.op == "cancel":
        if ev.result is not cur:
            return None
        new[w] = None
    elif ev.op == "take":
        n = ev.args[1]
        if ev.result != (cur is n):
            return None
        if ev.result:
            new[w] = None
    elif ev.op == "pending":
        if ev.result != (cur is not None):
            return None
    else:  # pragma: no cover
        raise AssertionError(ev.op)
    return new


def linearizable(history: list[Event]) -> bool:
    """True if some order of the ops, keeping every op before those that began after it ended,
    gives each op its recorded answer in the model (Wing and Gong's search)."""

    def search(left: list[Event], state: dict[Any, object]) -> bool:
        if not left:
            return True
        for ev in left:
            if any(o.end < ev.start for o in left if o is not ev):
                continue  # something that ended before it began is still to come
            nxt = _apply(ev, state)
            if nxt is not None and search([o for o in left if o is not ev], nxt):
                return True
        return False

    return search(history, {})


# -- scenarios ---------------------------------------------------------------------------------


class W:
    """A work item as the table sees one: its ``_tok`` hint is a traced slot."""

    __slots__ = ("_hint", "_run", "name")

    def __init__(self, name: str, run: Run) -> None:
        self.name = name
        self._run = run
        self._hint: Any = None

    @property
    def _tok(self) -> Any:
        self._run.point()
        return self._hint

    @_tok.setter
    def _tok(self, value: Any) -> None:
        self._run.point()
        self._hint = value

    def __repr__(self) -> str:
        return self.name


class _Setup:
    """The shared state of one run: the table over traced dicts, and pool inboxes."""

    def __init__(self, run: Run, table_cls: type[PendingTable], pools: int = 1) -> None:
        self.run = run
        self.fresh = TracedDict(run)
        self.table = table_cls(self.fresh, lambda w: TracedList(run, w))
        self.inboxes = [TracedDeque(run) for _ in range(pools)]
        self.works: list[W] = []
        self.made: dict[int, W] = {}  # id of a token placed on an inbox -> its work

    def work(self, name: str) -> W:
        w = W(name, self.run)
        self.works.append(w)
        return w

    def queue(self, who: str, w: W, pool: int = 0) -> Callable[[], Any]:
        def op() -> Any:
            def q(w: W) -> tuple[bool, object]:
                inbox = self.inboxes[pool]
                made: list[object] = []

                setup = self

                class Seen:  # the token it made, as it appends it
                    def append(self, token: Any) -> None:
                        made.append(token)
                        setup.made[id(token)] = w
                        inbox.append(token)

                ok = self.table.queue(w, Seen())
                return ok, (made[0] if ok else None)

            return self.run.op(who, "queue", q, w)

        return op

    def cancel(self, who: str, w: W) -> Callable[[], Any]:
        return lambda: self.run.op(who, "cancel", self.table.cancel, w)

    def move(self, who: str, w: W, pool: int = 0) -> Callable[[], Any]:
        """mod_delayed_work(w, 0): the instance moves to the tail (a new token on the inbox)."""

        def m(w: W) -> tuple[Any, Any]:
            old, n = self.table.move(w)
            if n is not None:
                self.made[id(n)] = w
                self.inboxes[pool].append(n)
            return old, n

        return lambda: self.run.op(who, "move", m, w)

    def disable(self, who: str, w: W) -> Callable[[], Any]:
        return lambda: self.run.op(who, "disable", self.table.disable, w)

    def enable(self, who: str, w: W) -> Callable[[], Any]:
        return lambda: self.run.op(who, "enable", self.table.enable, w)

    def pending(self, who: str, w: W) -> Callable[[], Any]:
        return lambda: self.run.op(who, "pending", self.table.is_pending, w)

    def owner(self, who: str, pool: int = 0) -> Callable[[], None]:
        """A pool's loop: take every entry of its inbox, in order."""

        def body() -> None:
            for n in entries(self.inboxes[pool]):
                self.take(who, n)

        return body

    def drain(self) -> None:
        """After the run: the pools take what is left (no scheduling: one thread)."""
        for dq in self.inboxes:
            for n in entries(dq):
                self.take("end", n)

    def take(self, who: str, n: Any) -> None:
        # The model's take is (work, token) -> started?; the table's hands back the work.
        w = self.made[id(n)]
        self.run.op(who, "take", lambda w, n: self.table.take(n) is w, w, n)


def _seq(*ops: Callable[[], Any]) -> Callable[[], None]:
    def body() -> None:
        for op in ops:
            op()

    return body


def _acyclic(w: W) -> None:
    """Walk ``w``'s chain from its hint without the tracing; a token met twice is a cycle (a
    wrong protocol can make one, and the table's own walks would then never end)."""
    seen: set[int] = set()
    t = w._hint
    while t is not None:
        assert id(t) not in seen, f"the chain of {w} has a cycle"
        seen.add(id(t))
        slots = list(list.__iter__(t))
        if len(slots) > 1 and type(slots[1]) is _Moved:
            t = slots[1].next
        else:
            t = next((x for x in slots if isinstance(x, list)), None)


def _check(setups: list[_Setup]) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        s = setups[-1]
        s.drain()
        for w in s.works:
            _acyclic(w)
        left = [w for w in s.works if s.table.is_pending(w)]
        assert not left, f"left pending with no entry: {left}"
        assert not dict(s.fresh), f"first-queue entries left behind: {dict(s.fresh)}"
        assert linearizable(run.history), "not linearizable"

    return check


Scenario = Callable[[Run, type[PendingTable], list[_Setup]], None]


def cancel_requeue_vs_take(run: Run, cls: type[PendingTable], out: list[_Setup]) -> None:
    """The race the throwaway prototype lost: a cancel and a re-queue while the loop takes."""
    s = _Setup(run, cls)
    out.append(s)
    w = s.work("w")
    s.queue("setup", w)()
    run.actor("loop", s.owner("loop"))
    run.actor("A", _seq(s.cancel("A", w), s.queue("A", w)))
    run.actor("B", _seq(s.queue("B", w), s.cancel("B", w)))


def handler_queues_on_the_loop(run: Run, cls: type[PendingTable], out: list[_Setup]) -> None:
    """A signal handler on the loop's thread queues the item while the loop takes it."""
    s = _Setup(run, cls)
    out.append(s)
    w = s.work("w")
    s.queue("setup", w)()
    run.actor("loop", s.owner("loop"), handlers=[s.queue("sig", w), s.pending("sig", w)])
    run.actor("A", _seq(s.cancel("A", w), s.queue("A", w)))


def handler_cancels_on_the_loop(run: Run, cls: type[PendingTable], out: list[_Setup]) -> None:
    """A signal handler on the loop's thread cancels and re-queues while the loop takes."""
    s = _Setup(run, cls)
    out.append(s)
    w = s.work("w")
    s.queue("setup", w)()
    run.actor("loop", s.owner("loop"), handlers=[s.cancel("sig", w), s.queue("sig", w)])
    run.actor("A", _seq(s.cancel("A", w), s.queue("A", w)))


def handler_in_a_cancel(run: Run, cls: type[PendingTable], out: list[_Setup]) -> None:
    """A handler that interrupts a cancel of the same item on the same thread."""
    s = _Setup(run, cls)
    out.append(s)
    w = s.work("w")
    s.queue("setup", w)()
    run.actor("A", s.cancel("A", w), handlers=[s.cancel("sig", w), s.queue("sig", w)])
    run.actor("B", _seq(s.queue("B", w), s.pending("B", w)))
    run.actor("loop", s.owner("loop"))


def two_pools(run: Run, cls: type[PendingTable], out: list[_Setup]) -> None:
    """A stale entry on one pool, the live one on another: two loops take the same item."""
    s = _Setup(run, cls, pools=2)
    out.append(s)
    w = s.work("w")
    s.queue("setup", w, pool=0)()
    run.actor("loop0", s.owner("loop0", 0))
    run.actor("loop1", s.owner("loop1", 1))
    run.actor("A", _seq(s.cancel("A", w), s.queue("A", w, pool=1), s.cancel("A", w)))


def queue_races(run: Run, cls: type[PendingTable], out: list[_Setup]) -> None:
    """R1: three threads queue one idle item; a handler queues it too."""
    s = _Setup(run, cls)
    out.append(s)
    w = s.work("w")
    run.actor("A", s.queue("A", w), handlers=[s.queue("sig", w)])
    run.actor("B", s.queue("B", w))
    run.actor("C", _seq(s.cancel("C", w), s.queue("C", w)))
    run.actor("loop", s.owner("loop"))


def fresh_item_races(run: Run, cls: type[PendingTable], out: list[_Setup]) -> None:
    """The first queue of an item (no chain yet) against a cancel and re-queue; a handler on the
    first queue's thread cancels the item while that queue is half done."""
    s = _Setup(run, cls)
    out.append(s)
    w = s.work("w")
    run.actor("A", s.queue("A", w), handlers=[s.cancel("sig", w)])
    run.actor("B", _seq(s.queue("B", w), s.cancel("B", w)))
    run.actor("loop", s.owner("loop"))


def disable_races(run: Run, cls: type[PendingTable], out: list[_Setup]) -> None:
    """Disable and enable against queue and take: a disabled item refuses every queue, and a
    disable that finds an instance pending cancels exactly it."""
    s = _Setup(run, cls)
    out.append(s)
    w = s.work("w")
    s.queue("setup", w)()
    run.actor("loop", s.owner("loop"))
    run.actor("A", _seq(s.disable("A", w), s.enable("A", w)))
    run.actor("B", _seq(s.queue("B", w), s.disable("B", w), s.enable("B", w)))


def handler_disables_on_the_loop(run: Run, cls: type[PendingTable], out: list[_Setup]) -> None:
    """A handler on the loop's thread disables and queues the item while the loop takes it and
    another thread cancels, re-queues and enables it."""
    s = _Setup(run, cls)
    out.append(s)
    w = s.work("w")
    s.queue("setup", w)()
    run.actor("loop", s.owner("loop"), handlers=[s.disable("sig", w), s.queue("sig", w)])
    run.actor("A", _seq(s.cancel("A", w), s.queue("A", w), s.enable("A", w)))


def disable_a_fresh_item(run: Run, cls: type[PendingTable], out: list[_Setup]) -> None:
    """The first op on an item is a disable, racing the first queue; then both undo."""
    s = _Setup(run, cls)
    out.append(s)
    w = s.work("w")
    run.actor("A", _seq(s.disable("A", w), s.enable("A", w)), handlers=[s.queue("sig", w)])
    run.actor("B", _seq(s.queue("B", w), s.pending("B", w)))
    run.actor("loop", s.owner("loop"))


def move_races(run: Run, cls: type[PendingTable], out: list[_Setup]) -> None:
    """R9: a move (mod_delayed_work) of a pending item against a cancel and re-queue, the take,
    and a handler on the loop's thread that moves it too."""
    s = _Setup(run, cls)
    out.append(s)
    w = s.work("w")
    s.queue("setup", w)()
    run.actor("loop", s.owner("loop"), handlers=[s.move("sig", w)])
    run.actor("A", s.move("A", w))
    run.actor("B", _seq(s.cancel("B", w), s.queue("B", w)))


def move_and_disable(run: Run, cls: type[PendingTable], out: list[_Setup]) -> None:
    """Moves against a disable and enable: a disabled item is never moved into pending."""
    s = _Setup(run, cls)
    out.append(s)
    w = s.work("w")
    s.queue("setup", w)()
    run.actor("loop", s.owner("loop"))
    run.actor("A", _seq(s.move("A", w), s.move("A", w)))
    run.actor("B", _seq(s.disable("B", w), s.enable("B", w)))


def move_a_fresh_item(run: Run, cls: type[PendingTable], out: list[_Setup]) -> None:
    """The first op on an item is a move (mod of an idle item), racing the first queue."""
    s = _Setup(run, cls)
    out.append(s)
    w = s.work("w")
    run.actor("A", s.move("A", w), handlers=[s.cancel("sig", w)])
    run.actor("B", _seq(s.queue("B", w), s.move("B", w)))
    run.actor("loop", s.owner("loop"))


SCENARIOS: list[Scenario] = [
    cancel_requeue_vs_take,
    handler_queues_on_the_loop,
    handler_cancels_on_the_loop,
    handler_in_a_cancel,
    two_pools,
    queue_races,
    fresh_item_races,
    disable_races,
    handler_disables_on_the_loop,
    disable_a_fresh_item,
    move_races,
    move_and_disable,
    move_a_fresh_item,
]


def _explore(scenario: Scenario, cls: type[PendingTable], preemptions: int) -> int:
    setups: list[_Setup] = []
    return explore(
        lambda run: scenario(run, cls, setups),
        _check(setups),
        preemptions=preemptions,
    )


# Preemptions per scenario: 2, but 1 for the four-actor queue_races (its races are one
# test-and-set against another, which one preemption covers).
_BOUND = {queue_races: 1}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_every_interleaving_is_linearizable(scenario: Scenario) -> None:
    runs = _explore(scenario, PendingTable, preemptions=_BOUND.get(scenario, 2))
    assert runs > 50  # the bound leaves real choice: the scenario is not trivially serial


# -- mutants: a step of the protocol weakened; each must be caught ------------------------------


class _CheckThenSet(PendingTable):
    """A take that looks whether the fate is open, then appends, and trusts its look: a cancel
    that lands between the two wins too."""

    @staticmethod
    def take(token: list[Any]) -> Any:
        if len(token) != 1:
            return None
        token.append(_RUN)
        work = token[0]
        token[0] = None
        return work


class _LastWins(PendingTable):
    """A queue that reads the *last* list of the log as the winner, not the first."""

    def _link(self, work: Any, t: Any, n: list[Any], hint: bool) -> Any:
        while True:
            if len(t) == 1:
                return None
            s = _next(t)
            if s is None:
                t.append(n)
                if t[len(t) - 1] is n:
                    if hint:
                        work._tok = n
                    return n
                s = _next(t)
            t = s


class _TrustFirst(PendingTable):
    """A first queue that trusts its ``_fresh`` entry without looking at the hint again."""

    def _make(self, work: Any) -> Any:
        if work._tok is None:
            n = self._token(work)
            t = self._fresh.setdefault(id(work), n)
            if t is n:
                work._tok = n
                self._fresh.pop(id(work), None)
                return n
        return super()._make(work)


class _EveryoneHints(PendingTable):
    """The first version: a queue that walked from another's first entry stores the hint too, so
    the root's maker, looking at the hint again, takes its own root for a leftover."""

    def _link(self, work: Any, t: Any, n: list[Any], hint: bool) -> Any:
        return super()._link(work, t, n, True)


class _HintOnly(PendingTable):
    """A cancel that trusts the hint to be the newest token and does not walk on from it."""

    def cancel(self, work: Any) -> Any:
        t = self._root(work)
        if t is None or len(t) != 1:
            return None
        mine = _Mark()
        t.append(mine)
        return t if t[1] is mine else None


class _QueueIgnoresDisable(PendingTable):
    """A queue that links after a disabled token as after any decided one."""

    def _link(self, work: Any, t: Any, n: list[Any], hint: bool) -> Any:
        while True:
            if len(t) == 1:
                return None
            s = _next(t)
            if s is None:
                t.append(n)
                s = _next(t)
                if s is n:
                    if hint:
                        work._tok = n
                    return n
                n = self._token(work)
            t = s


class _DisableInTwoSteps(PendingTable):
    """A disable of a pending item that cancels it, then links a disabled token: two decisions,
    and a queue can link its own instance between them."""

    def disable(self, work: Any) -> Any:
        cancelled = self.cancel(work)
        t, hint = self._root(work)
        if t is None:
            t, hint = self._start(work, [None, _Disabled(1)])
            if t is None:
                return cancelled
        while True:
            if len(t) == 1:
                return cancelled  # a queue came between: this disable leaves it pending
            s = _next(t)
            if s is None:
                f = t[1]
                n = [None, _Disabled(f.depth + 1 if type(f) is _Disabled else 1)]
                t.append(n)
                s = _next(t)
                if s is n:
                    if hint:
                        work._tok = n
                    return cancelled
            t = s


class _MoveInTwoSteps(PendingTable):
    """A move that cancels the pending instance, then queues a new one: two decisions, and a
    queue can make its own instance between them (the move then answers as if nothing were
    pending before it)."""

    def move(self, work: Any) -> tuple[Any, Any]:
        old = self.cancel(work)
        return old, self.acquire(work)


class _MoveTrustsItsLook(PendingTable):
    """A move that reads the token pending, then appends its fate without looking whether its
    own append won: a take or cancel that landed in between wins too."""

    def move(self, work: Any) -> tuple[Any, Any]:
        t = self.pending(work)
        if t is None:
            return None, self.acquire(work)
        n = self._token(work)
        t.append(_Moved(n))
        t[0] = None
        work._tok = n
        return t, n


@pytest.mark.parametrize(
    ("mutant", "scenario"),
    [
        (_CheckThenSet, cancel_requeue_vs_take),
        (_LastWins, queue_races),
        (_TrustFirst, queue_races),
        (_EveryoneHints, queue_races),
        (_HintOnly, cancel_requeue_vs_take),
        (_QueueIgnoresDisable, disable_races),
        (_DisableInTwoSteps, disable_races),
        (_MoveInTwoSteps, move_races),
        (_MoveTrustsItsLook, move_races),
    ],
    ids=[
        "check-then-set-take",
        "last-append-wins",
        "trust-first-entry",
        "everyone-hints",
        "hint-only-cancel",
        "queue-ignores-disable",
        "disable-in-two-steps",
        "move-in-two-steps",
        "move-trusts-its-look",
    ],
)
def test_the_checker_catches_each_weakened_step(
    mutant: type[PendingTable], scenario: Scenario
) -> None:
    with pytest.raises(AssertionError):
        _explore(scenario, mutant, preemptions=_BOUND.get(scenario, 2))


# -- items that define equality -----------------------------------------------------------------


class _Equal:
    """An item whose class defines ``__eq__`` (so it is unhashable) and calls all its instances
    equal: a ``Work`` subclass may. The table must run no code of it and keep them apart."""

    def __init__(self) -> None:
        self._tok: Any = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Equal)

    __hash__ = None  # type: ignore[assignment]


def test_items_that_define_equality_are_told_apart_by_identity() -> None:
    table = PendingTable()
    inbox: list[Any] = []
    a, b = _Equal(), _Equal()
    assert a == b
    assert table.queue(a, inbox) and table.queue(b, inbox)  # two items: both queue (R1 is per item)
    assert not table.queue(a, inbox)
    assert table.is_pending(a) and table.is_pending(b)
    assert table.cancel(b) is not None and not table.is_pending(b) and table.is_pending(a)
    assert table.disable(a) is not None and not table.queue(a, inbox)
    assert table.enable(a) is True and table.queue(a, inbox)
    assert [PendingTable.take(t) for t in inbox] == [None, None, a]  # the disable, the cancel
    assert not table._fresh  # every first-queue entry was removed again


# -- the cost script's floors run every item exactly once ---------------------------------------


def _load_floor() -> Any:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "pending_floor.py"
    spec = importlib.util.spec_from_file_location("pending_floor", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("mode", ["flag", "table", "inline", "acct", "lean"])
def test_the_cost_scripts_floor_runs_each_queued_item_once(mode: str) -> None:
    """``benchmarks/pending_floor.py`` compares floors that must do the same job: a burst of
    items, queued again after they ran (the inlined fast path), each run exactly once."""
    import asyncio

    pf = _load_floor()
    runs = [0] * 200

    def make(i: int) -> Any:
        async def fn() -> None:
            runs[i] += 1

        return pf.Item(fn)

    async def main() -> None:
        f = pf._Floor(mode)
        tasks = await f.start()
        items = [make(i) for i in range(len(runs))]
        for burst in range(1, 4):
            assert all(f.queue(it) for it in items)
            assert not any(f.queue(it) for it in items)  # R1: each is pending already
            await f.flush()
            assert runs == [burst] * len(runs)
            if mode == "lean":
                assert sum(w.done for w in f.workers) == burst * len(runs)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def test_the_cross_thread_floor_runs_a_burst_from_another_thread_once_each() -> None:
    """The cross-thread floor's producer thread queues every item once (R1 answers False for a
    second queue while it is pending), and the loop runs each exactly once, woken without a lost
    wake-up (the burst would time out)."""
    import asyncio
    import threading

    pf = _load_floor()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        c = pf._Cross(loop)
        tasks = [asyncio.create_task(c.worker()) for _ in range(4)]
        await asyncio.sleep(0)
        runs = [0] * 3000
        done = loop.create_future()

        def make(i: int) -> Any:
            def fn() -> None:
                runs[i] += 1
                if sum(runs) == len(runs):
                    done.set_result(None)

            return pf.Item(fn)

        items = [make(i) for i in range(len(runs))]
        answers: list[bool] = []

        def produce() -> None:
            for it in items:
                answers.append(c.queue(it))

        th = threading.Thread(target=produce)
        th.start()
        await asyncio.wait_for(done, 30)
        th.join()
        assert all(answers) and runs == [1] * len(runs)
        assert c.queue(items[0]) and not c.queue(items[0])  # pending again: the second is False
        assert (await pf._cross_burst("floor", 2000)) > 0
        assert (await pf._cross_burst("cst", 2000)) > 0
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
