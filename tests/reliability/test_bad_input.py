"""Bad input (SPEC §2 "Errors", README "Errors"): every public call with wrong types, wrong
values, destroyed or foreign objects, and from the wrong context, gets a clear exception that
names the problem — and afterwards every other queued item still runs, exactly once.

Each test first queues a set of bystander items (some running, blocked on an event, some waiting
behind them, some armed), then fires its barrage of bad calls, then lets the bystanders go and
checks that each ran exactly once and that the library's side tables are empty. The barrage is a
table: the call, the exception type, and the words its message must contain (the call's name,
and the argument or the queue and the work it is about).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

import aioworkqueue as aw
from aioworkqueue import _barrier, _lock

from ._support import GUARD, guarded, runtime_threads, wait_until

Case = tuple[str, Callable[[], Any], type[BaseException], tuple[str, ...]]


def noop(w: aw.Work) -> None:
    pass


async def anoop(w: aw.Work) -> None:
    pass


class Evil(aw.DelayedWork):
    """A Work subclass whose ==, hash and bool raise: the library must never rely on them."""

    __slots__ = ("runs",)

    def __init__(self, func: aw.WorkFunc) -> None:
        super().__init__(func)
        self.runs = 0

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("Evil.__eq__ called")

    def __hash__(self) -> int:
        raise RuntimeError("Evil.__hash__ called")

    def __bool__(self) -> bool:
        raise RuntimeError("Evil.__bool__ called")


def count(w: Evil) -> None:
    w.runs += 1


class Bystanders:
    """Items queued before the barrage; all must run exactly once after it."""

    def __init__(self, wq: aw.Workqueue, cpus: tuple[int, ...] = (0,)) -> None:
        self.wq = wq
        self.gate = threading.Event()
        self.runs: dict[int, int] = {}
        self.mu = threading.Lock()
        self.items: list[aw.Work] = []
        self.blocked = 0
        self.started = threading.Event()

        async def blocked(w: aw.Work) -> None:
            with self.mu:
                self.blocked += 1
            self.started.set()
            while not self.gate.is_set():
                await asyncio.sleep(0.001)
            self.ran(w)

        for k in range(12):
            fn = blocked if k < 2 else self.ran if k % 2 else self.aran
            w: aw.Work = aw.DelayedWork(fn) if k % 3 == 0 else aw.Work(fn)
            self.items.append(w)
            cpu = cpus[k % len(cpus)]
            if k % 3 == 0 and k >= 2:
                assert aw.queue_delayed_work_on(cpu, wq, w, 0.001 * k)  # type: ignore[arg-type]
            else:
                assert aw.queue_work_on(cpu, wq, w)
        self.evil = Evil(count)  # type: ignore[arg-type]
        assert aw.queue_work(wq, self.evil)

    def ran(self, w: aw.Work) -> None:
        with self.mu:
            self.runs[id(w)] = self.runs.get(id(w), 0) + 1

    async def aran(self, w: aw.Work) -> None:
        await asyncio.sleep(0)
        self.ran(w)

    async def check(self) -> None:
        self.gate.set()
        for w in self.items:
            if isinstance(w, aw.DelayedWork):
                await guarded(aw.flush_delayed_work(w), "a bystander")
        await guarded(aw.flush_workqueue(self.wq), "the bystanders")
        assert [self.runs.get(id(w), 0) for w in self.items] == [1] * len(self.items)
        assert self.evil.runs == 1
        assert not any(aw.work_busy(w) for w in self.items)
        assert not _barrier._WAITERS, "flush waiters left behind"
        assert not _lock.INTR.ops and not _lock._REDO, "interrupt replays left behind"


async def run_cases(cases: list[Case]) -> list[str]:
    """Make every call; return what did not raise as expected. Awaitables are awaited in the
    caller's own task (``asyncio.timeout``, not ``wait_for``: R15 looks at the current task)."""
    wrong = []
    for label, call, exc_type, words in cases:
        try:
            r = call()
            if isinstance(r, Awaitable):
                async with asyncio.timeout(2.0):
                    r = await r
        except exc_type as exc:
            msg = str(exc)
            missing = [w for w in words if w.lower() not in msg.lower()]
            if missing:
                wrong.append(f"{label}: message {msg!r} does not name {missing}")
        except BaseException as exc:
            wrong.append(f"{label}: raised {type(exc).__name__}: {exc} (not {exc_type.__name__})")
        else:
            wrong.append(f"{label}: returned {r!r}, no {exc_type.__name__}")
    return wrong


