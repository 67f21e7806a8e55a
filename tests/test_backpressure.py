"""R21, bounded queues: ``max_pending``, ``WorkqueueFullError`` and ``queue_work_wait``.

What counts against the bound is what is queued and not started: on a worklist, waiting for a
``max_active`` slot, or deferred behind its own run; an armed timer counts from when it fires.
Interleavings are explicit: items block on events the test sets, room is freed by the test's own
calls, and timers run on the virtual clock. Nothing sleeps on the wall clock to decide an outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import pytest

import aioworkqueue as aw
from aioworkqueue import _lock
from tests.conftest import ExpectedErrors, settle
from tests.vclock import run_virtual

SHUT = 3.0
T = TypeVar("T")


class Item(aw.Work):
    __slots__ = ("label",)

    def __init__(self, func: aw.WorkFunc, label: object = None) -> None:
        super().__init__(func)
        self.label = label


async def finish(*tasks: asyncio.Task[T]) -> list[T]:
    """The results of tasks that must end within a few loop rounds: a waiter left waiting fails
    the test instead of hanging it."""
    await settle(50)
    assert all(t.done() for t in tasks), "left waiting"
    return [t.result() for t in tasks]


def done_at_once(coro: Coroutine[Any, Any, bool]) -> bool:
    """Run ``coro`` one step; it must finish in that step (it did not wait). Returns its value."""
    with pytest.raises(StopIteration) as stop:
        coro.send(None)
    value: bool = stop.value.value
    return value


class Gate:
    """A blocking item's function: it records its start and waits for the test to open it."""

    def __init__(self) -> None:
        self.started: list[object] = []
        self.ran: list[object] = []
        self.open = asyncio.Event()

    async def __call__(self, w: Item) -> None:
        self.started.append(w.label)
        await self.open.wait()
        self.ran.append(w.label)


@contextlib.asynccontextmanager
async def gated(wq: aw.Workqueue, gate: Gate) -> AsyncIterator[aw.Workqueue]:
    """Destroy ``wq`` on exit, opening ``gate`` first, so that a failed assertion does not leave
    a blocked item for the destroy to wait on forever."""
    try:
        yield wq
    finally:
        gate.open.set()
        await wq.destroy()


def _full_queue(name: str, gate: Gate, **kw: Any) -> tuple[aw.Workqueue, Item, Item]:
    """A queue with max_active 1, max_pending 1, and two items for it (``a``, ``b``), unqueued."""
    return (
        aw.alloc_workqueue(name, max_active=1, max_pending=1, **kw),
        Item(gate, "a"),
        Item(gate, "b"),
    )


async def _filled(name: str, gate: Gate) -> tuple[aw.Workqueue, Item, Item]:
    """:func:`_full_queue`, full: ``a`` runs (blocked on ``gate``), ``b`` waits for its slot."""
    wq, a, b = _full_queue(name, gate)
    aw.queue_work(wq, a)
    await settle()
    aw.queue_work(wq, b)
    return wq, a, b


# -- the parameter -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [True, 1.0, "2", None])
def test_max_pending_must_be_an_int(bad: object) -> None:
    for make in (
        lambda: aw.alloc_workqueue("t", max_pending=bad),  # type: ignore[arg-type]
        lambda: aw.alloc_ordered_workqueue("t", max_pending=bad),  # type: ignore[arg-type]
        lambda: aw.Workqueue("t", 0, 0, max_pending=bad),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError, match="max_pending of workqueue 't' must be an int"):
            make()


def test_max_pending_must_not_be_negative_and_defaults_to_unbounded() -> None:
    with pytest.raises(ValueError, match="max_pending of workqueue 'neg' must be >= 0"):
        aw.alloc_workqueue("neg", max_pending=-1)
    assert aw.alloc_workqueue("dfl").max_pending == 0
    assert aw.alloc_workqueue("dfl").stats().max_pending == 0
    assert aw.alloc_ordered_workqueue("o", max_pending=3).stats().max_pending == 3
    assert issubclass(aw.WorkqueueFullError, aw.WorkqueueError)


# -- refused at the bound, nothing changed -------------------------------------------------------


