"""Systematic interleaving of real code, one shared step at a time.

The code under test runs unchanged; only its shared containers are swapped for traced ones
(:class:`TracedDict`, :class:`TracedDeque`) whose every operation first parks the calling thread
at a *point* until the scheduler lets exactly that thread take its next step. So at any moment one
thread runs, between two points, and a schedule (the sequence of threads chosen) determines the
run completely. Each thread of a scenario is a greenlet with a stack of its own: a step is one
switch there and one back (about 1 us), where two OS threads handing off through a lock cost
about 50 us a round trip on this machine. Between two points the code is the same either way:
what the protocol relies on is that each container operation is one step.

:func:`explore` tries every schedule with at most ``preemptions`` switches away from a thread
that could have gone on (CHESS's preemption bounding: most concurrency bugs need one or two),
depth first, replaying each from scratch.

A signal handler is modelled as it happens in CPython: at a point of a thread, before its next
step, the scheduler may run a *handler* op on that very thread, to completion or until it too
parks at a point of its own (other threads may run meanwhile, as on a GIL switch); the
interrupted op resumes only after it returns. Each handler is injected at most once per run.

A thread that waits for another (``spin``) parks as *blocked* and is not chosen until a traced
claim changes; a state where every live thread is blocked is reported as a deadlock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from greenlet import getcurrent, greenlet

__all__ = (
    "Deadlock",
    "Event",
    "Run",
    "TracedDeque",
    "TracedDict",
    "TracedList",
    "entries",
    "explore",
)


class Deadlock(Exception):
    """Every live thread of a run waits for another."""


@dataclass
class Event:
    """One op of a history: who, what, result, and when it began and ended (global ticks)."""

    actor: str
    op: str
    args: tuple[Any, ...]
    start: int
    end: int = -1
    result: Any = None


_CHOSEN = object()
MAX_STEPS = 5_000  # a run longer than this has an op that loops (a livelock, not a schedule)


class _Actor:
    def __init__(self, run: Run, name: str, body: Callable[[], None], handlers: list[Any]):
        self.run = run
        self.name = name
        self.body = body
        self.handlers = list(handlers)  # ops that may be injected at this actor's points
        self.parked = False
        self.blocked = False
        self.done = False
        self.depth = 0  # handler nesting
        self.order: Any = None  # what the scheduler told it: _CHOSEN or a handler to run
        self.error: BaseException | None = None
        # Its own stack, switched to by the scheduler's (the greenlet's parent): a step is one
        # switch each way, with no OS thread to wake.
        self.glet = greenlet(self._main)

    def _main(self) -> None:
        try:
            self.point()  # wait for the first turn
            self.body()
        except BaseException as exc:  # reported by the scheduler
            self.error = exc
        finally:
            self.done = True
        # returning switches to the scheduler

    def point(self, *, blocked: bool = False) -> None:
        if self.run._over:
            return  # the run was abandoned: let the body unwind without a scheduler
        while True:
            self.blocked = blocked
            self.parked = True
            self.run._sched.switch()  # back here when the scheduler chooses this actor
            self.parked = False
            order = self.order
            if order is _CHOSEN:
                return
            # A handler lands here, before the step this thread was about to take.
            self.depth += 1
            try:
                order()
            finally:
                self.depth -= 1
            if blocked:
                return  # a spin: it looks again (the claim may be gone since it parked)


class Run:
    """One run of a scenario under a given schedule prefix."""

    def __init__(self, prefix: list[int]) -> None:
        self.prefix = prefix
        self.choices: list[tuple[int, int]] = []  # (index chosen, number of options)
        self.preempted = 0
        self.tick = 0
        self.history: list[Event] = []
        self.actors: list[_Actor] = []
        self._by_glet: dict[Any, _Actor] = {}
        self._sched: Any = None  # the scheduler's greenlet, set by go()
        self._over = False
        self._last: _Actor | None = None

    # -- what the code under test calls (through the traced containers) ---------------------

    def point(self, *, blocked: bool = False) -> None:
        actor = self._by_glet.get(getcurrent())
        if actor is not None:
            actor.point(blocked=blocked)

    def claims_changed(self) -> None:
        for a in self.actors:
            a.blocked = False

    def op(self, actor: str, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` as one op of the history."""
        ev = Event(actor, name, args, self._tick())
        self.history.append(ev)
        ev.result = fn(*args)
        ev.end = self._tick()
        return ev.result

    def _tick(self) -> int:
        self.tick += 1
        return self.tick

    # -- the scheduler ----------------------------------------------------------------------

    def actor(self, name: str, body: Callable[[], None], handlers: list[Any] = ()) -> None:  # type: ignore[assignment]
        a = _Actor(self, name, body, handlers)
        self.actors.append(a)
        self._by_glet[a.glet] = a

    def go(self, preemptions: int) -> None:
        try:
            self._go(preemptions)
        finally:
            # A run cut short (an error, a deadlock) leaves actors suspended at a point: unwind
            # them now, with points that no longer park, rather than in a garbage collection.
            self._over = True
            for a in self.actors:
                if not a.glet.dead:
                    try:
                        a.glet.throw()
                    except BaseException:  # the run's own error is what counts
                        pass

    def _go(self, preemptions: int) -> None:
        self._sched = getcurrent()
        for a in self.actors:
            a.glet.parent = self._sched
            a.glet.switch()  # it parks at its first point
        while True:
            live = [a for a in self.actors if not a.done]
            if not live:
                break
            for a in live:
                if a.error is not None:
                    raise a.error
            if len(self.choices) > MAX_STEPS:
                raise Deadlock(f"more than {MAX_STEPS} steps in one run: an op never ends")
            options = self._options(live, preemptions)
            if not options:
                raise Deadlock("every live thread is blocked: " + ", ".join(a.name for a in live))
            k = len(self.choices)
            i = self.prefix[k] if k < len(self.prefix) else 0
            self.choices.append((i, len(options)))
            actor, order, preempts = options[i]
            self.preempted += preempts
            if order is not _CHOSEN:
                actor.handlers.remove(order)
            self._last = actor
            actor.order = order
            actor.parked = False
            actor.glet.switch()  # back at its next point, or at its end
        for a in self.actors:
            if a.error is not None:
                raise a.error

    def _options(self, live: list[_Actor], preemptions: int) -> list[tuple[_Actor, Any, int]]:
        # Going on with the thread that just ran costs nothing: it comes first. Switching away
        # from it while it could go on is a preemption; a handler landing is one too.
        last = self._last
        cont = last is not None and not last.done and not last.blocked
        opts: list[tuple[_Actor, Any, int]] = []
        if cont:
            opts.append((last, _CHOSEN, 0))  # type: ignore[arg-type]
        budget = self.preempted < preemptions
        for a in live:
            if a.blocked:
                continue
            if a is not last or not cont:
                if cont and not budget:
                    continue
                opts.append((a, _CHOSEN, 1 if cont else 0))
        if budget:
            for a in live:
                if not a.blocked and a.depth == 0:
                    opts.extend((a, h, 1) for h in a.handlers)
        return opts


