"""Faults: each must leave the runtime serving the other queues, be reported, and let the shutdown
complete (R15, R16, SPEC §5 "Exceptions in work", §6 of the design "Shutdown").

In this process: work that raises (plain, async, in a ``WQ.CPU_INTENSIVE`` thread, ``WQ.BH``),
work whose own await is cancelled, work cancelled from outside with ``cancel_work_sync`` while it
runs, work that cancels or tries to destroy its own queue (R15), an exception handler that itself
raises, a work item that blocks its pool loop for a second (the other pool keeps serving).

In a child process (``_fault_child.py``), the faults that can leave a runtime broken: a
``KeyboardInterrupt`` / ``SystemExit`` raised inside work, a pool loop that stops under the
runtime, and ``Runtime.shutdown()`` awaited from the runtime's own pool. The dead pool is
reported, routed around and swept (see ``Runtime._pool_died``); these were strict xfails until
the fixes, each naming its reproduction script under /tmp at the time.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aioworkqueue as aw

from ._support import GUARD, LOOP_KINDS, guarded, runtime_threads, wait_until

CHILD = Path(__file__).with_name("_fault_child.py")


def pool_kind() -> str:
    """The pool loops run on the same kind of loop as the host (the suite runs both)."""
    return "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"


def tname() -> str:
    return threading.current_thread().name


@pytest.fixture(autouse=True)
def _no_runtime_left() -> Iterator[None]:
    assert not runtime_threads(), "a previous test left a runtime running"
    yield
    assert not runtime_threads(), "this test left a runtime running"


async def served(wq: aw.Workqueue, cpu: int | None = None, n: int = 3) -> list[str]:
    """Queue ``n`` fresh items (on ``cpu`` if given) and wait for them: the queue still serves."""
    names: list[str] = []
    items = [aw.Work(lambda w: names.append(tname())) for _ in range(n)]
    for w in items:
        assert aw.queue_work(wq, w) if cpu is None else aw.queue_work_on(cpu, wq, w)
    for w in items:
        await guarded(aw.flush_work(w), "a probe item")
    assert len(names) == n
    return names


# -- work that raises ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_work_that_raises_is_reported_counted_and_the_pools_carry_on(
    expect_errors: Any,
) -> None:
    """R16, with the default handler: an ERROR record with the traceback naming queue and work."""

    class Boom(Exception):
        pass

    def plain(w: aw.Work) -> None:
        raise Boom("plain")

    async def coro(w: aw.Work) -> None:
        await asyncio.sleep(0)
        raise Boom("async")

    async with aw.Runtime(cpus=2, loop_factory=pool_kind(), shutdown_timeout=GUARD) as rt:
        queues = {
            "bound": aw.alloc_workqueue("f-bound", 0, 2),
            "unbound": aw.alloc_workqueue("f-unbound", aw.WQ.UNBOUND, 2),
            "ordered": aw.alloc_ordered_workqueue("f-ordered"),
            "cpu": aw.alloc_workqueue("f-cpu", aw.WQ.CPU_INTENSIVE, 2),
            "bh": aw.alloc_workqueue("f-bh", aw.WQ.BH, 0),
        }
        bad = []
        for name, wq in queues.items():
            for cpu in (0, 1):
                for fn in (plain,) if name == "bh" else (plain, coro):
                    w = aw.Work(fn)
                    bad.append(w)
                    assert aw.queue_work_on(cpu, wq, w)
        for wq in queues.values():
            await guarded(aw.flush_workqueue(wq), f"flush {wq.name}")
        assert all(aw.work_busy(w) == aw.WorkBusy(0) for w in bad)
        for name, wq in queues.items():
            assert wq.stats().failed == (2 if name == "bh" else 4), name
            assert wq.stats().completed == 0
            for cpu in (0, 1):
                names = await served(wq, cpu)
                if name in ("bound", "bh"):
                    assert names == [f"aiowq/{cpu}"] * 3, (name, names)
        assert rt.running
    assert rt.unfinished == []
    msgs = expect_errors.messages
    assert len(msgs) == len(bad)
    for wq in queues.values():
        assert sum(wq.name in m for m in msgs) == wq.stats().failed
    assert all("raised" in m for m in msgs)
    assert all(
        r.exc_info is not None and r.exc_info[0].__name__ == "Boom" for r in expect_errors.records
    )


@pytest.mark.asyncio
async def test_exception_handler_that_raises_is_reported_and_the_worker_carries_on(
    expect_errors: Any,
) -> None:
    """SPEC §5: a handler that raises is itself reported the same way; the worker carries on."""
    seen: list[str] = []

    def handler(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
        seen.append(type(exc).__name__)
        raise RuntimeError("the handler itself fails")

    def boom(w: aw.Work) -> None:
        raise ValueError("boom")

    async with aw.Runtime(cpus=2, loop_factory=pool_kind(), shutdown_timeout=GUARD):
        wq = aw.alloc_workqueue("f-handler", 0, 1, exception_handler=handler)
        for cpu in (0, 1):
            for _ in range(3):
                assert aw.queue_work_on(cpu, wq, aw.Work(boom))
        await guarded(aw.flush_workqueue(wq), "flush")
        assert seen == ["ValueError"] * 6
        assert wq.stats().failed == 6
        for cpu in (0, 1):
            assert await served(wq, cpu) == [f"aiowq/{cpu}"] * 3
    msgs = expect_errors.messages
    assert len(msgs) == 6
    assert all("exception handler" in m and "f-handler" in m for m in msgs)


@pytest.mark.asyncio
async def test_work_whose_own_await_is_cancelled_is_a_failure_not_a_dead_worker() -> None:
    """A CancelledError that comes out of the work's own await (not a cancelled worker) goes to
    the handler, counted as failed; the pool keeps serving and the shutdown has nothing left."""
    got: list[tuple[str, str]] = []

    def handler(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
        got.append((wq.name, type(exc).__name__))

    waiting = threading.Event()
    box: list[asyncio.Future[None]] = []

    async def waits(w: aw.Work) -> None:
        fut = asyncio.get_running_loop().create_future()
        box.append(fut)
        waiting.set()
        await fut

    async with aw.Runtime(cpus=2, loop_factory=pool_kind(), shutdown_timeout=GUARD) as rt:
        wq = aw.alloc_workqueue("f-cancelled", 0, 0, exception_handler=handler)
        w = aw.Work(waits)
        assert aw.queue_work_on(0, wq, w)
        await wait_until(waiting.is_set, "the item to wait")
        rt.pools[0].loop.call_soon_threadsafe(box[0].cancel)
        await guarded(aw.flush_work(w), "flush_work")
        assert got == [("f-cancelled", "CancelledError")]
        assert wq.stats().failed == 1
        assert await served(wq, 0) == ["aiowq/0"] * 3
    assert rt.unfinished == []


@pytest.mark.asyncio
async def test_cancel_work_sync_of_a_running_item_waits_and_the_item_can_be_queued_again() -> None:
    """R11 from outside, while it runs: a self-requeueing item stops, nothing else is hurt."""
    runs: list[str] = []
    release = threading.Event()
    started = threading.Event()

    async def again(w: aw.Work) -> None:
        runs.append(tname())
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.001)
        aw.queue_work(w.wq, w)  # type: ignore[attr-defined]  # keeps requeueing itself

    class Self(aw.Work):
        __slots__ = ("wq",)

    async with aw.Runtime(cpus=2, loop_factory=pool_kind(), shutdown_timeout=GUARD) as rt:
        wq = aw.alloc_workqueue("f-cancel-sync", 0, 0)
        w = Self(again)
        w.wq = wq
        assert aw.queue_work_on(1, wq, w)
        await wait_until(started.is_set, "the item to start")
        canceller = asyncio.ensure_future(aw.cancel_work_sync(w))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not canceller.done()  # it waits for the run
        assert not aw.queue_work(wq, w)  # R11: cannot be queued meanwhile
        release.set()
        assert await guarded(canceller, "cancel_work_sync") is False  # it was running, not pending
        assert aw.work_busy(w) == aw.WorkBusy(0)
        n = len(runs)
        await served(wq, 1)
        assert len(runs) == n  # the self-requeue was refused: it stopped
        release.clear()
        started.clear()
        assert aw.queue_work(wq, w)  # and it can be queued again
        await wait_until(started.is_set, "the item to run again")
        release.set()
        assert await guarded(aw.cancel_work_sync(w), "cancel_work_sync") in (True, False)
    assert rt.unfinished == []


# -- work that cancels or destroys its own queue (R15) -----------------------------------------


@pytest.mark.asyncio
async def test_work_that_destroys_or_flushes_its_own_queue_gets_a_deadlock_error() -> None:
    """R15: raised at once; cancel_work of the queue's other items works from there; the queue
    goes on serving and is destroyed normally afterwards."""
    out: dict[str, object] = {}
    others = [aw.Work(lambda w: out.setdefault("other ran", True)) for _ in range(3)]

    queued = threading.Event()

    async def suicidal(w: aw.Work) -> None:
        # Not before the host has queued the others behind it (a loaded host thread lost
        # that race, and cancel_work found others[0] not queued yet).
        assert await asyncio.to_thread(queued.wait, GUARD)
        wq = w.wq  # type: ignore[attr-defined]
        for name, call in (
            ("destroy", aw.destroy_workqueue),
            ("drain", aw.drain_workqueue),
            ("flush", aw.flush_workqueue),
        ):
            try:
                await call(wq)
                out[name] = "returned"
            except aw.WorkqueueDeadlockError as exc:
                out[name] = str(exc)
        for name, call2 in (("cancel_sync", aw.cancel_work_sync), ("flush_work", aw.flush_work)):
            try:
                await call2(w)
                out[name] = "returned"
            except aw.WorkqueueDeadlockError as exc:
                out[name] = str(exc)
        out["cancel others"] = [aw.cancel_work(o) for o in others]

    class Own(aw.Work):
        __slots__ = ("wq",)

    async with aw.Runtime(cpus=2, loop_factory=pool_kind(), shutdown_timeout=GUARD) as rt:
        for wq in (aw.alloc_ordered_workqueue("f-own-ordered"), aw.alloc_workqueue("f-own", 0, 1)):
            out.clear()
            queued.clear()
            w = Own(suicidal)
            w.wq = wq
            assert aw.queue_work_on(0, wq, w)
            for o in others:
                assert aw.queue_work_on(0, wq, o)  # behind it: max_active 1
            queued.set()
            await guarded(aw.flush_work(w), "the suicidal item")
            await guarded(aw.flush_workqueue(wq), "flush")
            for name in ("destroy", "drain", "flush", "cancel_sync", "flush_work"):
                assert isinstance(out[name], str) and out[name] != "returned", (name, out)
            assert wq.name in str(out["destroy"])
            assert out["cancel others"] == [True, True, True]
            assert "other ran" not in out
            assert await served(wq, 1) and not wq.destroyed
            await guarded(aw.destroy_workqueue(wq), "destroy")
            assert wq.destroyed
            with pytest.raises(aw.WorkqueueDestroyedError, match=wq.name):
                aw.queue_work(wq, aw.Work(lambda w: None))
    assert rt.unfinished == []


_SUBTASK_WAYS = ["wait_for", "gather", "create_task", "taskgroup", "wait", "shield"]


async def _await_in_subtask(how: str, call: Any) -> Any:
    """Await ``call`` the way ``how`` says, each in a task other than the caller's."""
    async with asyncio.timeout(0.5):  # the guard: a deadlock shows up as TimeoutError
        if how == "wait_for":
            return await asyncio.wait_for(call, 5)  # a new Task on 3.11
        if how == "gather":
            return (await asyncio.gather(call))[0]
        if how == "create_task":
            return await asyncio.create_task(call)
        if how == "taskgroup":
            try:
                async with asyncio.TaskGroup() as tg:
                    t = tg.create_task(call)
            except BaseExceptionGroup as eg:
                raise eg.exceptions[0] from None
            return t.result()
        if how == "wait":
            t = asyncio.ensure_future(call)
            await asyncio.wait({t})
            return t.result()
        assert how == "shield"
        return await asyncio.shield(call)