@pytest.mark.asyncio
async def test_at_the_bound_every_queue_call_raises_and_changes_nothing() -> None:
    gate = Gate()
    wq, a, b = _full_queue("full", gate)
    aw.queue_work(wq, a)
    await settle()
    assert gate.started == ["a"]  # a runs: it does not count any more
    aw.queue_work(wq, b)  # waits for the max_active slot: counts
    other = aw.Work(lambda w: None)
    dw = aw.DelayedWork(lambda w: None)
    before = wq.stats()
    calls: list[Callable[[], object]] = [
        lambda: aw.queue_work(wq, other),
        lambda: aw.queue_work_on(0, wq, other),
        lambda: wq.queue(other),
        lambda: aw.queue_delayed_work(wq, dw, 0),
        lambda: aw.queue_delayed_work_on(0, wq, dw, 0),
        lambda: aw.mod_delayed_work(wq, dw, 0),
        lambda: wq.submit(print, "never"),
    ]
    for call in calls:
        with pytest.raises(aw.WorkqueueFullError) as err:
            call()
        assert "'full'" in str(err.value)
        assert "max_pending 1" in str(err.value)
    assert "Work fn=" in str(err.value) or "fn=print" in str(err.value)
    assert wq.stats() == before
    assert not other.pending and not dw.pending
    assert aw.work_busy(other) == aw.WorkBusy(0)
    # R1 comes first: a pending work adds nothing, so it is False, not an error.
    assert aw.queue_work(wq, b) is False
    # Arming adds nothing to what the bound counts (an armed item counts when it fires).
    assert aw.queue_delayed_work(wq, dw, 5.0) is True
    assert aw.cancel_delayed_work(dw)
    gate.open.set()
    await wq.destroy()
    assert gate.ran == ["a", "b"]


@pytest.mark.asyncio
async def test_the_bound_is_per_workqueue_over_every_pool_and_counts_queued_and_inactive() -> None:
    gate = Gate()
    async with gated(aw.alloc_workqueue("three", max_active=1, max_pending=3), gate) as wq:
        items = [Item(gate, i) for i in range(3)]
        for it in items:
            assert aw.queue_work(wq, it)  # one on the worklist, two waiting for the slot
        assert wq.stats().pending == 3
        with pytest.raises(aw.WorkqueueFullError):
            aw.queue_work(wq, Item(gate, "x"))
        gate.open.set()


# -- room frees when an item starts or is taken back ---------------------------------------------


@pytest.mark.asyncio
async def test_room_frees_when_an_item_starts() -> None:
    gate = Gate()
    async with gated(aw.alloc_workqueue("starts", max_active=1, max_pending=1), gate) as wq:
        a, b, c = Item(gate, "a"), Item(gate, "b"), Item(gate, "c")
        assert aw.queue_work(wq, a)
        with pytest.raises(aw.WorkqueueFullError):
            aw.queue_work(wq, b)  # a is queued, not started
        await settle()
        assert gate.started == ["a"]
        assert aw.queue_work(wq, b)  # a started: room
        with pytest.raises(aw.WorkqueueFullError):
            aw.queue_work(wq, c)  # b waits for the slot a holds
        gate.open.set()
        await settle()
        assert gate.started == ["a", "b"]
        assert aw.queue_work(wq, c)


@pytest.mark.asyncio
async def test_room_frees_when_an_item_is_cancelled_disabled_or_rearmed() -> None:
    gate = Gate()
    wq, a, b = _full_queue("takeback", gate)
    aw.queue_work(wq, a)
    await settle()
    x = Item(gate, "x")

    def refused() -> bool:
        try:
            aw.queue_work(wq, x)
        except aw.WorkqueueFullError:
            return True
        aw.cancel_work(x)
        return False

    aw.queue_work(wq, b)
    assert refused()
    assert aw.cancel_work(b)
    assert not refused()

    aw.queue_work(wq, b)
    assert refused()
    assert aw.disable_work(b)
    assert not refused()
    assert aw.enable_work(b)

    aw.queue_work(wq, b)
    assert await aw.cancel_work_sync(b)
    assert not refused()

    d = aw.DelayedWork(lambda w: None)
    aw.queue_delayed_work(wq, d, 0)
    assert refused()
    assert aw.mod_delayed_work(wq, d, 60.0)  # out of the queue, onto a timer: room frees
    assert not refused()
    assert aw.cancel_delayed_work(d)
    gate.open.set()
    await wq.destroy()