def bad_type_and_value_cases(
    wq: aw.Workqueue, bh: aw.Workqueue, w: aw.Work, dw: aw.DelayedWork, cpu_limit: int
) -> list[Case]:
    T, V, E = TypeError, ValueError, aw.WorkqueueError
    cases: list[Case] = [
        # -- items
        ("Work(None)", lambda: aw.Work(None), T, ("func",)),  # type: ignore[arg-type]
        ("Work(1)", lambda: aw.Work(1), T, ("callable",)),  # type: ignore[arg-type]
        ("DelayedWork('x')", lambda: aw.DelayedWork("x"), T, ("callable",)),  # type: ignore[arg-type]
        # -- allocation
        ("alloc_workqueue(1)", lambda: aw.alloc_workqueue(1), T, ("alloc_workqueue", "name")),  # type: ignore[arg-type]
        ("alloc flags str", lambda: aw.alloc_workqueue("n", "x"), T, ("flags", "'n'")),  # type: ignore[arg-type]
        ("alloc flags bool", lambda: aw.alloc_workqueue("n", True), T, ("flags",)),
        ("alloc flags unknown", lambda: aw.alloc_workqueue("n", 1 << 30), V, ("flags", "'n'")),
        ("alloc flags -1", lambda: aw.alloc_workqueue("n", -1), V, ("flags",)),
        (
            "alloc BH|UNBOUND",
            lambda: aw.alloc_workqueue("n", aw.WQ.BH | aw.WQ.UNBOUND),
            V,
            ("WQ.BH", "'n'"),
        ),
        ("alloc max_active -1", lambda: aw.alloc_workqueue("n", 0, -1), V, ("max_active", "'n'")),
        ("alloc max_active 2049", lambda: aw.alloc_workqueue("n", 0, 2049), V, ("max_active",)),
        ("alloc max_active 1.5", lambda: aw.alloc_workqueue("n", 0, 1.5), T, ("max_active",)),  # type: ignore[arg-type]
        ("alloc max_active True", lambda: aw.alloc_workqueue("n", 0, True), T, ("max_active",)),
        (
            "alloc exception_handler 1",
            lambda: aw.alloc_workqueue("n", exception_handler=1),  # type: ignore[arg-type]
            T,
            ("exception_handler",),
        ),
        ("ordered name None", lambda: aw.alloc_ordered_workqueue(None), T, ("name",)),  # type: ignore[arg-type]
        ("ordered BH", lambda: aw.alloc_ordered_workqueue("n", aw.WQ.BH), V, ("BH", "'n'")),
        ("create_workqueue(1)", lambda: aw.create_workqueue(1), T, ("name",)),  # type: ignore[arg-type]
        (
            "create_singlethread_workqueue(None)",
            lambda: aw.create_singlethread_workqueue(None),  # type: ignore[arg-type]
            T,
            ("name",),
        ),
        # -- queueing: wrong types
        ("queue_work(None, w)", lambda: aw.queue_work(None, w), T, ("queue_work", "Workqueue")),  # type: ignore[arg-type]
        ("queue_work(wq, None)", lambda: aw.queue_work(wq, None), T, ("queue_work", "Work")),  # type: ignore[arg-type]
        ("queue_work(w, wq) swapped", lambda: aw.queue_work(w, wq), T, ("queue_work",)),  # type: ignore[arg-type]
        ("queue_work(wq, 'w')", lambda: aw.queue_work(wq, "w"), T, ("Work", "'w'")),  # type: ignore[arg-type]
        ("queue_work(wq, print)", lambda: aw.queue_work(wq, print), T, ("Work",)),  # type: ignore[arg-type]
        ("wq.queue(None)", lambda: wq.queue(None), T, ("queue_work",)),  # type: ignore[arg-type]
        ("schedule_work(None)", lambda: aw.schedule_work(None), T, ("Work",)),  # type: ignore[arg-type]
        # -- cpus
        ("queue_work_on(-1)", lambda: aw.queue_work_on(-1, wq, w), V, ("queue_work_on", "cpu")),
        ("queue_work_on(limit)", lambda: aw.queue_work_on(cpu_limit, wq, w), V, ("cpu",)),
        ("queue_work_on(10**100)", lambda: aw.queue_work_on(10**100, wq, w), V, ("cpu",)),
        ("queue_work_on('0')", lambda: aw.queue_work_on("0", wq, w), T, ("cpu",)),  # type: ignore[arg-type]
        ("queue_work_on(True)", lambda: aw.queue_work_on(True, wq, w), T, ("cpu",)),
        ("queue_work_on(0.0)", lambda: aw.queue_work_on(0.0, wq, w), T, ("cpu",)),  # type: ignore[arg-type]
        ("queue_work_on(None)", lambda: aw.queue_work_on(None, wq, w), T, ("cpu",)),  # type: ignore[arg-type]
        (
            "queue_delayed_work_on(-1)",
            lambda: aw.queue_delayed_work_on(-1, wq, dw, 1),
            V,
            ("queue_delayed_work_on", "cpu"),
        ),
        ("mod_delayed_work_on('x')", lambda: aw.mod_delayed_work_on("x", wq, dw, 1), T, ("cpu",)),  # type: ignore[arg-type]
        # -- delayed items
        (
            "queue_delayed_work(plain Work)",
            lambda: aw.queue_delayed_work(wq, w, 1),  # type: ignore[arg-type]
            T,
            ("queue_delayed_work", "DelayedWork"),
        ),
        (
            "mod_delayed_work(plain Work)",
            lambda: aw.mod_delayed_work(wq, w, 1),
            T,
            ("DelayedWork",),
        ),  # type: ignore[arg-type]
        ("cancel_delayed_work(plain)", lambda: aw.cancel_delayed_work(w), T, ("DelayedWork",)),
        ("delayed_work_pending(plain)", lambda: aw.delayed_work_pending(w), T, ("DelayedWork",)),  # type: ignore[arg-type]
        ("flush_delayed_work(plain)", lambda: aw.flush_delayed_work(w), T, ("DelayedWork",)),  # type: ignore[arg-type]
        (
            "cancel_delayed_work_sync(plain)",
            lambda: aw.cancel_delayed_work_sync(w),
            T,
            ("DelayedWork",),
        ),
        ("schedule_delayed_work(dw, -1)", lambda: aw.schedule_delayed_work(dw, -1), V, ("delay",)),
        # -- the rest of the API: wrong types
        ("cancel_work(None)", lambda: aw.cancel_work(None), T, ("cancel_work", "Work")),  # type: ignore[arg-type]
        ("cancel_work_sync(None)", lambda: aw.cancel_work_sync(None), T, ("cancel_work_sync",)),  # type: ignore[arg-type]
        ("disable_work(1)", lambda: aw.disable_work(1), T, ("disable_work",)),  # type: ignore[arg-type]
        ("disable_work_sync(1)", lambda: aw.disable_work_sync(1), T, ("disable_work_sync",)),  # type: ignore[arg-type]
        ("enable_work(1)", lambda: aw.enable_work(1), T, ("enable_work",)),  # type: ignore[arg-type]
        (
            "enable_work(not disabled)",
            lambda: aw.enable_work(w),
            E,
            ("enable_work", "not disabled"),
        ),
        ("flush_work(None)", lambda: aw.flush_work(None), T, ("flush_work",)),  # type: ignore[arg-type]
        ("flush_workqueue(None)", lambda: aw.flush_workqueue(None), T, ("flush_workqueue",)),  # type: ignore[arg-type]
        ("flush_workqueue(w)", lambda: aw.flush_workqueue(w), T, ("Workqueue",)),  # type: ignore[arg-type]
        ("drain_workqueue('q')", lambda: aw.drain_workqueue("q"), T, ("drain_workqueue",)),  # type: ignore[arg-type]
        ("destroy_workqueue(1)", lambda: aw.destroy_workqueue(1), T, ("destroy_workqueue",)),  # type: ignore[arg-type]
        (
            "destroy_workqueue(system_wq)",
            lambda: aw.destroy_workqueue(aw.system_wq),
            E,
            ("destroy_workqueue", "events", "system"),
        ),
        ("work_pending(None)", lambda: aw.work_pending(None), T, ("work_pending",)),  # type: ignore[arg-type]
        ("work_busy(wq)", lambda: aw.work_busy(wq), T, ("work_busy",)),  # type: ignore[arg-type]
        ("current_work(1)", lambda: aw.current_work(1), T, ("current_work",)),  # type: ignore[call-arg]
        ("thaw_workqueues(1)", lambda: aw.thaw_workqueues(1), T, ("thaw_workqueues",)),  # type: ignore[call-arg]
        ("freeze_workqueues(1)", lambda: aw.freeze_workqueues(1), T, ("freeze_workqueues",)),  # type: ignore[call-arg]
        ("configure(max_workers=0)", lambda: aw.configure(max_workers=0), V, ("max_workers",)),
        ("configure(max_workers='x')", lambda: aw.configure(max_workers="x"), T, ("max_workers",)),  # type: ignore[arg-type]
        (
            "configure(max_workers=True)",
            lambda: aw.configure(max_workers=True),
            T,
            ("max_workers",),
        ),
        ("configure(bogus=1)", lambda: aw.configure(bogus=1), T, ("bogus",)),  # type: ignore[call-arg]
        ("wq.submit(1)", lambda: wq.submit(1), T, ("submit", "callable")),  # type: ignore[arg-type]
        ("bh.submit(async fn)", lambda: bh.submit(anoop, w), T, ("BH",)),
        (
            "queue_work(bh, async work)",
            lambda: aw.queue_work(bh, aw.Work(anoop)),
            T,
            ("BH", "bad-bh"),
        ),
        # -- the Runtime's arguments (nothing is started)
        ("Runtime(cpus=0)", lambda: aw.Runtime(cpus=0), V, ("cpus",)),
        ("Runtime(cpus='2')", lambda: aw.Runtime(cpus="2"), T, ("cpus",)),  # type: ignore[arg-type]
        ("Runtime(cpus=True)", lambda: aw.Runtime(cpus=True), T, ("cpus",)),
        ("Runtime(cpus=10**6)", lambda: aw.Runtime(cpus=10**6), V, ("cpus",)),
        ("Runtime(loop_factory='x')", lambda: aw.Runtime(1, "nope"), V, ("loop_factory",)),
        ("Runtime(loop_factory=1)", lambda: aw.Runtime(1, 1), V, ("loop_factory",)),  # type: ignore[arg-type]
        ("Runtime(pin='yes')", lambda: aw.Runtime(1, pin="yes"), T, ("pin",)),  # type: ignore[arg-type]
        ("Runtime(max_workers=0)", lambda: aw.Runtime(1, max_workers=0), V, ("max_workers",)),
        ("Runtime(max_workers=1.0)", lambda: aw.Runtime(1, max_workers=1.0), T, ("max_workers",)),  # type: ignore[arg-type]
        (
            "Runtime(exception_handler=1)",
            lambda: aw.Runtime(1, exception_handler=1),
            T,
            ("exception_handler",),
        ),  # type: ignore[arg-type]
        (
            "Runtime(shutdown_timeout=-1)",
            lambda: aw.Runtime(1, shutdown_timeout=-1),
            V,
            ("timeout",),
        ),
        (
            "Runtime(shutdown_timeout=nan)",
            lambda: aw.Runtime(1, shutdown_timeout=math.nan),
            V,
            ("timeout",),
        ),
        (
            "Runtime(shutdown_timeout='1')",
            lambda: aw.Runtime(1, shutdown_timeout="1"),
            T,
            ("timeout",),
        ),  # type: ignore[arg-type]
        (
            "Runtime(watchdog_thresh=0)",
            lambda: aw.Runtime(1, watchdog_thresh=0),
            V,
            ("watchdog_thresh",),
        ),
        (
            "Runtime(cpu_intensive_thresh=nan)",
            lambda: aw.Runtime(1, cpu_intensive_thresh=math.nan),
            V,
            ("cpu_intensive_thresh",),
        ),
        (
            "Runtime().shutdown(timeout='x')",
            lambda: aw.Runtime(1).shutdown(timeout="x"),
            T,
            ("timeout",),
        ),  # type: ignore[arg-type]
        (
            "Runtime().shutdown(timeout=-1)",
            lambda: aw.Runtime(1).shutdown(timeout=-1),
            V,
            ("timeout",),
        ),
    ]
    # -- delays, for each delayed call
    delays: list[tuple[object, type[BaseException]]] = [
        ("1", T),
        (None, T),
        (True, T),
        (Decimal("1"), T),
        (Fraction(1, 2), T),
        (1 + 0j, T),
        (-1, V),
        (-1e-9, V),
        (math.nan, V),
        (math.inf, V),
        (-math.inf, V),
    ]
    for name, fn in (
        ("queue_delayed_work", lambda d: aw.queue_delayed_work(wq, dw, d)),
        ("queue_delayed_work_on", lambda d: aw.queue_delayed_work_on(0, wq, dw, d)),
        ("mod_delayed_work", lambda d: aw.mod_delayed_work(wq, dw, d)),
        ("mod_delayed_work_on", lambda d: aw.mod_delayed_work_on(0, wq, dw, d)),
        ("wq.queue_delayed", lambda d: wq.queue_delayed(dw, d)),
        ("wq.mod_delayed", lambda d: wq.mod_delayed(dw, d)),
    ):
        for d, exc in delays:
            cases.append(
                (f"{name}(delay={d!r})", (lambda fn=fn, d=d: fn(d)), exc, ("delay", repr(d)))
            )
    return cases


