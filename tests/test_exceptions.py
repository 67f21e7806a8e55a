"""Exceptions (issue 13, SPEC R16 and §5 "Which exceptions", "Exceptions in work"): what a work
function may raise, what an exception handler may be, and which class a refusal raises.

Every ``BaseException`` other than ``KeyboardInterrupt`` and ``SystemExit`` is an R16 error on
every kind of queue: the handler is called, the run is counted as failed, the worker (or the
``WQ.BH`` callback) goes on with the items behind it, and flushes complete. Flushes are awaited
under a hang guard, so a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

import aioworkqueue as aw
from aioworkqueue._work import MAX_DELAY

#: Hang guard for a flush that must complete (never reached when the library works).
GUARD = 5.0


class CustomBase(BaseException):
    """A user's own BaseException subclass."""


RAISED: dict[str, Callable[[], BaseException]] = {
    "GeneratorExit": GeneratorExit,
    "CustomBase": CustomBase,
    "CancelledError": asyncio.CancelledError,  # raised by the function itself
}

#: (queue flags, the function is async)
KINDS: dict[str, tuple[aw.WQ, bool]] = {
    "plain": (aw.WQ(0), False),
    "async": (aw.WQ(0), True),
    "cpu_intensive": (aw.WQ.CPU_INTENSIVE, False),
    "bh": (aw.WQ.BH, False),
}


async def guarded_flush(wq: aw.Workqueue) -> None:
    try:
        async with asyncio.timeout(GUARD):
            await aw.flush_workqueue(wq)
    except TimeoutError:
        raise AssertionError(f"flush_workqueue({wq.name!r}) hung") from None


def raising(kind: str, make: Callable[[], BaseException]) -> aw.WorkFunc:
    if KINDS[kind][1]:

        async def afn(w: aw.Work) -> None:
            await asyncio.sleep(0)
            raise make()

        return afn

    def fn(w: aw.Work) -> None:
        raise make()

    return fn