def explore(
    scenario: Callable[[Run], None],
    check: Callable[[Run], None],
    *,
    preemptions: int = 2,
    limit: int = 200_000,
) -> int:
    """Run ``scenario`` under every schedule within the bound and ``check`` each run.

    Returns: the number of runs. Raises: whatever ``check`` raises (an AssertionError that
    names the schedule), :class:`Deadlock`.
    """
    prefix: list[int] = []
    runs = 0
    while True:
        run = Run(prefix)
        scenario(run)
        try:
            run.go(preemptions)
            check(run)
        except BaseException as exc:
            raise AssertionError(
                f"schedule {[c for c, _ in run.choices]}: {exc}\n"
                + "\n".join(map(str, run.history))
            ) from exc
        runs += 1
        if runs >= limit:
            raise AssertionError(f"more than {limit} schedules: shrink the scenario")
        # Depth first: the last choice with an alternative left, everything after it reset.
        choices = run.choices
        while choices and choices[-1][0] + 1 >= choices[-1][1]:
            choices.pop()
        if not choices:
            return runs
        prefix = [c for c, _ in choices[:-1]] + [choices[-1][0] + 1]


class TracedDict(dict):  # type: ignore[type-arg]
    """A dict whose every operation is one step: the calling thread parks first."""

    def __init__(self, run: Run, *, claims: bool = False) -> None:
        super().__init__()
        self._run = run
        self._claims = claims

    def _changed(self) -> None:
        if self._claims:
            self._run.claims_changed()

    def get(self, key: Any, default: Any = None) -> Any:
        self._run.point()
        return super().get(key, default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self._run.point()
        r = super().setdefault(key, default)
        if r is default:
            self._changed()
        return r

    def pop(self, key: Any, *default: Any) -> Any:
        self._run.point()
        r = super().pop(key, *default)
        self._changed()
        return r

    def __setitem__(self, key: Any, value: Any) -> None:
        self._run.point()
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key: Any) -> None:
        self._run.point()
        super().__delitem__(key)
        self._changed()

    def __contains__(self, key: object) -> bool:
        self._run.point()
        return super().__contains__(key)


class TracedList(list):  # type: ignore[type-arg]
    """A list whose ``append``, ``len`` and index load and store are one step each."""

    def __init__(self, run: Run, *items: Any) -> None:
        super().__init__(items)
        self._run = run

    def append(self, x: Any) -> None:
        self._run.point()
        super().append(x)

    def __len__(self) -> int:
        self._run.point()
        return super().__len__()

    def __getitem__(self, i: Any) -> Any:
        self._run.point()
        return super().__getitem__(i)

    def __setitem__(self, i: Any, x: Any) -> None:
        self._run.point()
        super().__setitem__(i, x)

    def __repr__(self) -> str:
        return f"<token {id(self) % 10000}>"


class TracedDeque(deque):  # type: ignore[type-arg]
    """A deque whose ``append``, ``extend`` and ``popleft`` are one step each."""

    def __init__(self, run: Run) -> None:
        super().__init__()
        self._run = run

    def append(self, x: Any) -> None:
        self._run.point()
        super().append(x)

    def extend(self, it: Any) -> None:
        self._run.point()
        super().extend(it)

    def popleft(self) -> Any:
        self._run.point()
        return super().popleft()


def entries(dq: deque[Any]) -> Iterator[Any]:
    """Pop the entries of an inbox one by one, as a pool's loop does (single consumer)."""
    while dq:
        yield dq.popleft()