def state_cases(destroyed: aw.Workqueue, w: aw.Work, dw: aw.DelayedWork) -> list[Case]:
    D = aw.WorkqueueDestroyedError
    words = ("destroyed", destroyed.name)
    return [
        ("queue_work(destroyed)", lambda: aw.queue_work(destroyed, w), D, ("queue_work", *words)),
        ("queue_work_on(0, destroyed)", lambda: aw.queue_work_on(0, destroyed, w), D, words),
        ("queue_delayed(destroyed)", lambda: aw.queue_delayed_work(destroyed, dw, 1), D, words),
        ("queue_delayed(destroyed, 0)", lambda: aw.queue_delayed_work(destroyed, dw, 0), D, words),
        ("mod_delayed(destroyed)", lambda: aw.mod_delayed_work(destroyed, dw, 1), D, words),
        ("destroyed.submit", lambda: destroyed.submit(print), D, words),
        ("destroyed.queue", lambda: destroyed.queue(w), D, words),
    ]


def assert_idle(*items: aw.Work) -> None:
    for w in items:
        assert aw.work_busy(w) == aw.WorkBusy(0), w


@pytest.fixture
def frozen_reset() -> Iterator[None]:
    yield
    aw.thaw_workqueues()
    aw.configure(max_workers=1024)