@pytest.mark.asyncio
@pytest.mark.parametrize("how", _SUBTASK_WAYS)
@pytest.mark.parametrize("barrier", ["flush_workqueue", "flush_work_self", "cancel_sync_self"])
async def test_r15_holds_when_the_work_awaits_the_barrier_in_a_subtask(
    how: str, barrier: str
) -> None:
    """Regression (was /tmp/repro_r15_bypassed_by_wait_for.py): R15 was checked against the
    worker's own Task only, so the same call awaited through another task deadlocked."""
    wq = aw.alloc_workqueue("f-r15-subtask", 0, 2)
    box: list[BaseException] = []

    async def fn(w: aw.Work) -> None:
        if barrier == "flush_workqueue":
            call = aw.flush_workqueue(wq)
        elif barrier == "flush_work_self":
            call = aw.flush_work(w)
        else:
            call = aw.cancel_work_sync(w)
        try:
            await _await_in_subtask(how, call)
        except BaseException as exc:
            box.append(exc)

    async with wq:
        assert aw.queue_work(wq, aw.Work(fn))
        await guarded(aw.flush_workqueue(wq), "flush")
    assert len(box) == 1, box
    assert isinstance(box[0], aw.WorkqueueDeadlockError), repr(box[0])


@pytest.mark.asyncio
async def test_a_task_the_work_does_not_await_may_flush_its_queue() -> None:
    """Fire and forget is not a deadlock: the spawned task waits for the item, which does not
    wait for it. R15 must not refuse it (the await graph decides, not the inherited context)."""
    wq = aw.alloc_workqueue("f-r15-detached", 0, 2)
    spawned: list[asyncio.Task[None]] = []
    order: list[str] = []

    async def fn(w: aw.Work) -> None:
        async def later() -> None:
            order.append("flush called")  # while the item runs: this is what must not raise
            await aw.flush_workqueue(wq)
            order.append("flushed")

        spawned.append(asyncio.create_task(later()))
        await asyncio.sleep(0)  # the task starts and parks in the flush
        await asyncio.sleep(0)
        order.append("work ends")

    async with wq:
        assert aw.queue_work(wq, aw.Work(fn))
        await guarded(aw.flush_workqueue(wq), "flush")
        await guarded(spawned[0], "detached flush")
    assert order == ["flush called", "work ends", "flushed"]