@pytest.mark.asyncio
async def test_a_deferred_instance_counts_until_it_starts_after_its_own_run() -> None:
    gate = Gate()
    async with gated(aw.alloc_workqueue("deferred", max_active=2, max_pending=1), gate) as wq:
        a = Item(gate, "a")
        aw.queue_work(wq, a)
        await settle()
        assert aw.queue_work(wq, a)  # R2: queued again while running
        await settle()  # a second worker took it and deferred it behind the run (R3)
        assert a.pending and gate.started == ["a"]
        with pytest.raises(aw.WorkqueueFullError):
            aw.queue_work(wq, Item(gate, "x"))
        gate.open.set()
        await settle()
        assert gate.started == ["a", "a"]  # the deferred instance started: room
        assert aw.queue_work(wq, Item(gate, "y"))


@pytest.mark.asyncio
async def test_wq_bh_items_free_room_when_they_start() -> None:
    ran: list[int] = []
    async with aw.alloc_workqueue("bh", aw.WQ.BH, max_pending=1) as wq:
        assert aw.queue_work(wq, Item(lambda w: ran.append(1)))
        with pytest.raises(aw.WorkqueueFullError):
            aw.queue_work(wq, Item(lambda w: ran.append(2)))
        await settle()
        assert ran == [1]
        assert aw.queue_work(wq, Item(lambda w: ran.append(3)))
    assert ran == [1, 3]


@pytest.mark.asyncio
async def test_mod_delayed_work_now_on_a_queued_item_keeps_its_room() -> None:
    """Moved to the tail, the item is still queued: the room its steal frees for a moment must
    not go to a waiter (that would put two items in a queue bounded at one)."""
    gate = Gate()
    wq, a, _ = _full_queue("modnow", gate)
    aw.queue_work(wq, a)
    await settle()
    d = aw.DelayedWork(lambda w: None)
    aw.queue_delayed_work(wq, d, 0)
    waiter = asyncio.create_task(aw.queue_work_wait(wq, Item(gate, "w")))
    await settle()
    assert wq.stats().room_waiters == 1
    assert aw.mod_delayed_work(wq, d, 0) is True
    await settle()
    assert wq.stats().room_waiters == 1 and not waiter.done()
    assert wq.stats().pending == 1
    gate.open.set()
    assert await finish(waiter) == [True]
    await wq.destroy()


# -- queue_work_wait ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_queue_work_wait_with_room_queues_at_once() -> None:
    async with aw.alloc_workqueue("room", max_pending=2) as wq:
        w = aw.Work(lambda w: None)
        assert done_at_once(aw.queue_work_wait(wq, w)) is True
        assert done_at_once(aw.queue_work_wait(wq, w)) is False  # R1
        assert done_at_once(wq.queue_wait(aw.Work(lambda w: None))) is True
    async with aw.alloc_workqueue("unbounded") as wq:
        assert done_at_once(aw.queue_work_wait(wq, aw.Work(lambda w: None))) is True


@pytest.mark.asyncio
async def test_queue_work_wait_on_a_pending_or_disabled_work_is_false_at_once() -> None:
    gate = Gate()
    wq, _, b = await _filled("r1wait", gate)
    assert done_at_once(aw.queue_work_wait(wq, b)) is False  # pending: no waiting (R1)
    c = Item(gate, "c")
    aw.disable_work(c)
    assert done_at_once(aw.queue_work_wait(wq, c)) is False
    assert wq.stats().room_waiters == 0
    gate.open.set()
    await wq.destroy()


@pytest.mark.asyncio
async def test_waiters_wake_in_fifo_order_and_the_room_is_theirs() -> None:
    gate = Gate()
    wq, _, b = await _filled("fifo", gate)
    items = [Item(gate, f"w{i}") for i in range(3)]
    done: list[str] = []

    async def wait(it: Item) -> None:
        assert await aw.queue_work_wait(wq, it)
        done.append(str(it.label))

    tasks = []
    for it in items:
        tasks.append(asyncio.create_task(wait(it)))
        await settle(2)  # each one begins to wait before the next
    assert wq.stats().room_waiters == 3
    assert aw.cancel_work(b)  # room: handed to the first waiter, which has not run yet
    assert wq.stats().room_waiters == 2
    with pytest.raises(aw.WorkqueueFullError):
        aw.queue_work(wq, Item(gate, "x"))  # a producer that does not wait cannot take it
    gate.open.set()
    await finish(*tasks)
    assert done == ["w0", "w1", "w2"]
    await wq.flush()
    assert gate.ran == ["a", "w0", "w1", "w2"]
    await wq.destroy()