@pytest.mark.asyncio
async def test_embedded_bad_types_values_and_destroyed_objects(frozen_reset: None) -> None:
    wq = aw.alloc_workqueue("bad-input", 0, 4)
    bh = aw.alloc_workqueue("bad-bh", aw.WQ.BH)
    destroyed = aw.alloc_workqueue("bad-destroyed")
    destroyed.submit(print, end="")
    await guarded(aw.destroy_workqueue(destroyed), "destroy")
    by = Bystanders(wq)
    await guarded(asyncio.to_thread(by.started.wait, GUARD), "a blocked bystander")
    w, dw = aw.Work(noop), aw.DelayedWork(noop)
    cases = bad_type_and_value_cases(wq, bh, w, dw, cpu_limit=1) + state_cases(destroyed, w, dw)
    wrong = await run_cases(cases)
    assert not wrong, "\n".join(wrong)
    assert_idle(w, dw)  # no bad call left anything pending
    await by.check()
    assert wq.stats().failed == 0 and wq.stats().cancelled == 0
    assert len(cases) > 150
    await guarded(aw.destroy_workqueue(wq), "destroy")
    await guarded(aw.destroy_workqueue(bh), "destroy")


@pytest.mark.asyncio
async def test_embedded_calls_from_the_wrong_context_raise_and_change_nothing() -> None:
    """R15 in the embedded mode: barriers that would wait for their own caller; R14: queueing
    from outside onto a draining queue; and a second destroy returns at once."""
    wq = aw.alloc_workqueue("bad-context", 0, 2)
    ordered = aw.alloc_ordered_workqueue("bad-context-ordered")
    by = Bystanders(aw.alloc_workqueue("bad-context-bystanders", 0, 4))
    await guarded(asyncio.to_thread(by.started.wait, GUARD), "a blocked bystander")
    got: list[str] = []
    behind = aw.Work(noop)

    async def wrong(w: aw.Work) -> None:
        q = ordered if w is in_ordered else wq
        cases: list[Case] = [
            (
                "flush own queue",
                lambda: aw.flush_workqueue(q),
                aw.WorkqueueDeadlockError,
                (q.name,),
            ),
            (
                "drain own queue",
                lambda: aw.drain_workqueue(q),
                aw.WorkqueueDeadlockError,
                (q.name,),
            ),
            (
                "destroy own queue",
                lambda: aw.destroy_workqueue(q),
                aw.WorkqueueDeadlockError,
                (q.name,),
            ),
            ("flush_work(self)", lambda: aw.flush_work(w), aw.WorkqueueDeadlockError, ("itself",)),
            (
                "cancel_work_sync(self)",
                lambda: aw.cancel_work_sync(w),
                aw.WorkqueueDeadlockError,
                ("itself",),
            ),
            (
                "disable_work_sync(self)",
                lambda: aw.disable_work_sync(w),
                aw.WorkqueueDeadlockError,
                ("itself",),
            ),
        ]
        if q is ordered:
            assert aw.queue_work(ordered, behind)
            cases.append(
                (
                    "flush_work(item behind me, ordered)",
                    lambda: aw.flush_work(behind),
                    aw.WorkqueueDeadlockError,
                    ("behind", ordered.name),
                )
            )
        got.extend(await run_cases(cases))
        assert aw.cancel_work(behind) is (q is ordered)  # it is fine to cancel it

    in_wq, in_ordered = aw.Work(wrong), aw.Work(wrong)
    for q, item in ((wq, in_wq), (ordered, in_ordered)):
        assert aw.queue_work(q, item)
        await guarded(aw.flush_work(item), "the wrong-context item")
    assert not got, "\n".join(got)
    assert_idle(in_wq, in_ordered, behind)
    assert wq.stats().failed == 0 and ordered.stats().failed == 0
    assert aw.queue_work(wq, in_wq)  # not left disabled by the refused disable_work_sync
    await guarded(aw.flush_work(in_wq), "again")

    # R14: queueing from outside onto a draining queue is refused, naming queue and work.
    draining = aw.alloc_workqueue("bad-draining")
    hold = asyncio.Event()

    async def held(w: aw.Work) -> None:
        await hold.wait()

    assert aw.queue_work(draining, aw.Work(held))
    await asyncio.sleep(0)
    drain = asyncio.ensure_future(aw.drain_workqueue(draining))
    await asyncio.sleep(0)
    x = aw.Work(noop)
    wrong_drain = await run_cases(
        [
            (
                "queue on draining",
                lambda: aw.queue_work(draining, x),
                aw.WorkqueueDrainingError,
                ("draining", "bad-draining", "noop"),
            ),
            (
                "submit on draining",
                lambda: draining.submit(print),
                aw.WorkqueueDrainingError,
                ("draining",),
            ),
        ]
    )
    assert not wrong_drain, wrong_drain
    assert_idle(x)
    hold.set()
    await guarded(drain, "drain")
    second = asyncio.ensure_future(aw.destroy_workqueue(draining))
    await guarded(aw.destroy_workqueue(draining), "a second destroy while the first runs")
    await guarded(second, "destroy")
    await guarded(aw.destroy_workqueue(draining), "a third destroy")
    await by.check()
    for q in (wq, ordered, by.wq):
        await guarded(aw.destroy_workqueue(q), "destroy")