# -- freezing from the wrong context, twice ------------------------------------------------------


@pytest.mark.asyncio
async def test_two_overlapping_freezes_both_return() -> None:
    """Regression (fixed in 28a7b36; was /tmp/repro_double_freeze_hangs.py): a second freeze
    overwrote the first one's gate, so the first never returned, not even after thaw (R18)."""
    gate = asyncio.Event()

    async def fn(w: aw.Work) -> None:
        await gate.wait()

    wq = aw.alloc_workqueue("f-freeze-twice", aw.WQ.FREEZABLE)
    first = second = None
    try:
        assert aw.queue_work(wq, aw.Work(fn))
        await asyncio.sleep(0)
        first = asyncio.ensure_future(aw.freeze_workqueues())
        await asyncio.sleep(0)
        second = asyncio.ensure_future(aw.freeze_workqueues())
        await asyncio.sleep(0)
        gate.set()
        await asyncio.wait({first, second}, timeout=0.3)
        aw.thaw_workqueues()
        await asyncio.wait({first, second}, timeout=0.3)
        assert second.done()
        assert first.done(), "the first freeze never returned (even after thaw)"
    finally:
        gate.set()
        aw.thaw_workqueues()
        for f in (first, second):
            if f is not None and not f.done():
                f.cancel()
        await guarded(aw.destroy_workqueue(wq), "destroy")