# -- item 3: every BaseException but KeyboardInterrupt and SystemExit is an R16 error -------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("raised", list(RAISED))
async def test_a_base_exception_from_work_is_reported_counted_and_the_items_behind_run(
    kind: str, raised: str
) -> None:
    seen: list[tuple[str, aw.Work, str]] = []

    def handler(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
        seen.append((wq.name, work, type(exc).__name__))

    flags, _ = KINDS[kind]
    wq = aw.alloc_workqueue(f"exc-{kind}", flags, exception_handler=handler)
    ran: list[int] = []
    bad = [aw.Work(raising(kind, RAISED[raised])) for _ in range(3)]
    for i, w in enumerate(bad):
        assert aw.queue_work(wq, w)
        assert aw.queue_work(wq, aw.Work(lambda w, i=i: ran.append(i)))  # type: ignore[misc]
    await guarded_flush(wq)
    assert ran == [0, 1, 2], "the items behind a failing one did not all run"
    assert seen == [(wq.name, w, raised) for w in bad]
    st = wq.stats()
    assert (st.failed, st.completed, st.in_flight) == (3, 3, 0)
    assert not any(aw.work_busy(w) for w in bad)
    # The worker that ran them is still there: the queue still serves, and the loop got no
    # "Task exception was never retrieved" (a dead worker task).
    again = aw.Work(lambda w: ran.append(9))
    assert aw.queue_work(wq, again)
    await guarded_flush(wq)
    assert ran[-1] == 9
    await aw.destroy_workqueue(wq)


def test_a_worker_coroutine_closed_from_outside_still_ends() -> None:
    """The GeneratorExit of ``coro.close()`` (a task collected with its loop closed) is thrown
    in outside any step of the worker's task: it is not the function's error, and the worker
    must end, not report it and carry on ("coroutine ignored GeneratorExit")."""
    from aioworkqueue._workqueue import _POOLS

    seen: list[str] = []
    loop = asyncio.new_event_loop()

    async def blocker(w: aw.Work) -> None:
        await asyncio.Event().wait()

    async def main() -> aw.Workqueue:
        wq = aw.alloc_workqueue(
            "exc-closed", exception_handler=lambda q, w, e: seen.append(type(e).__name__)
        )
        assert aw.queue_work(wq, aw.Work(blocker))
        for _ in range(5):
            await asyncio.sleep(0)
        return wq

    wq = loop.run_until_complete(main())
    pool = _POOLS[loop]
    loop.close()
    workers = list(pool.workers)
    assert len(workers) == 1
    task = workers[0].task
    assert task is not None
    # Its Task stays pending forever (its coroutine is gone): asyncio would log that whenever
    # the Task is collected, in whichever later test that happens to be.
    task._log_destroy_pending = False  # type: ignore[attr-defined]
    coro = task.get_coro()
    coro.close()  # type: ignore[union-attr]  # raises RuntimeError if the worker ignored it
    assert seen == [] and not pool.workers
    assert pool.fatal is not None and type(pool.fatal[2]) is GeneratorExit
    assert wq.stats().running == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("raised", list(RAISED))
async def test_a_base_exception_from_work_goes_to_the_default_handler(
    raised: str, expect_errors: Any
) -> None:
    """With no handler of its own, the default one logs it at ERROR, naming queue and work."""
    for kind, (flags, _) in KINDS.items():
        wq = aw.alloc_workqueue(f"exc-default-{kind}", flags)
        w = aw.Work(raising(kind, RAISED[raised]))
        assert aw.queue_work(wq, w)
        await guarded_flush(wq)
        assert wq.stats().failed == 1
        await aw.destroy_workqueue(wq)
    recs = expect_errors.records
    assert len(recs) == len(KINDS)
    for rec, kind in zip(recs, KINDS, strict=True):
        assert f"exc-default-{kind}" in rec.getMessage()
        assert rec.exc_info is not None and rec.exc_info[0].__name__ == raised


@pytest.mark.asyncio
@pytest.mark.parametrize("raised", list(RAISED))
async def test_a_base_exception_from_work_in_a_runtime_leaves_the_pool_serving(raised: str) -> None:
    seen: list[str] = []

    def handler(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
        seen.append(type(exc).__name__)

    ran: list[str] = []
    wqs: list[aw.Workqueue] = []
    async with aw.Runtime(cpus=1, loop_factory="asyncio", shutdown_timeout=GUARD) as rt:
        for kind, (flags, _) in KINDS.items():
            wq = aw.alloc_workqueue(f"exc-rt-{kind}", flags, exception_handler=handler)
            wqs.append(wq)
            assert aw.queue_work(wq, aw.Work(raising(kind, RAISED[raised])))
            assert aw.queue_work(wq, aw.Work(lambda w, k=kind: ran.append(k)))  # type: ignore[misc]
            await guarded_flush(wq)
            assert ran[-1] == kind
            assert (wq.stats().failed, wq.stats().completed) == (1, 1), kind
        assert not rt.pools[0].dead
    assert seen == [raised] * len(KINDS)
    assert rt.unfinished == []
    # The WQ.CPU_INTENSIVE queue's threads live until the queue is garbage-collected, which may
    # be many tests later; tests below check that no aiowq thread is left: end them here.
    for wq in wqs:
        if wq._executor is not None:
            await asyncio.to_thread(wq._executor.shutdown, True)


# -- item 2: an async exception handler is awaited on the pool's loop -----------------------------


def boom(w: aw.Work) -> None:
    raise ValueError("boom")


@pytest.mark.asyncio
@pytest.mark.parametrize("fn_kind", ["plain", "async"])
async def test_an_async_handler_is_awaited_in_the_worker_before_the_next_item_starts(
    fn_kind: str,
) -> None:
    """Ordinary queues: the worker awaits the handler as part of the failed run, so an item
    behind it (max_active 1) starts only after the handler ended, and a flush waits for it."""
    order: list[str] = []
    release = asyncio.Event()
    entered = asyncio.Event()

    async def handler(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
        assert aw.current_work() is work  # it runs in the worker, as part of the run
        entered.set()
        await release.wait()
        order.append(f"handler {type(exc).__name__}")

    wq = aw.alloc_workqueue("exc-async-handler", 0, 1, exception_handler=handler)
    bad = aw.Work(boom if fn_kind == "plain" else raising("async", lambda: ValueError("a")))
    assert aw.queue_work(wq, bad)
    assert aw.queue_work(wq, aw.Work(lambda w: order.append("next")))
    flush = asyncio.ensure_future(aw.flush_workqueue(wq))
    async with asyncio.timeout(GUARD):
        await entered.wait()
    for _ in range(10):
        await asyncio.sleep(0)
    assert order == [] and not flush.done() and aw.work_busy(bad) == aw.WorkBusy.RUNNING
    release.set()
    async with asyncio.timeout(GUARD):
        await flush
    assert order == ["handler ValueError", "next"]
    assert (wq.stats().failed, wq.stats().completed) == (1, 1)
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_a_plain_handler_that_returns_an_awaitable_has_it_awaited() -> None:
    done: list[str] = []

    async def later(name: str) -> None:
        await asyncio.sleep(0)
        done.append(name)

    def handler(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> Any:
        return later(wq.name)

    wq = aw.alloc_workqueue("exc-awaitable-handler", exception_handler=handler)
    assert aw.queue_work(wq, aw.Work(boom))
    await guarded_flush(wq)
    assert done == [wq.name]
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_an_async_handler_on_a_bh_queue_runs_as_a_task_and_does_not_hold_the_bh_items() -> (
    None
):
    """WQ.BH: no worker task to await it in, so it runs in a task of its own on the same loop;
    the BH items behind the failing one run meanwhile, and the flush returns."""
    release = asyncio.Event()
    handled = asyncio.Event()
    got: list[tuple[str, str, bool]] = []
    loop = asyncio.get_running_loop()

    async def handler(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
        await release.wait()
        got.append((wq.name, type(exc).__name__, asyncio.get_running_loop() is loop))
        handled.set()

    wq = aw.alloc_workqueue("exc-bh-async-handler", aw.WQ.BH, exception_handler=handler)
    ran: list[int] = []
    assert aw.queue_work(wq, aw.Work(boom))
    assert aw.queue_work(wq, aw.Work(lambda w: ran.append(1)))
    await guarded_flush(wq)
    assert ran == [1] and got == []
    release.set()
    async with asyncio.timeout(GUARD):
        await handled.wait()
    assert got == [(wq.name, "ValueError", True)]
    assert wq.stats().failed == 1
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
@pytest.mark.parametrize("bh", [False, True], ids=["worker", "bh"])
async def test_an_async_handler_that_raises_is_reported_and_the_queue_carries_on(
    bh: bool, expect_errors: Any
) -> None:
    finished = asyncio.Event()

    async def handler(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
        await asyncio.sleep(0)
        finished.set()
        raise RuntimeError("the async handler fails")

    wq = aw.alloc_workqueue(
        "exc-async-handler-fails", aw.WQ.BH if bh else aw.WQ(0), exception_handler=handler
    )
    assert aw.queue_work(wq, aw.Work(boom))
    await guarded_flush(wq)
    async with asyncio.timeout(GUARD):
        await finished.wait()
    for _ in range(5):  # the BH handler's task reports after it raised
        await asyncio.sleep(0)
    ran: list[int] = []
    assert aw.queue_work(wq, aw.Work(lambda w: ran.append(1)))
    await guarded_flush(wq)
    assert ran == [1]
    recs = expect_errors.records
    assert len(recs) == 1
    assert "exception handler" in recs[0].getMessage() and wq.name in recs[0].getMessage()
    assert recs[0].exc_info is not None and recs[0].exc_info[0] is RuntimeError
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_a_runtime_async_handler_is_awaited_on_the_pool_loop() -> None:
    got: list[tuple[str, str]] = []

    async def handler(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
        await asyncio.sleep(0)
        got.append((wq.name, threading.current_thread().name))

    async with aw.Runtime(
        cpus=1, loop_factory="asyncio", exception_handler=handler, shutdown_timeout=GUARD
    ):
        for name, flags in (("exc-rt-handler", aw.WQ(0)), ("exc-rt-handler-bh", aw.WQ.BH)):
            wq = aw.alloc_workqueue(name, flags)
            assert aw.queue_work(wq, aw.Work(boom))
            await guarded_flush(wq)
            if flags & aw.WQ.BH:
                deadline = asyncio.get_running_loop().time() + GUARD
                while len(got) < 2 and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.001)  # a hang guard on another thread's task
    assert got == [("exc-rt-handler", "aiowq/0"), ("exc-rt-handler-bh", "aiowq/0")]


# -- item 7: a Work subclass that forgets super().__init__() --------------------------------------


class Forgot(aw.DelayedWork):
    """Its __init__ never calls DelayedWork.__init__: no func, no state."""

    def __init__(self) -> None:
        pass


#: Every public call that takes a work item: (label, the call's name in the message, the call).
FORGOT_CALLS: list[tuple[str, str, Callable[[aw.Workqueue, Forgot], Any]]] = [
    ("queue_work", "queue_work", lambda wq, f: aw.queue_work(wq, f)),
    ("queue_work_on", "queue_work_on", lambda wq, f: aw.queue_work_on(0, wq, f)),
    ("queue_delayed_work", "queue_delayed_work", lambda wq, f: aw.queue_delayed_work(wq, f, 1.0)),
    ("queue_delayed_work/0", "queue_delayed_work", lambda wq, f: aw.queue_delayed_work(wq, f, 0)),
    (
        "queue_delayed_work_on",
        "queue_delayed_work_on",
        lambda wq, f: aw.queue_delayed_work_on(0, wq, f, 1.0),
    ),
    ("mod_delayed_work", "mod_delayed_work", lambda wq, f: aw.mod_delayed_work(wq, f, 1.0)),
    (
        "mod_delayed_work_on",
        "mod_delayed_work_on",
        lambda wq, f: aw.mod_delayed_work_on(0, wq, f, 1.0),
    ),
    ("schedule_work", "queue_work", lambda wq, f: aw.schedule_work(f)),
    ("schedule_delayed_work", "queue_delayed_work", lambda wq, f: aw.schedule_delayed_work(f, 1)),
    ("cancel_work", "cancel_work", lambda wq, f: aw.cancel_work(f)),
    ("cancel_delayed_work", "cancel_delayed_work", lambda wq, f: aw.cancel_delayed_work(f)),
    ("work_pending", "work_pending", lambda wq, f: aw.work_pending(f)),
    ("delayed_work_pending", "delayed_work_pending", lambda wq, f: aw.delayed_work_pending(f)),
    ("work_busy", "work_busy", lambda wq, f: aw.work_busy(f)),
    ("disable_work", "disable_work", lambda wq, f: aw.disable_work(f)),
    ("enable_work", "enable_work", lambda wq, f: aw.enable_work(f)),
    ("flush_work", "flush_work", lambda wq, f: aw.flush_work(f)),
    ("flush_delayed_work", "flush_delayed_work", lambda wq, f: aw.flush_delayed_work(f)),
    ("cancel_work_sync", "cancel_work_sync", lambda wq, f: aw.cancel_work_sync(f)),
    (
        "cancel_delayed_work_sync",
        "cancel_delayed_work_sync",
        lambda wq, f: aw.cancel_delayed_work_sync(f),
    ),
    ("disable_work_sync", "disable_work_sync", lambda wq, f: aw.disable_work_sync(f)),
    ("wq.queue", "queue_work", lambda wq, f: wq.queue(f)),
    ("wq.queue_on", "queue_work_on", lambda wq, f: wq.queue_on(0, f)),
    ("wq.queue_delayed", "queue_delayed_work", lambda wq, f: wq.queue_delayed(f, 1.0)),
    ("wq.mod_delayed", "mod_delayed_work", lambda wq, f: wq.mod_delayed(f, 1.0)),
    ("work.pending", "pending", lambda wq, f: f.pending),
    ("work.busy", "busy", lambda wq, f: f.busy),
    ("work.cancel", "cancel_", lambda wq, f: f.cancel()),
    ("work.cancel_sync", "cancel_work_sync", lambda wq, f: f.cancel_sync()),
    ("work.flush", "flush_delayed_work", lambda wq, f: f.flush()),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("call", "words"), [(label, words) for label, words, _ in FORGOT_CALLS], ids=str
)
async def test_a_work_that_skipped_super_init_gets_a_clear_type_error_from_every_call(
    call: str, words: str
) -> None:
    fn = {label: f for label, _, f in FORGOT_CALLS}[call]
    wq = aw.alloc_workqueue("exc-forgot")  # bound to this loop: the fast paths apply
    assert aw.queue_work(wq, aw.Work(lambda w: None))
    await guarded_flush(wq)
    forgot = Forgot()
    with pytest.raises(TypeError, match=r"super\(\)\.__init__\(func") as info:
        r = fn(wq, forgot)
        if asyncio.iscoroutine(r):
            await r
    msg = str(info.value)
    assert words in msg and "Forgot" in msg, msg
    assert wq.stats().in_flight == 0 and not wq._armed
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_the_repr_of_a_work_that_skipped_super_init_works_and_so_do_messages_naming_it() -> (
    None
):
    assert repr(Forgot()) == "<Forgot (not initialised)>"
    for alloc in (aw.alloc_workqueue, aw.alloc_ordered_workqueue, aw.create_workqueue):
        with pytest.raises(TypeError, match=r"name must be a str.*<Forgot \(not initialised\)>"):
            alloc(Forgot())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Workqueue: name must be a str.*Forgot"):
        aw.Workqueue(Forgot(), aw.WQ(0), 0)  # type: ignore[arg-type]


# -- item 4: a finite delay whose deadline no loop can arm ----------------------------------------

#: Delays too large to arm: on uvloop the pool rounds deadlines up to whole milliseconds, and
#: ``deadline * 1000`` overflows to infinity from about 1.7977e305 seconds on (found by trying).
TOO_LARGE: list[float | int] = [1.798e305, 1.8e305, 1e306, 1.7976931348623157e308, 10**306]

DELAY_CALLS: dict[str, Callable[[aw.Workqueue, aw.DelayedWork, float], Any]] = {
    "queue_delayed_work": aw.queue_delayed_work,
    "queue_delayed_work_on": lambda wq, dw, d: aw.queue_delayed_work_on(0, wq, dw, d),
    "mod_delayed_work": aw.mod_delayed_work,
    "mod_delayed_work_on": lambda wq, dw, d: aw.mod_delayed_work_on(0, wq, dw, d),
    "wq.queue_delayed": lambda wq, dw, d: wq.queue_delayed(dw, d),
    "wq.mod_delayed": lambda wq, dw, d: wq.mod_delayed(dw, d),
}


@pytest.mark.asyncio  # on the stdlib loop and on uvloop (conftest's loop factories)
@pytest.mark.parametrize("call", list(DELAY_CALLS))
async def test_a_delay_too_large_to_arm_is_a_value_error_and_changes_nothing(call: str) -> None:
    fn = DELAY_CALLS[call]
    name = call.replace("wq.queue_delayed", "queue_delayed_work").replace(
        "wq.mod_delayed", "mod_delayed_work"
    )
    wq = aw.alloc_workqueue("exc-huge-delay")
    dw = aw.DelayedWork(lambda w: None)
    for delay in TOO_LARGE:
        with pytest.raises(ValueError, match=rf"{name}: delay .*too large") as info:
            fn(wq, dw, delay)
        assert "DelayedWork fn=" in str(info.value)
        assert not aw.work_pending(dw) and not wq._armed, delay
        assert aw.cancel_delayed_work(dw) is False
    # Nothing was left half-done: the largest delay allowed arms, and cancels, as any other.
    assert aw.queue_delayed_work(wq, dw, MAX_DELAY)
    assert aw.delayed_work_pending(dw)
    assert aw.cancel_delayed_work(dw) is True
    ran: list[int] = []
    w2 = aw.DelayedWork(lambda w: ran.append(1))
    with pytest.raises(ValueError):
        fn(wq, w2, 1e306)
    assert aw.queue_delayed_work(wq, w2, 0)
    await guarded_flush(wq)
    assert ran == [1]
    await aw.destroy_workqueue(wq)


# -- item 6: a Runtime whose start fails leaves nothing behind ------------------------------------


def runtime_threads() -> list[str]:
    """Threads a Runtime starts (pool loops, watchdog, monitor) that are alive now."""
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("aiowq"))


async def assert_nothing_left_and_the_next_runtime_starts() -> None:
    assert runtime_threads() == []
    # No runtime is registered as running: the system queues run embedded, on this loop.
    here: list[str] = []
    w = aw.Work(lambda w: here.append(threading.current_thread().name))
    assert aw.queue_work(aw.system_wq, w)
    async with asyncio.timeout(GUARD):
        await aw.flush_work(w)
    assert here == [threading.current_thread().name]
    async with aw.Runtime(cpus=1, loop_factory="asyncio", shutdown_timeout=GUARD) as rt:
        assert aw.queue_work(aw.system_wq, w)
        async with asyncio.timeout(GUARD):
            await aw.flush_work(w)
        assert here[-1] == "aiowq/0"
    assert rt.unfinished == []
    assert runtime_threads() == []


@pytest.mark.asyncio
async def test_a_runtime_whose_monitor_address_is_in_use_leaves_nothing_behind() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        rt = aw.Runtime(cpus=2, loop_factory="asyncio", monitor=f"127.0.0.1:{port}")
        with pytest.raises(OSError) as info:
            await rt.start()
        assert info.value.errno == errno.EADDRINUSE
        assert not rt.running and rt.monitor_address is None
    finally:
        taken.close()
    await assert_nothing_left_and_the_next_runtime_starts()


@pytest.mark.asyncio
@pytest.mark.parametrize("failing", [0, 1], ids=["first-pool", "second-pool"])
async def test_a_runtime_whose_loop_factory_raises_leaves_nothing_behind(failing: int) -> None:
    """The second case has one pool running when the other fails: it is stopped quietly (no
    "pool died" ERROR, which the suite's autouse fixture would catch)."""
    calls: list[int] = []
    lock = threading.Lock()

    def factory() -> asyncio.AbstractEventLoop:
        with lock:
            n = len(calls)
            calls.append(n)
        if n == failing:
            raise RuntimeError("no loop for you")
        return asyncio.new_event_loop()

    rt = aw.Runtime(cpus=2, loop_factory=factory)
    with pytest.raises(RuntimeError, match="no loop for you"):
        await rt.start()
    assert not rt.running
    await assert_nothing_left_and_the_next_runtime_starts()


@pytest.mark.asyncio
async def test_a_runtime_whose_pool_thread_cannot_start_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aioworkqueue import _runtime

    class NoSecondThread(threading.Thread):
        def start(self) -> None:
            if self.name == "aiowq/1":
                raise RuntimeError("can't start new thread")
            super().start()

    class Threading:  # the threading module, as _runtime sees it, with that Thread
        Thread = NoSecondThread

        def __getattr__(self, name: str) -> Any:
            return getattr(threading, name)

    monkeypatch.setattr(_runtime, "threading", Threading())
    rt = aw.Runtime(cpus=2, loop_factory="asyncio")
    with pytest.raises(RuntimeError, match="can't start new thread"):
        await rt.start()
    monkeypatch.undo()
    assert not rt.running
    await assert_nothing_left_and_the_next_runtime_starts()


# -- item 13: one refusal, one exception class ----------------------------------------------------


async def refused_while_shutting_down(runtime: bool) -> tuple[BaseException, list[str]]:
    """Enter ``running()``, keep one item running, start leaving, and queue from outside while
    the shutdown flushes. Return what that queue_work raised, and what ran."""
    started = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    async def blocker(w: aw.Work) -> None:
        started.set()
        await asyncio.to_thread(release.wait, GUARD)
        ran.append("blocker")

    spec: Any = (
        {"cpus": 1, "loop_factory": "asyncio", "shutdown_timeout": GUARD} if runtime else False
    )
    r = aw.running(runtime=spec, timeout=GUARD)
    await r.__aenter__()
    wq = aw.alloc_workqueue("exc-refused")
    assert aw.queue_work(wq, aw.Work(blocker))
    async with asyncio.timeout(GUARD):
        await asyncio.to_thread(started.wait, GUARD)
    leaving = asyncio.ensure_future(r.__aexit__(None, None, None))
    refused: BaseException | None = None
    accepted = 0
    async with asyncio.timeout(GUARD):
        while refused is None:  # until the shutdown has begun refusing (a few loop turns)
            await asyncio.sleep(0)
            w = aw.Work(lambda w: ran.append("outsider"))
            try:
                if aw.queue_work(wq, w):
                    accepted += 1
                    await aw.flush_work(w)  # accepted: the shutdown had not begun yet
            except aw.WorkqueueShuttingDownError as exc:
                refused = exc
    release.set()
    async with asyncio.timeout(GUARD):
        await leaving
    assert r.unfinished == []
    assert ran.count("outsider") == accepted  # what was accepted before the refusal ran
    return refused, ran


@pytest.mark.asyncio
@pytest.mark.parametrize("runtime", [False, True], ids=["embedded", "runtime"])
async def test_refusing_work_during_shutdown_raises_one_class_in_both_modes(runtime: bool) -> None:
    exc, ran = await refused_while_shutting_down(runtime)
    # Caught as WorkqueueShuttingDownError in both modes; and as each mode's old class too, so
    # an except clause written for either mode keeps working in the other.
    assert isinstance(exc, aw.WorkqueueDrainingError)
    assert isinstance(exc, aw.WorkqueueLoopError)
    assert "exc-refused" in str(exc) and "shutting down" in str(exc) and "queue_work" in str(exc)
    assert ran.count("blocker") == 1


@pytest.mark.asyncio
async def test_a_drain_refusal_is_still_a_plain_draining_error() -> None:
    """drain_workqueue's own refusal is not a shutdown: not a WorkqueueLoopError."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def blocker(w: aw.Work) -> None:
        started.set()
        await release.wait()

    wq = aw.alloc_workqueue("exc-drain")
    assert aw.queue_work(wq, aw.Work(blocker))
    await started.wait()
    drain = asyncio.ensure_future(aw.drain_workqueue(wq))
    await asyncio.sleep(0)
    with pytest.raises(aw.WorkqueueDrainingError, match="'exc-drain' is draining") as info:
        aw.queue_work(wq, aw.Work(lambda w: None))
    assert not isinstance(info.value, aw.WorkqueueShuttingDownError | aw.WorkqueueLoopError)
    release.set()
    async with asyncio.timeout(GUARD):
        await drain
    await aw.destroy_workqueue(wq)


@pytest.mark.asyncio
async def test_a_runtime_start_cancelled_while_its_pools_come_up_leaves_nothing_behind() -> None:
    called = threading.Event()
    go = threading.Event()

    def slow_factory() -> asyncio.AbstractEventLoop:
        called.set()
        go.wait(GUARD)
        return asyncio.new_event_loop()

    rt = aw.Runtime(cpus=2, loop_factory=slow_factory)
    start = asyncio.ensure_future(rt.start())
    async with asyncio.timeout(GUARD):
        await asyncio.to_thread(called.wait, GUARD)
    start.cancel()
    for _ in range(5):
        await asyncio.sleep(0)  # the cancellation reaches start(), which waits for its threads
    go.set()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(GUARD):
            await start
    assert not rt.running
    await assert_nothing_left_and_the_next_runtime_starts()