@pytest.mark.asyncio
async def test_runtime_bad_input_foreign_and_ended_objects() -> None:
    """On a Runtime: cpus beyond the pools, queues and items of an ended runtime, a second
    start, a Work subclass with broken ==/hash/bool on every path, a DelayedWork armed from
    another loop's thread; then the bystanders on both pools run."""
    loop_kind = "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"
    async with aw.Runtime(cpus=1, loop_factory=loop_kind, shutdown_timeout=GUARD):
        ended_wq = aw.alloc_workqueue("bad-ended", 0, 0)
        ended_ub = aw.alloc_workqueue("bad-ended-unbound", aw.WQ.UNBOUND, 0)
        assert aw.queue_work(ended_wq, aw.Work(noop))
        await guarded(aw.flush_workqueue(ended_wq), "flush")
    async with aw.Runtime(cpus=2, loop_factory=loop_kind, shutdown_timeout=GUARD) as rt:
        wq = aw.alloc_workqueue("bad-rt", 0, 4)
        bh = aw.alloc_workqueue("bad-bh", aw.WQ.BH)
        by = Bystanders(wq, cpus=(0, 1))
        await guarded(asyncio.to_thread(by.started.wait, GUARD), "a blocked bystander")
        w, dw = aw.Work(noop), aw.DelayedWork(noop)
        L = aw.WorkqueueLoopError
        cases = bad_type_and_value_cases(wq, bh, w, dw, cpu_limit=2)
        cases += [
            (
                "queue on an ended runtime's queue",
                lambda: aw.queue_work(ended_wq, w),
                L,
                ("bad-ended", "not running"),
            ),
            ("queue_work_on ended", lambda: aw.queue_work_on(0, ended_wq, w), L, ("bad-ended",)),
            ("delayed on ended", lambda: aw.queue_delayed_work(ended_wq, dw, 1), L, ("bad-ended",)),
            (
                "mod on ended",
                lambda: aw.mod_delayed_work(ended_ub, dw, 1),
                L,
                ("bad-ended-unbound",),
            ),
            ("submit on ended", lambda: ended_ub.submit(print), L, ("bad-ended-unbound",)),
            (
                "start a running runtime again",
                lambda: rt.start(),
                aw.WorkqueueError,
                ("Runtime.start",),
            ),
            (
                "start a second runtime",
                lambda: aw.Runtime(1).start(),
                aw.WorkqueueError,
                ("already running",),
            ),
        ]
        wrong = await run_cases(cases)
        assert not wrong, "\n".join(wrong)
        assert_idle(w, dw)

        # A DelayedWork armed from another thread's own event loop, then re-armed, cancelled,
        # flushed from the host: one run, on the runtime's pools.
        foreign = aw.DelayedWork(by.ran)

        def other_loop() -> None:
            async def arm() -> None:
                assert aw.queue_delayed_work(wq, foreign, 3600)
                assert not aw.queue_delayed_work(wq, foreign, 0)

            asyncio.run(arm())

        th = threading.Thread(target=other_loop)
        th.start()
        await asyncio.to_thread(th.join, GUARD)
        assert aw.delayed_work_pending(foreign)
        assert aw.mod_delayed_work(wq, foreign, 3600)
        assert aw.cancel_delayed_work(foreign)
        assert not aw.cancel_delayed_work(foreign)
        assert aw.queue_delayed_work_on(1, wq, foreign, 3600)
        # True, or False if pool 1 ran it between the firing and the wait (as the kernel's).
        await guarded(aw.flush_delayed_work(foreign), "flush_delayed_work")
        await wait_until(lambda: id(foreign) in by.runs, "the foreign item to run")
        assert by.runs[id(foreign)] == 1

        # Evil items on every path: queue, cancel, mod, flush, cancel_sync, shutdown reports.
        # They wait behind a blocker on a max_active 1 queue, so each call finds them pending.
        evq = aw.alloc_workqueue("bad-evil", 0, 1)
        release = threading.Event()
        blockers_in = threading.Barrier(3)

        def blocker(w: aw.Work) -> None:
            blockers_in.wait(GUARD)
            release.wait(GUARD)

        blockers = [aw.Work(blocker) for _ in range(2)]
        for cpu, b in enumerate(blockers):
            assert aw.queue_work_on(cpu, evq, b)
        evils = [Evil(count) for _ in range(6)]  # type: ignore[arg-type]
        for k, e in enumerate(evils):
            assert aw.queue_work_on(k % 2, evq, e)
        await asyncio.to_thread(blockers_in.wait, GUARD)
        assert aw.cancel_work(evils[0])
        assert aw.mod_delayed_work(evq, evils[1], 0)
        cancelling = asyncio.ensure_future(aw.cancel_work_sync(evils[3]))
        flushing = asyncio.ensure_future(aw.flush_work(evils[2]))
        await asyncio.sleep(0)
        release.set()
        assert await guarded(cancelling, "cancel_work_sync(evil)") is True
        assert await guarded(flushing, "flush_work(evil)") is True
        await guarded(aw.flush_workqueue(evq), "flush")
        assert [e.runs for e in evils] == [0, 1, 1, 0, 1, 1]
        await by.check()
        armed = Evil(count)  # type: ignore[arg-type]
        assert aw.queue_delayed_work(wq, armed, 3600)  # reported by the shutdown
    assert [(w is armed, s) for w, _, s in rt.unfinished] == [(True, "armed")]
    assert not aw.work_pending(armed)
    assert not runtime_threads()