@pytest.mark.asyncio
async def test_freeze_from_a_freezable_work_item_raises_instead_of_hanging() -> None:
    """Regression (fixed in 28a7b36 for a direct await; was
    /tmp/repro_freeze_from_freezable_work_hangs.py): it waited for itself (R15's spirit)."""
    out: list[object] = []

    async def fn(w: aw.Work) -> None:
        try:
            async with asyncio.timeout(0.5):  # a guard in this task, not a subtask
                await aw.freeze_workqueues()
            out.append("returned")
        except BaseException as exc:
            out.append(exc)

    wq = aw.alloc_workqueue("f-freeze-self", aw.WQ.FREEZABLE)
    try:
        assert aw.queue_work(wq, aw.Work(fn))
        await guarded(aw.flush_workqueue(wq), "flush")
    finally:
        aw.thaw_workqueues()
        await guarded(aw.destroy_workqueue(wq), "destroy")
    assert len(out) == 1 and isinstance(out[0], aw.WorkqueueDeadlockError), out


# -- a pool loop blocked for a second -------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_pool_blocked_for_a_second_does_not_stop_the_other_pool() -> None:
    """time.sleep(1) in an async work on pool 0: pool 1 serves its own items and the unbound
    queue's meanwhile (checked against the blocker's own flag, not the clock); the watchdog
    reports the hog at WARNING; after the block, pool 0 serves again."""
    blocking = threading.Event()
    unblocked = threading.Event()

    async def hog(w: aw.Work) -> None:
        blocking.set()
        time.sleep(1.0)  # noqa: ASYNC251 - blocking the pool loop is the point
        unblocked.set()

    async with aw.Runtime(cpus=2, loop_factory=pool_kind(), shutdown_timeout=GUARD) as rt:
        wq = aw.alloc_workqueue("f-block", 0, 0)
        ub = aw.alloc_workqueue("f-block-unbound", aw.WQ.UNBOUND, 0)
        await served(wq, 0)
        await served(wq, 1)
        h = aw.Work(hog)
        assert aw.queue_work_on(0, wq, h)
        await wait_until(blocking.is_set, "the hog to start")
        assert await served(wq, 1, n=5) == ["aiowq/1"] * 5
        names = await served(ub, n=20)  # a burst: pool 1 takes them
        assert set(names) == {"aiowq/1"}
        assert not unblocked.is_set(), "the block ended before pool 1 had served: too slow"
        await guarded(aw.flush_work(h), "the hog")
        assert await served(wq, 0) == ["aiowq/0"] * 3
        assert wq.stats().cpu_hogs >= 1
    assert rt.unfinished == []