@pytest.mark.asyncio
async def test_a_waiter_cancelled_before_room_comes_queues_nothing() -> None:
    gate = Gate()
    wq, _, b = await _filled("cancel1", gate)
    w0, w1 = Item(gate, "w0"), Item(gate, "w1")
    t0 = asyncio.create_task(aw.queue_work_wait(wq, w0))
    await settle(2)
    t1 = asyncio.create_task(aw.queue_work_wait(wq, w1))
    await settle(2)
    t0.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t0
    assert wq.stats().room_waiters == 1 and not w0.pending
    assert aw.cancel_work(b)
    assert await finish(t1) == [True]
    assert w1.pending and not w0.pending
    gate.open.set()
    await wq.destroy()
    assert gate.ran == ["a", "w1"]


@pytest.mark.asyncio
async def test_a_waiter_cancelled_after_room_was_handed_to_it_passes_it_on() -> None:
    gate = Gate()
    wq, _, b = await _filled("cancel2", gate)
    w0, w1 = Item(gate, "w0"), Item(gate, "w1")
    t0 = asyncio.create_task(aw.queue_work_wait(wq, w0))
    await settle(2)
    t1 = asyncio.create_task(aw.queue_work_wait(wq, w1))
    await settle(2)
    assert aw.cancel_work(b)  # the room goes to t0 ...
    t0.cancel()  # ... which is cancelled before it could use it
    with pytest.raises(asyncio.CancelledError):
        await t0
    assert await finish(t1) == [True]  # the room was passed on, not lost
    assert w1.pending and not w0.pending
    assert wq.stats().room_waiters == 0
    gate.open.set()
    await wq.flush()
    assert aw.queue_work(wq, Item(gate, "after"))  # and the count is right afterwards
    await wq.destroy()
    assert gate.ran == ["a", "w1", "after"]


@pytest.mark.asyncio
async def test_a_waiter_whose_work_became_pending_meanwhile_returns_false_and_passes_on() -> None:
    gate = Gate()
    wq, _, b = await _filled("r1later", gate)
    w0, w1 = aw.DelayedWork(gate), Item(gate, "w1")
    t0 = asyncio.create_task(aw.queue_work_wait(wq, w0))
    await settle(2)
    t1 = asyncio.create_task(aw.queue_work_wait(wq, w1))
    await settle(2)
    other = aw.alloc_workqueue("elsewhere")
    aw.queue_delayed_work(other, w0, 60.0)  # w0 is pending (armed) on another queue now
    assert aw.cancel_work(b)
    assert await finish(t0, t1) == [False, True]  # t0: R1 when the room came
    assert aw.cancel_delayed_work(w0)
    gate.open.set()
    await wq.destroy()
    await other.destroy()


@pytest.mark.asyncio
async def test_queue_work_wait_refuses_at_once_on_a_destroyed_or_draining_queue() -> None:
    wq = aw.alloc_workqueue("gone", max_pending=1)
    await wq.destroy()
    with pytest.raises(aw.WorkqueueDestroyedError, match="queue_work_wait: workqueue 'gone'"):
        await aw.queue_work_wait(wq, aw.Work(lambda w: None))
    gate = Gate()
    wq, _, _ = await _filled("draining", gate)
    drain = asyncio.create_task(wq.drain())
    await settle(2)
    late = aw.queue_work_wait(wq, Item(gate, "late"))
    with pytest.raises(aw.WorkqueueDrainingError, match="'draining'"):
        late.send(None)  # refused in its first step, not after waiting for room
    assert wq.stats().room_waiters == 0
    gate.open.set()
    await drain
    await wq.destroy()