# -- once known problems, now regressions (were /tmp/repro_bad_input_messages.py and
# /tmp/repro_workqueue_constructor_unchecked.py) ---------------------------------------------


@pytest.mark.asyncio
async def test_a_huge_int_delay_is_a_value_error_naming_the_call() -> None:
    async with aw.alloc_workqueue("bad-huge") as wq:
        dw = aw.DelayedWork(noop)
        with pytest.raises(ValueError, match=r"queue_delayed_work.*delay"):
            aw.queue_delayed_work(wq, dw, 10**400)
        assert_idle(dw)


@pytest.mark.asyncio
async def test_a_work_subclass_without_init_is_a_clear_type_error() -> None:
    class NoInit(aw.Work):
        def __init__(self) -> None:
            pass

    async with aw.alloc_workqueue("bad-noinit") as wq:
        with pytest.raises(TypeError, match="queue_work"):
            aw.queue_work(wq, NoInit())


@pytest.mark.asyncio
async def test_a_work_with_a_broken_repr_still_gets_the_right_error() -> None:
    class BadRepr(aw.Work):
        def __repr__(self) -> str:
            raise RuntimeError("repr boom")

    wq = aw.alloc_workqueue("bad-repr")
    await guarded(aw.destroy_workqueue(wq), "destroy")
    with pytest.raises(aw.WorkqueueDestroyedError, match="bad-repr"):
        aw.queue_work(wq, BadRepr(noop))