@pytest.mark.asyncio
async def test_a_lone_unbound_item_does_not_wait_for_a_blocked_pool() -> None:
    """Regression (fixed in 945ea13; was /tmp/repro_unbound_waits_for_blocked_pool.py): an
    unbound item went to a pool with parked workers even when that pool's loop was stuck in
    another item, and waited for it while the other pool was idle."""
    blocking = threading.Event()
    unblocked = threading.Event()

    async def hog(w: aw.Work) -> None:
        blocking.set()
        time.sleep(1.0)  # noqa: ASYNC251 - blocking the pool loop is the point
        unblocked.set()

    async def short(w: aw.Work) -> None:
        await asyncio.sleep(0.001)

    async with aw.Runtime(cpus=2, loop_factory=pool_kind(), shutdown_timeout=GUARD):
        wq = aw.alloc_workqueue("f-lone", 0, 0)
        ub = aw.alloc_workqueue("f-lone-unbound", aw.WQ.UNBOUND, 0)
        for cpu in (0, 1):  # both pools get parked workers
            for _ in range(4):
                assert aw.queue_work_on(cpu, wq, aw.Work(short))
        await guarded(aw.flush_workqueue(wq), "warm-up")
        assert aw.queue_work_on(0, wq, aw.Work(hog))
        await wait_until(blocking.is_set, "the hog to start")
        late = []
        for _ in range(2):  # the round-robin start may point at either pool: try both
            ran = threading.Event()
            assert aw.queue_work(ub, aw.Work(lambda w, ran=ran: ran.set()))
            await wait_until(ran.is_set, "the unbound item")
            late.append(unblocked.is_set())
        await guarded(aw.flush_workqueue(wq), "the hog")
        assert late == [False, False], "a lone unbound item waited for the blocked pool"