@pytest.mark.asyncio
async def test_waiting_on_its_own_full_ordered_queue_is_a_deadlock_error() -> None:
    seen: list[BaseException] = []
    gate = Gate()
    go = asyncio.Event()
    wq = aw.alloc_ordered_workqueue("ord", max_pending=1)

    async def selfish(w: aw.Work) -> None:
        await go.wait()
        try:
            await aw.queue_work_wait(wq, aw.Work(lambda w: None))
        except aw.WorkqueueDeadlockError as exc:
            seen.append(exc)

    aw.queue_work(wq, aw.Work(selfish))
    await settle()
    aw.queue_work(wq, Item(gate, "behind"))  # waits behind selfish: the queue is full
    go.set()
    await settle()
    assert len(seen) == 1 and "'ord'" in str(seen[0])
    assert "from its own item" in str(seen[0])
    gate.open.set()
    await wq.destroy()


# -- timers on a full queue ---------------------------------------------------------------------


def test_a_timer_that_fires_on_a_full_queue_queues_over_the_bound_never_drops() -> None:
    async def main() -> None:
        gate = Gate()
        ran: list[str] = []
        wq, _, _ = await _filled("timer", gate)
        d = aw.DelayedWork(lambda w: ran.append("d"))
        assert aw.queue_delayed_work(wq, d, 1.0)  # arming on a full queue: accepted (R21)
        await asyncio.sleep(2.0)  # virtual: the timer fired
        assert d.pending and wq.stats().armed == 0
        assert wq.stats().pending == 2  # over the bound of 1: it was accepted when armed (R20)
        waiter = asyncio.create_task(aw.queue_work_wait(wq, Item(gate, "w")))
        await settle()
        with pytest.raises(aw.WorkqueueFullError):
            aw.queue_work(wq, Item(gate, "x"))
        gate.open.set()
        # Room came once the count was below the bound again.
        assert await finish(waiter) == [True]
        await wq.flush()
        assert ran == ["d"] and gate.ran == ["a", "b", "w"]
        await wq.destroy()

    run_virtual(main)


def test_flush_delayed_work_and_destroy_fire_armed_items_over_the_bound() -> None:
    async def main() -> None:
        ran: list[str] = []
        wq = aw.alloc_workqueue("fire", max_pending=1)
        d1 = aw.DelayedWork(lambda w: ran.append("d1"))
        d2 = aw.DelayedWork(lambda w: ran.append("d2"))
        aw.queue_delayed_work(wq, d1, 10.0)
        aw.queue_delayed_work(wq, d2, 10.0)
        aw.queue_work(wq, aw.Work(lambda w: ran.append("q")))
        assert await aw.flush_delayed_work(d1)  # fired on a full queue: over, not refused
        await wq.destroy()  # fires d2 the same way
        assert sorted(ran) == ["d1", "d2", "q"]

    run_virtual(main)


# -- interrupt context --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_signal_handler_that_interrupted_our_section_gets_the_same_bound() -> None:
    """Inside a section (as a signal handler that interrupted one would be), queue_* answers
    from the count plus what this interruption already queued, and never blocks."""
    ran: list[str] = []
    async with aw.alloc_workqueue("sigbound", max_pending=2) as wq:
        aw.queue_work(wq, aw.Work(lambda w: ran.append("bind")))
        await wq.flush()
        a, b, c = (aw.Work(lambda w, n=n: ran.append(n)) for n in "abc")  # type: ignore[misc]
        aw.queue_work(wq, a)
        with _lock.LOCK:  # the section a signal handler would interrupt
            assert aw.queue_work(wq, b) is True  # recorded: 1 queued + 1 answered = the bound
            with pytest.raises(aw.WorkqueueFullError):
                aw.queue_work(wq, c)
            assert not b.pending
        _lock.replay()
        assert b.pending and not c.pending
        await wq.flush()
    assert sorted(ran) == ["a", "b", "bind"]


# -- threads and runtimes -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_from_another_thread_queue_raises_and_a_waiter_on_its_own_loop_wakes() -> None:
    gate = Gate()
    wq, _, _ = await _filled("thread", gate)
    outcome: dict[str, object] = {}
    waiting = threading.Event()

    def producer() -> None:
        try:
            aw.queue_work(wq, Item(gate, "x"))  # a thread with no loop: the inline path
        except aw.WorkqueueFullError as exc:
            outcome["full"] = exc

        async def wait() -> bool:
            task = asyncio.create_task(aw.queue_work_wait(wq, Item(gate, "t")))
            await asyncio.sleep(0)
            waiting.set()
            return await task

        outcome["waited"] = asyncio.run(wait())  # woken from the main loop, thread-safely

    th = threading.Thread(target=producer, daemon=True)  # daemon: a failure must not hang exit
    th.start()
    await asyncio.to_thread(waiting.wait)
    assert isinstance(outcome["full"], aw.WorkqueueFullError)
    assert wq.stats().room_waiters == 1
    gate.open.set()  # a ends, b starts on this loop: its room goes to the thread's waiter
    await asyncio.to_thread(th.join, 30.0)  # bounds a failure; a pass takes a few loop turns
    assert not th.is_alive() and outcome["waited"] is True
    await wq.destroy()
    assert gate.ran == ["a", "b", "t"]