def test_a_delayed_work_armed_on_a_closed_loop_is_not_stranded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression (fixed in 945ea13; was /tmp/repro_delayed_work_from_a_closed_loop.py): it
    stayed pending for other queues, and flush_delayed_work raised a bare RuntimeError after
    moving it onto the dead loop. Now the stranded instance is reported (a WARNING, when the
    loop shuts down, R20) and reset."""
    old = aw.alloc_workqueue("bad-closed-loop")
    dw = aw.DelayedWork(noop)

    async def first() -> None:
        assert aw.queue_delayed_work(old, dw, 3600)

    async def second() -> None:
        wq = aw.alloc_workqueue("bad-new-loop")
        try:
            await asyncio.wait_for(aw.flush_delayed_work(dw), 1.0)
        except aw.WorkqueueError:
            pass  # acceptable: a clear error; then the item must be usable again
        assert aw.queue_work(wq, dw), "the item is still pending from the dead loop"
        await aw.flush_workqueue(wq)

    asyncio.run(first())
    try:
        asyncio.run(second())
    finally:
        aw.cancel_delayed_work(dw)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("bad-closed-loop" in m and "cancelled" in m for m in msgs)


@pytest.mark.asyncio
async def test_the_public_workqueue_constructor_refuses_what_alloc_workqueue_refuses() -> None:
    """Workqueue(...) is public; it used to check nothing, and max_active=0 gave a queue that
    accepted work and never ran it. Now it checks as alloc_workqueue does (0 is the default)."""
    bad: list[tuple[tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
        ((3, aw.WQ(0), 1), {}, TypeError, "name"),
        (("raw", "x", 1), {}, TypeError, "flags"),
        (("raw", 1 << 30, 1), {}, ValueError, "unknown flags"),
        (("raw", aw.WQ(0), -1), {}, ValueError, "max_active"),
        (("raw", aw.WQ(0), 1.5), {}, TypeError, "max_active"),
        (("raw", aw.WQ(0), 2), {"ordered": True}, ValueError, "ordered"),
        (("raw", aw.WQ(0), 1), {"exception_handler": 3}, TypeError, "exception_handler"),
    ]
    for args, kwargs, exc, words in bad:
        with pytest.raises(exc, match=rf"Workqueue.*{words}"):
            aw.Workqueue(*args, **kwargs)
    wq = aw.Workqueue("raw", aw.WQ(0), 0)
    assert wq.max_active == aw.WQ_DFL_ACTIVE
    ran: list[int] = []
    assert aw.queue_work(wq, aw.Work(lambda w: ran.append(1)))
    await guarded(aw.destroy_workqueue(wq), "destroy")
    assert ran == [1]


@pytest.mark.asyncio
async def test_a_loop_factory_that_returns_no_loop_is_a_type_error_naming_it() -> None:
    """Was an AttributeError from deep inside asyncio.Runner, naming neither the runtime nor the
    factory; now start() raises a TypeError that says what the factory returned."""

    def not_a_loop() -> Any:
        return "surely a loop"

    rt = aw.Runtime(cpus=1, loop_factory=not_a_loop)
    with pytest.raises(TypeError, match=r"loop_factory .*not_a_loop.*'surely a loop'.*event loop"):
        await rt.start()
    assert not runtime_threads()
    async with aw.Runtime(cpus=1, loop_factory="asyncio"):
        pass  # nothing was left half-started