# -- in a child process: faults that break the runtime -------------------------------------------

CHILD_MODES = ["kbi_async", "sysexit_sync", "loop_stop", "shutdown_from_pool"]


@pytest.fixture(scope="module")
def child_results() -> dict[tuple[str, str], dict[str, Any]]:
    """Run every (mode, loop) child at once (they mostly wait) and collect their reports."""
    procs = {
        (mode, kind): subprocess.Popen(
            [sys.executable, str(CHILD), mode, kind],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode in CHILD_MODES
        for kind in LOOP_KINDS
    }
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for key, p in procs.items():
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        lines = out.strip().splitlines()
        try:
            results[key] = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            results[key] = {"error": f"no report; stderr: {err[-2000:]}"}
        results[key]["stderr"] = err
    return results


def _child(results: dict[tuple[str, str], dict[str, Any]], mode: str, kind: str) -> dict[str, Any]:
    r = results[(mode, kind)]
    assert "error" not in r, r
    return r


# Fixed (were /tmp/repro_pool_thread_dies_on_baseexception.py, /tmp/repro_pool_loop_stopped.py):
# a pool thread that died was not reported, stranded its items, was still routed to (queueing
# raised a bare RuntimeError after marking the item pending), and broke the shutdown.
def _params() -> list[Any]:
    return [pytest.param(mode, kind) for mode in CHILD_MODES for kind in LOOP_KINDS]


@pytest.mark.parametrize(("mode", "kind"), _params())
def test_after_a_fatal_fault_on_pool_0_pool_1_keeps_serving(
    child_results: dict[tuple[str, str], dict[str, Any]], mode: str, kind: str
) -> None:
    r = _child(child_results, mode, kind)
    # What the fault does to pool 0: its thread ends, except for the refused shutdown.
    assert r["pool0_dead"] is (mode != "shutdown_from_pool"), r
    assert r["pool1_serves"] is True, r


@pytest.mark.parametrize(("mode", "kind"), _params())
def test_after_a_fatal_fault_on_pool_0_unbound_queues_keep_serving(
    child_results: dict[tuple[str, str], dict[str, Any]], mode: str, kind: str
) -> None:
    r = _child(child_results, mode, kind)
    assert r["unbound_serves"] is True, r


@pytest.mark.parametrize(
    ("mode", "kind"),
    _params(),
)
def test_a_fatal_fault_is_reported(
    child_results: dict[tuple[str, str], dict[str, Any]], mode: str, kind: str
) -> None:
    r = _child(child_results, mode, kind)
    if mode == "shutdown_from_pool":  # fixed in 692ace3: refused at once, naming the problem
        assert any("WorkqueueError" in x and "host loop" in x for x in r["shutdown_in_work"]), r
        return
    died = [m for m in r["reported"] if "pool cpu=0 died" in m]
    assert len(died) == 1, f"the pool's death was not reported once: {r}"
    if mode != "loop_stop":  # the report names the exception and the item that raised it
        exc = "KeyboardInterrupt" if mode.startswith("kbi") else "SystemExit"
        assert exc in died[0] and "fn=main.<locals>.bad" in died[0] and "'faulty'" in died[0], died


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_what_a_dead_pool_held_is_reported_and_returned_by_shutdown(
    child_results: dict[tuple[str, str], dict[str, Any]], kind: str
) -> None:
    """Pool 0's loop is stopped while it runs an item of a max_active 1 queue with two more
    waiting for the slot and a timer armed: none may vanish. The waiting and armed ones are
    taken back when the pool dies (named in its ERROR) and returned by rt.shutdown(); the cut
    run is reported to the exception handler as cancelled."""
    r = _child(child_results, "loop_stop", kind)
    assert r["unfinished"] == ["faulty-narrow:queued", "faulty-narrow:queued", "faulty:armed"], r
    died = next(m for m in r["reported"] if "pool cpu=0 died" in m)
    assert died.count("'faulty-narrow' (queued)") == 2 and "'faulty' (armed)" in died, died
    assert any("faulty-narrow" in m and "cancelled while running" in m for m in r["reported"]), r


@pytest.mark.parametrize(("mode", "kind"), _params())
def test_queueing_on_a_dead_pool_raises_a_workqueue_error_or_runs_never_strands(
    child_results: dict[tuple[str, str], dict[str, Any]], mode: str, kind: str
) -> None:
    r = _child(child_results, mode, kind)
    q = r["queue_on_dead"]
    if q == "returned True":
        assert r["victim_ran"] is True, r
    else:
        assert q.startswith("raised Workqueue"), r
        assert r["victim_pending"] is False, r  # never left PENDING with nobody to run it


@pytest.mark.parametrize(("mode", "kind"), _params())
def test_after_a_fatal_fault_shutdown_completes_and_leaves_nothing_behind(
    child_results: dict[tuple[str, str], dict[str, Any]], mode: str, kind: str
) -> None:
    r = _child(child_results, mode, kind)
    assert r["shutdown"] == "ok", r
    assert r["threads_after"] == [], r
    assert r["new_runtime"] is True, r


_LOOP_END = """
import asyncio, gc
import aioworkqueue as aw

async def job(w):
    await asyncio.sleep(0.01)

async def main():
    wq = aw.alloc_workqueue("ends-early", 0, 1)
    for _ in range(5):
        aw.queue_work(wq, aw.Work(job))
    await asyncio.sleep(0)

asyncio.run(main())
gc.collect()
"""


def test_a_loop_that_ends_with_queued_items_leaves_no_task_behind() -> None:
    r = subprocess.run(
        [sys.executable, "-c", _LOOP_END], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stderr
    assert "Task was destroyed but it is pending" not in r.stderr, r.stderr
    assert "Exception ignored" not in r.stderr, r.stderr


@pytest.mark.asyncio
async def test_a_worker_cancelled_from_outside_is_replaced_while_the_loop_runs(
    expect_errors: Any,
) -> None:
    """The teardown rule above must not fire when one worker is cancelled and the loop goes on
    (the main task is not cancelling): the run is reported, and the items behind it still run."""
    wq = aw.alloc_workqueue("f-worker-cancelled", 0, 1)
    started = asyncio.Event()
    ran: list[int] = []

    async def blocker(w: aw.Work) -> None:
        started.set()
        await asyncio.sleep(3600)

    async def after(w: aw.Work) -> None:
        ran.append(1)

    assert aw.queue_work(wq, aw.Work(blocker))
    for _ in range(3):
        assert aw.queue_work(wq, aw.Work(after))
    await started.wait()
    me = asyncio.current_task()
    workers = [t for t in asyncio.all_tasks() if t is not me and t.get_name().startswith("aiowq/")]
    assert len(workers) == 1
    workers[0].cancel()
    await guarded(aw.flush_workqueue(wq), "flush after a worker was cancelled")
    assert ran == [1, 1, 1]
    assert any("f-worker-cancelled" in m and "cancelled" in m for m in expect_errors.messages)
    await guarded(aw.destroy_workqueue(wq), "destroy")


@pytest.mark.asyncio
async def test_a_parked_worker_cancelled_from_outside_is_replaced_while_the_loop_runs() -> None:
    """As above, for a worker cancelled while it waits for work: the pool must not give up
    spawning workers while the loop goes on (it did: any parked cancel marked it dying)."""
    wq = aw.alloc_workqueue("f-parked-cancelled", 0, 1)
    ran: list[int] = []
    assert aw.queue_work(wq, aw.Work(lambda w: ran.append(0)))
    await guarded(aw.flush_workqueue(wq), "first flush")  # a worker now parks, idle
    me = asyncio.current_task()
    workers = [t for t in asyncio.all_tasks() if t is not me and t.get_name().startswith("aiowq/")]
    assert workers
    for t in workers:
        t.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    for i in range(1, 4):
        assert aw.queue_work(wq, aw.Work(lambda w, i=i: ran.append(i)))
    await guarded(aw.flush_workqueue(wq), "flush after the parked workers were cancelled")
    assert ran == [0, 1, 2, 3]
    await guarded(aw.destroy_workqueue(wq), "destroy")