async def _until(cond: Callable[[], bool]) -> None:
    """Wait (bounded) for a condition another thread makes true; it never decides an outcome."""
    for _ in range(5000):
        if cond():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never became true")


@pytest.mark.asyncio
async def test_runtime_waiters_on_the_host_loop_and_on_a_pool_loop_are_served_in_order() -> None:
    order: list[str] = []
    started = threading.Event()
    release = threading.Event()

    async with aw.Runtime(cpus=2, shutdown_timeout=SHUT):
        wq = aw.alloc_workqueue("rt", aw.WQ.UNBOUND, max_active=1, max_pending=1)
        helper = aw.alloc_workqueue("helper")

        async def blocker(w: aw.Work) -> None:
            order.append("a")
            started.set()
            await asyncio.to_thread(release.wait)

        def note(label: str) -> aw.Work:
            return aw.Work(lambda w: order.append(label))

        aw.queue_work(wq, aw.Work(blocker))
        await asyncio.to_thread(started.wait)
        aw.queue_work(wq, note("b"))  # waits for the slot: full
        host = asyncio.create_task(aw.queue_work_wait(wq, note("host")))
        await _until(lambda: wq.stats().room_waiters == 1)
        pool_result: list[bool] = []

        async def on_pool(w: aw.Work) -> None:  # a waiter on a pool loop
            pool_result.append(await aw.queue_work_wait(wq, note("pool")))

        aw.queue_work(helper, aw.Work(on_pool))
        await _until(lambda: wq.stats().room_waiters == 2)
        release.set()
        await _until(host.done)
        assert host.result() is True
        await _until(lambda: bool(pool_result))
        await wq.flush()
        assert pool_result == [True]
        assert order == ["a", "b", "host", "pool"]
        await wq.destroy()
        await helper.destroy()


@pytest.mark.asyncio
async def test_a_runtime_shutdown_that_takes_items_back_wakes_the_waiters() -> None:
    release = threading.Event()
    started = threading.Event()

    async def blocker(w: aw.Work) -> None:
        started.set()
        await asyncio.to_thread(release.wait)

    rt = aw.Runtime(cpus=1, shutdown_timeout=SHUT)
    async with rt:
        wq = aw.alloc_workqueue("rtdown", max_active=1, max_pending=1)
        aw.queue_work(wq, aw.Work(blocker))
        await asyncio.to_thread(started.wait)
        aw.queue_work(wq, aw.Work(lambda w: None))
        waiter = asyncio.create_task(aw.queue_work_wait(wq, aw.Work(lambda w: None)))
        await _until(lambda: wq.stats().room_waiters == 1)
        shut = asyncio.create_task(rt.shutdown(timeout=0))
        done, _ = await asyncio.wait([waiter], timeout=SHUT)
        release.set()
        await shut
    assert done, "the waiter was left waiting for room that the shutdown took back"
    with pytest.raises(aw.WorkqueueLoopError):
        waiter.result()


def test_items_stranded_on_a_closed_loop_give_their_room_back(
    caplog: pytest.LogCaptureFixture,
    expect_errors: ExpectedErrors,  # the running Gate item is cut by asyncio.run's teardown
) -> None:
    wq = aw.alloc_workqueue("stranded", max_active=1, max_pending=1)

    async def first() -> None:
        aw.queue_work(wq, Item(Gate()))  # runs until asyncio.run cancels it
        await settle()
        aw.queue_work(wq, aw.Work(lambda w: None))  # waits for the slot: stranded

    async def second() -> bool:
        return aw.queue_work(wq, aw.Work(lambda w: None))

    with caplog.at_level(logging.WARNING, logger="aioworkqueue"):
        asyncio.run(first())
    # The loop ended before a worker took the item: reported then (R20), its room given back.
    assert wq.stats().pending == 0
    assert any("'stranded' did not finish (queued)" in r.getMessage() for r in caplog.records)
    assert asyncio.run(second()) is True


# -- no loss under the bound --------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_stress_accepted_equals_ran_and_the_bound_holds(seed: int) -> None:
    rng = random.Random(seed)
    limit = 4
    ran = 0
    peak = 0

    async with aw.alloc_workqueue("stress", max_active=2, max_pending=limit) as wq:

        async def item(w: aw.Work) -> None:
            nonlocal ran, peak
            peak = max(peak, wq.stats().pending)
            ran += 1
            if rng.random() < 0.5:
                await asyncio.sleep(0)

        accepted = refused = cancelled = 0
        pool = [aw.Work(item) for _ in range(12)]

        async def producer(n: int) -> None:
            nonlocal accepted, refused, cancelled
            for _ in range(n):
                w = rng.choice(pool)
                r = rng.random()
                if r < 0.45:
                    ok = await aw.queue_work_wait(wq, w)  # not `+= await`: read after
                    accepted += ok
                elif r < 0.8:
                    try:
                        accepted += aw.queue_work(wq, w)
                    except aw.WorkqueueFullError:
                        refused += 1
                elif r < 0.9:
                    cancelled += aw.cancel_work(w)
                else:
                    await asyncio.sleep(0)

        waiters = [asyncio.create_task(producer(400)) for _ in range(6)]
        await asyncio.gather(*waiters)
        await wq.flush()
        assert wq.stats().pending == 0 and wq.stats().room_waiters == 0
    assert ran == accepted - cancelled
    assert refused > 0 and peak <= limit


@pytest.mark.asyncio
async def test_stress_runtime_and_threads_lose_nothing_and_the_count_returns_to_zero() -> None:
    """Producers on the host loop, in threads with no loop and in threads with loops of their own
    queue, wait and cancel over shared items onto a bounded queue served by two pools."""
    limit = 3
    lock = threading.Lock()
    ran = [0]
    over: list[int] = []
    totals: list[tuple[int, int]] = []  # (accepted, cancelled) per producer

    async with aw.Runtime(cpus=2, shutdown_timeout=SHUT):
        wq = aw.alloc_workqueue("rtstress", max_active=2, max_pending=limit)

        def item(w: aw.Work) -> None:
            n = wq.stats().pending
            with lock:
                ran[0] += 1
                if n > limit:
                    over.append(n)

        shared = [aw.Work(item) for _ in range(8)]

        async def produce(seed: int, ops: int, wait: bool) -> None:
            rng = random.Random(seed)
            accepted = cancelled = 0
            for _ in range(ops):
                w = rng.choice(shared)
                r = rng.random()
                if wait and r < 0.5:
                    ok = await aw.queue_work_wait(wq, w)
                    accepted += ok
                elif r < 0.85:
                    try:
                        accepted += aw.queue_work(wq, w)
                    except aw.WorkqueueFullError:
                        pass
                else:
                    cancelled += aw.cancel_work(w)
                if rng.random() < 0.2:
                    await asyncio.sleep(0)
            with lock:
                totals.append((accepted, cancelled))

        def in_thread(seed: int, own_loop: bool) -> None:
            coro = produce(seed, 300, wait=own_loop)
            if own_loop:
                asyncio.run(coro)
            else:  # no loop at all: queue_work and cancel_work only, stepped by hand
                with contextlib.suppress(StopIteration):
                    while True:
                        coro.send(None)

        threads = [
            threading.Thread(target=in_thread, args=(s, s % 2 == 0), daemon=True) for s in range(4)
        ]
        for th in threads:
            th.start()
        host = asyncio.gather(*(produce(10 + i, 300, wait=True) for i in range(2)))
        await asyncio.wait_for(host, 60.0)  # bounds a failure (a lost room); a pass takes ms
        for th in threads:
            await asyncio.to_thread(th.join, 60.0)
            assert not th.is_alive()
        await wq.flush()
        st = wq.stats()
        assert st.pending == 0 and st.room_waiters == 0
        assert wq._room is not None and wq._room.nr == 0  # every unit came back
        await wq.destroy()
    assert len(totals) == 6
    assert ran[0] == sum(a for a, _ in totals) - sum(c for _, c in totals)
    assert over == []
