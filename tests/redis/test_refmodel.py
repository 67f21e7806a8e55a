"""The Redis backend against the in-process suite's reference model (``tests/_refmodel.py``).

A hypothesis ``RuleBasedStateMachine`` drives five items over two Redis queues ("u":
``max_active=2``; "o": ordered) from two client Apps, each on its own event loop in its own
thread (two connections, two loops), with ``queue_work``, ``queue_delayed_work`` (an hour ahead),
``mod_delayed_work`` (0 or an hour), ``cancel_work`` and, in the background, ``cancel_work_sync``,
``flush_work`` and ``flush_workqueue``. Armed items fire only through the "fire" rule (the
**promote** script with every timer due), so nothing depends on wall-clock time. Two REAL
workers (``app.worker``, concurrency 2 each, one per loop, each with its own App) run the items:
the work function (registered under one name, a different closure per worker App, so each run
knows its worker) logs its start and end, checks that it is not pending (R2) and not running
elsewhere (R3 across the workers), and blocks on a per-item gate that only the "release" rule
opens (optionally making the run raise, R16).

Everything goes into one log in the order it happens (a call's slot is taken before the call,
so what it sets off comes after it); the model replays it and checks each entry: every answer
(R1, R9, R10, R11 for the calling App), every start (R2, R3 over both workers, R4, R6 on "o",
R7 over both workers together, R8: an armed item never starts), every barrier's return and what
it waited for (R11, R12, R13). After each step the machine waits until the model and the
server agree (``work_busy`` of every item, ``wq.stats()``, the live entries of each stream) and
nothing the model says must start is left unstarted. At the end every gate opens and every
armed item fires: every accepted instance ran exactly once or was cancelled with True (R4).

Where the Redis backend differs from one process by design, :class:`RedisModel` says so, citing
docs/redis.md; the shared checks of ``tests/_refmodel.py`` are not loosened.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import itertools
import os
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule, run_state_machine_as_test

import aioworkqueue as aw
import aioworkqueue.redis as awr
from aioworkqueue.redis import _ops
from aioworkqueue.redis._keys import GROUP

from .. import _refmodel as ref
from .._refmodel import ModelMachine, a_run_waits, model_step
from ..reliability._support import HostLoop, wait_until_sync
from .conftest import RedisServer

#: Hang guard of every wait (never reached when the backend works; a failing example costs it).
GUARD = 8.0
HOUR = 3600.0
#: queue -> (max_active, ordered)
QUEUES = {"u": (2, False), "o": (1, True)}
#: The queue of each item. The pending bit lives in the queue's keys (docs/redis.md, "Keys of
#: queue Q": ``T:pend``, ``T:run``), so an item is one key on one queue here.
ITEM_WQ = ("u", "u", "u", "o", "o")
N_ITEMS = len(ITEM_WQ)
CLIENTS = ("c0", "c1")
WORKERS = ("w0", "w1")
LOOP_OF = {"c0": 0, "w0": 0, "c1": 1, "w1": 1}
#: Per worker. Two workers hold 4 slots, more than the 3 the queues' max_active allow together,
#: so some worker always has a free slot and reads every new entry (see ``disagreements``).
CONCURRENCY = 2
LEASE = 300.0  # no lease expires during an example: no claim, no redelivery
MAX_BG = 3

#: Found by this machine, fixed 2026-12-03: entries that reached two idle workers at once
#: (each worker's blocking ``XREADGROUP`` took a part of a batch, then each sent its
#: **start_many**) started in the order the scripts arrived, not the stream's (R7's FIFO).
#: Workers now read only inside **take**; ``test_fifo_across_two_readers`` is the case by hand.

_UNSET = object()  # the result slot of a logged call that has not returned yet
_EXAMPLES = itertools.count()
_MARKS = itertools.count()
#: The background call a task makes (for the snapshot mark below).
_BID: contextvars.ContextVar[int | None] = contextvars.ContextVar("refmodel_bid", default=None)

Entry = list[Any]


# -- the reference model, with the Redis backend's documented differences ------------------------


class RedisModel(ref.RefModel):
    """SPEC §3 for the machine's items on the Redis queues, driven by the log."""

    no_slot = (
        "beyond max_active over all workers (R7), out of FIFO order (R7), or not next in order (R6)"
    )

    def __init__(self) -> None:
        super().__init__(N_ITEMS, {q: ref.MWq(ma) for q, (ma, _) in QUEUES.items()})
        self.inserted = dict.fromkeys(QUEUES, 0)  # stream entries added, per queue
        self.deferred: set[int] = set()  # instances queued while their item ran
        self.sync_app: dict[int, str] = {}  # cancel_work_sync bid -> the App that called it
        self.excused: set[int] = set()  # id() of cancel_work_sync Bgs another App re-queued
        self.starts_on: collections.Counter[str] = collections.Counter()

    def running_on(self, wq: str) -> int:
        return sum(1 for it in self.items if it.running is not None and it.running.wq == wq)

    # A slot is taken when an instance starts, not when it is queued: the **start** script
    # compares `T:active` (the instances running now, over all workers) with max_active, and an
    # entry read while the queue is full goes on `T:inactive` (docs/redis.md, **start**). So a
    # queued instance holds no slot; every queued instance waits on its link's FIFO until it
    # starts, and ``starting`` decides whether this start may take a slot.

    def insert(
        self, i: int, wq: str, link: int = ref.UNBOUND, deadline: float | None = None
    ) -> None:
        it = self.items[i]
        was_running = it.running is not None
        super().insert(i, wq, link, deadline)
        inst = it.queued
        assert inst is not None
        self.inserted[wq] += 1
        if was_running:
            self.deferred.add(inst.iid)
        if it.active:
            it.active = False
            self.wqs[wq].inactive.setdefault(link, []).append(i)

    def activate(self, wq: str, link: int, all_: bool = False) -> None:
        """Nothing is handed a slot ahead of its start (see above)."""

    def starting(self, i: int, inst: ref.Inst) -> None:
        q = self.wqs[inst.wq]
        waiting = q.inactive.get(inst.link, [])
        free = q.max_active - self.running_on(inst.wq)
        if free <= 0:
            return  # R7 over all workers: the shared check fails the start
        if QUEUES[inst.wq][1]:
            ok = waiting[:1] == [i]  # R6: only the oldest queued instance
        elif inst.iid in self.deferred:
            # A deferred instance (queued while its item ran: `T:defer`) holds no slot while it
            # waits; the finish of its predecessor hands it that run's slot, before the head of
            # `T:inactive` (docs/redis.md, **start** and **finish**: "defer[k] first").
            ok = True
        else:
            fifo = [j for j in waiting if self._iid(j) not in self.deferred]
            ok = i in fifo[:free]  # R7: the oldest ones get the free slots
        if ok:
            waiting.remove(i)
            self.items[i].active = True

    def _iid(self, j: int) -> int:
        inst = self.items[j].queued
        assert inst is not None
        return inst.iid

    # -- R11: the mark of cancel_work_sync is the calling App's ---------------------------------

    def bg_call(
        self, bid: int, kind: str, i: int | None, wq: str | None, caller: str | None = None
    ) -> None:
        assert caller is not None
        self.sync_app[bid] = caller
        super().bg_call(bid, kind, i, wq, caller)

    def is_disabled(self, i: int, caller: object = None) -> bool:
        # docs/redis.md, **cancel_work_sync**: while it waits, queue_* of the item from the same
        # App answer False; other clients may queue it again (deviation from R11).
        return any(
            bg.kind == "cancel_work_sync" and bg.item == i and self.sync_app[bid] == caller
            for bid, bg in self.bgs.items()
        )

    def sync_return_excused(self, bg: ref.Bg) -> bool:
        # docs/redis.md, **cancel_work_sync**: "on return it may be pending or running again"
        # when another App queued it while it waited; never otherwise.
        return id(bg) in self.excused

    # -- log entries --

    def apply(self, e: Sequence[Any]) -> None:
        kind = e[0]
        if kind == "op":
            self.op(*e[1:])
        elif kind == "start":
            self.started(e[1], f"on worker {e[2]}")
            self.starts_on[e[2]] += 1
        elif kind == "fire":
            self.fire_all(e[1], e[2])
        elif kind == "violation":
            raise AssertionError(e[1])
        else:
            super().apply(e)

    def fire_all(self, wq: str, order: list[int]) -> None:
        """The promote script fired every armed item of ``wq``, in ``order`` (the server's: due
        time in whole ms, then key, docs/redis.md **promote**)."""
        armed = sorted(j for j, it in enumerate(self.items) if it.armed and it.armed.wq == wq)
        assert sorted(order) == armed, f"the server had {order} armed on {wq}, the model {armed}"
        for j in order:
            self.fire(j)

    def op(self, caller: str, name: str, i: int, arg: object, result: object) -> None:
        it = self.items[i]
        what = f"{name}(item {i}{f', {arg}' if arg is not None else ''}) from {caller}"
        if name == "cancel":
            expect, why = self.expected(i, "cancel")
            assert result is expect, f"{what} returned {result!r}, expected {expect} ({why}): {it}"
            if expect:
                self.cancel(i)
            return
        call = "mod" if name == "mod" else "queue"
        expect, why = self.expected(i, call, caller)
        assert result is expect, f"{what} returned {result!r}, expected {expect} ({why}): {it}"
        if not self.takes_effect(i, call, caller):
            return
        for bid, bg in self.bgs.items():
            if bg.kind == "cancel_work_sync" and bg.item == i and self.sync_app[bid] != caller:
                self.excused.add(id(bg))
        delay = HOUR if name == "delayed" else arg if name == "mod" else 0
        assert isinstance(delay, float | int)
        self.place(i, ITEM_WQ[i], mod=call == "mod", delay=delay)

    # -- progress --

    def stuck(self) -> list[str]:
        problems = super().stuck()  # releases and barriers (its slot check never fires here)
        for name, q in self.wqs.items():
            waiting = q.inactive.get(ref.UNBOUND, [])
            free = q.max_active - self.running_on(name)
            startable = [j for j in waiting if self.items[j].running is None]
            if QUEUES[name][1]:
                startable = [j for j in startable if j == waiting[0]]
            if free > 0 and startable:
                problems.append(f"{name} has {free} free slot(s) and {startable} startable")
        return problems


# -- the machine ----------------------------------------------------------------------------------


class Env:
    """What the machine borrows from the test function."""

    url: str
    prefix: str
    loops: list[HostLoop]
    snapshots: set[int]
    starts_on: collections.Counter[str]
    examples: int


ENV = Env()

_real_wait_until = _ops._wait_until


async def _marking_wait_until(wq: awr.RemoteWorkqueue, done: Callable[[], Any]) -> None:
    """``_ops._wait_until``, noting first that the background call ``_BID`` has taken what it
    waits for (the ids of ``flush_work`` / ``cancel_work_sync``, the barrier of
    ``flush_workqueue``): the machine makes its next call only after that, so the snapshot is
    taken where the log says the call was made."""
    bid = _BID.get()
    if bid is not None:
        ENV.snapshots.add(bid)
    await _real_wait_until(wq, done)


ITEM = st.integers(0, N_ITEMS - 1)
CLIENT = st.sampled_from(CLIENTS)
room_for_bg = precondition(lambda self: len(self.bg) < MAX_BG)


class RedisRefMachine(ModelMachine):
    model: RedisModel

    def __init__(self) -> None:
        super().__init__()
        self.broken = True
        self.model = RedisModel()
        self.log: list[Entry] = []
        self.seen = 0
        self.gates: list[concurrent.futures.Future[Any] | None] = [None] * N_ITEMS
        self.in_run = [0] * N_ITEMS
        self.run_mu = threading.Lock()
        self.auto_release = False
        self.errors: list[BaseException] = []
        self.bg: dict[int, concurrent.futures.Future[None]] = {}
        self.next_bid = 0
        self.items = []  # ModelMachine.disagreements (in-process) is replaced below
        self.wqs = {}
        prefix = f"{ENV.prefix}m{next(_EXAMPLES)}"
        self.apps: dict[str, awr.App] = {}
        self.rworks: dict[str, list[awr.RemoteWork]] = {}
        self.rwqs: dict[str, dict[str, awr.RemoteWorkqueue]] = {}
        for name in (*CLIENTS, *WORKERS):
            app = awr.App(url=ENV.url, prefix=prefix)
            app.function(self._job_for(name), name="job")
            qs = {q: app.workqueue(q, max_active=ma, ordered=o) for q, (ma, o) in QUEUES.items()}
            works = [app.work("job", i, key=f"k{i}") for i in range(N_ITEMS)]
            for i, w in enumerate(works):
                # An item asks the queue it was last queued on (docs/redis.md): each App's
                # object of an item knows it from the start, as the model's one item does.
                w.workqueue = qs[ITEM_WQ[i]]
            self.apps[name], self.rworks[name], self.rwqs[name] = app, works, qs
        self.stops: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}
        self.serving: dict[str, concurrent.futures.Future[None]] = {}
        for w in WORKERS:
            entered = threading.Event()
            fut = self.serving[w] = self.loop(w).submit(self._serve(w, entered))
            wait_until_sync(
                lambda e=entered, f=fut: e.is_set() or f.done(),  # type: ignore[misc]
                f"worker {w} to start",
                GUARD,
            )
            if fut.done():
                fut.result()  # it failed to start: say why
        self.broken = False

    def loop(self, who: str) -> HostLoop:
        return ENV.loops[LOOP_OF[who]]

    def call(self, who: str, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop(who).call(coro, GUARD)

    async def _serve(self, w: str, entered: threading.Event) -> None:
        stop = asyncio.Event()
        self.stops[w] = (asyncio.get_running_loop(), stop)
        async with self.apps[w].worker(
            queues=list(QUEUES),
            concurrency=CONCURRENCY,
            lease=LEASE,
            stop_timeout=GUARD,
            exception_handler=lambda wq, work, exc: self.errors.append(exc),
            consumer=w,
        ):
            entered.set()
            await stop.wait()

    # -- the work function --

    def _job_for(self, app_name: str) -> Callable[[int], Coroutine[Any, Any, None]]:
        async def job(i: int) -> None:
            await self._run(app_name, i)

        return job

    async def _run(self, w: str, i: int) -> None:
        gate: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.gates[i] = gate
        with self.run_mu:
            self.in_run[i] += 1
            overlap = self.in_run[i] > 1
        pending = await awr.work_pending(self.rworks[w][i])
        self.log.append(["start", i, w])
        if overlap:
            self.log.append(["violation", f"item {i} started on {w} while running (R3)"])
        if pending:
            self.log.append(["violation", f"item {i} was pending when it started on {w} (R2)"])
        action = None if self.auto_release else await asyncio.wrap_future(gate)
        with self.run_mu:
            self.in_run[i] -= 1
        raised = action == "raise"
        self.log.append(["end", i, "raised" if raised else "ok"])
        if raised:
            raise RuntimeError(f"item {i} raises, as the test asked (R16)")

    # -- calls, logged --

    async def _do(self, caller: str, name: str, i: int, arg: object) -> None:
        entry: Entry = ["op", caller, name, i, arg, _UNSET]
        self.log.append(entry)
        w = self.rworks[caller][i]
        q = self.rwqs[caller][ITEM_WQ[i]]
        r: object
        try:
            if name == "queue":
                r = await awr.queue_work(q, w)
            elif name == "delayed":
                r = await awr.queue_delayed_work(q, w, HOUR)
            elif name == "mod":
                r = await awr.mod_delayed_work(q, w, arg)  # type: ignore[arg-type]
            else:
                assert name == "cancel", name
                r = await awr.cancel_work(w)
        except Exception as exc:  # the model says which answer was due
            r = exc
        entry[5] = r

    def op(self, caller: str, name: str, i: int, arg: object = None) -> None:
        self.call(caller, self._do(caller, name, i, arg))

    def start_bg(self, caller: str, kind: str, i: int | None = None, wq: str | None = None) -> None:
        bid = self.next_bid
        self.next_bid += 1

        # The mark's key is unique over the whole test: bids start at 0 in every example, and
        # a bid of an earlier example found in the set would let the next call in too early.
        mark = next(_MARKS)

        async def run() -> None:
            _BID.set(mark)
            self.log.append(["bg_call", bid, kind, i, wq, caller])
            r: object
            try:
                if kind == "flush_workqueue":
                    assert wq is not None
                    r = await awr.flush_workqueue(self.rwqs[caller][wq])  # type: ignore[func-returns-value]
                else:
                    assert i is not None
                    w = self.rworks[caller][i]
                    call = awr.flush_work if kind == "flush_work" else awr.cancel_work_sync
                    r = await call(w)
            except Exception as exc:
                r = exc
            self.log.append(["bg_done", bid, r])

        fut = self.loop(caller).submit(run())
        self.bg[bid] = fut
        # What it waits for is taken in its first scripts: the next call comes after that.
        wait_until_sync(lambda: mark in ENV.snapshots or fut.done(), f"{kind} #{bid} to start")

    # -- keeping the model in step --

    def sync(self) -> None:
        while self.seen < len(self.log):
            entry = self.log[self.seen]
            if entry[0] == "op" and entry[5] is _UNSET:
                return  # its call has not returned yet
            self.seen += 1
            if entry[0] == "bg_done":
                self.bg.pop(entry[1], None)
            self.model.apply(entry)

    async def _server_view(self) -> tuple[list[aw.WorkBusy], dict[str, dict[str, int]]]:
        works = self.rworks["c0"]
        busy = list(await asyncio.gather(*(awr.work_busy(w) for w in works)))
        view: dict[str, dict[str, int]] = {}
        for name, wq in self.rwqs["c0"].items():
            s = await wq.stats()
            s["live"] = int(await wq.call("stream_len"))
            pel = await wq.app.client.xpending(wq.keys.stream, GROUP)
            s["unread"] = s["live"] - int(pel["pending"])
            view[name] = s
        return busy, view

    def disagreements(self) -> list[str]:
        """Where the server differs from the model: ``work_busy`` of each item, and per queue
        its stats, live entries (what flushes wait for) and unread entries."""
        m = self.model
        busy, view = self.call("c0", self._server_view())
        out = []
        for i, got in enumerate(busy):
            it = m.items[i]
            want = aw.WorkBusy(0)
            if it.pending:
                want |= aw.WorkBusy.PENDING
            if it.running is not None:
                want |= aw.WorkBusy.RUNNING
            if got != want:
                out.append(f"work_busy(item {i}) is {got!r}, model says {want!r}: {it}")
        for name, s in view.items():
            q = m.wqs[name]
            pending = sum(1 for j, it in enumerate(m.items) if ITEM_WQ[j] == name and it.pending)
            # `queued` counts stream entries (docs/redis.md **queue** and **promote**: XADD and
            # stats.queued += 1), so an armed item counts when it fires, and a mod_delayed_work
            # to 0 of a queued item, which re-adds it at the tail, counts again. `unread` must be
            # 0: with a free slot somewhere, the workers read every entry at once, so whether
            # an entry was deferred (R3) is settled before the next step.
            got = {k: s[k] for k in ("queued", "completed", "failed", "cancelled", "active")}
            got |= {"pending": s["pending"], "live": s["live"], "unread": s["unread"]}
            want_ = {
                "queued": m.inserted[name],
                "completed": q.completed,
                "failed": q.failed,
                "cancelled": q.cancelled,
                "active": m.running_on(name),
                "pending": pending,
                "live": len(q.live),
                "unread": 0,
            }
            if got != want_:
                out.append(f"stats of {name}: server {got}, model {want_}")
        return out

    def settle(self, limit: float = GUARD) -> None:
        """Wait until everything the last step set off has happened, and the server agrees."""
        problems: list[str] = []
        failed: list[AssertionError] = []

        def calm() -> bool:
            nonlocal problems
            try:
                self.sync()
            except AssertionError as exc:
                failed.append(exc)
                return True
            problems = self.model.stuck() + self.disagreements()
            return not problems

        try:
            wait_until_sync(calm, "the workers and the server to settle", limit)
        except AssertionError:
            raise AssertionError("no agreement: " + "; ".join(problems)) from None
        if failed:
            raise failed[0]

    catch_up = settle

    # -- rules --

    @rule(i=ITEM, c=CLIENT)
    @model_step
    def queue_work(self, i: int, c: str) -> None:
        self.op(c, "queue", i)

    @rule(i=ITEM, c=CLIENT)
    @model_step
    def queue_delayed_work(self, i: int, c: str) -> None:
        self.op(c, "delayed", i)

    @rule(i=ITEM, c=CLIENT, delay=st.sampled_from([0.0, HOUR]))
    @model_step
    def mod_delayed_work(self, i: int, c: str, delay: float) -> None:
        self.op(c, "mod", i, delay)

    @rule(i=ITEM, c=CLIENT)
    @model_step
    def cancel_work(self, i: int, c: str) -> None:
        self.op(c, "cancel", i)

    @rule(wq=st.sampled_from(list(QUEUES)), c=CLIENT)
    @model_step
    def fire(self, wq: str, c: str) -> None:
        self._fire(wq, c)

    def _fire(self, wq: str, c: str) -> None:
        q = self.rwqs[c][wq]

        async def promote() -> None:
            # Only this machine arms or fires (the workers' own promote waits for the due time,
            # an hour away), so the order read here is the order promote fires them in.
            keys = await q.app.client.zrange(q.keys.delayed, 0, -1)
            self.log.append(["fire", wq, [int(k.decode()[1:]) for k in keys]])
            await q.call("promote", "1")

        self.call(c, promote())

    @a_run_waits
    @rule(k=ITEM, action=st.sampled_from([None, None, "raise"]))
    @model_step
    def release(self, k: int, action: str | None) -> None:
        running = self.model.releasable()
        i = running[k % len(running)]
        gate = self.gates[i]
        assert gate is not None and not gate.done()
        self.log.append(["release", i])
        gate.set_result(action)

    @room_for_bg
    @rule(kind=st.sampled_from(["flush_work", "cancel_work_sync"]), i=ITEM, c=CLIENT)
    @model_step
    def barrier_on_item(self, kind: str, i: int, c: str) -> None:
        self.start_bg(c, kind, i=i)

    @room_for_bg
    @rule(wq=st.sampled_from(list(QUEUES)), c=CLIENT)
    @model_step
    def flush_workqueue(self, wq: str, c: str) -> None:
        self.start_bg(c, "flush_workqueue", wq=wq)

    @invariant()
    def no_violation_so_far(self) -> None:
        self.sync()
        assert not any(e[0] == "violation" for e in self.log)

    # -- the end --

    def _release_all(self) -> None:
        self.auto_release = True
        for gate in self.gates:
            if gate is not None and not gate.done():
                gate.set_result(None)

    def finish(self) -> None:
        m = self.model
        self.sync()
        self.log.append(["auto_release"])
        self._release_all()
        for wq in QUEUES:
            if any(it.armed and it.armed.wq == wq for it in m.items):
                self._fire(wq, "c0")
        self.settle()
        assert not self.bg, f"background calls still waiting: {sorted(self.bg)}"
        m.check_end()  # R4: each accepted instance ran once, or was cancelled with True
        assert not m.bgs, f"barriers never returned: {[b.desc for b in m.bgs.values()]}"
        assert len(self.errors) == sum(it.fails for it in m.items), self.errors
        ENV.starts_on.update(m.starts_on)
        ENV.examples += 1

    def close(self) -> None:
        self._release_all()
        try:
            for loop, stop in self.stops.values():
                loop.call_soon_threadsafe(stop.set)
            for fut in self.serving.values():
                fut.result(GUARD * 2)
            for fut in list(self.bg.values()):
                if not fut.done():
                    fut.cancel()
        finally:
            for name, app in self.apps.items():
                self.call(name, app.aclose())


@pytest.fixture
def env(
    redis_server: RedisServer, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Env]:
    ENV.url = redis_server.url
    ENV.prefix = key_prefix
    ENV.snapshots = set()
    ENV.starts_on = collections.Counter()
    ENV.examples = 0
    ENV.loops = [HostLoop("asyncio"), HostLoop("asyncio")]
    monkeypatch.setattr(_ops, "_wait_until", _marking_wait_until)
    try:
        yield ENV
    finally:
        for loop in ENV.loops:
            loop.close()


#: Examples and steps of the default suite (~22 s here); the environment variables run more, with
#: a random seed (``AIOWQ_REDIS_MODEL_RANDOM=1``), as tools/soak.py does for the in-process one.
EXAMPLES = int(os.environ.get("AIOWQ_REDIS_MODEL_EXAMPLES", "40"))
STEPS = int(os.environ.get("AIOWQ_REDIS_MODEL_STEPS", "30"))
DERANDOMIZE = os.environ.get("AIOWQ_REDIS_MODEL_RANDOM", "") == ""


def test_redis_backend_against_the_reference_model(env: Env) -> None:
    run_state_machine_as_test(
        RedisRefMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            derandomize=DERANDOMIZE,
            database=None,
        ),
    )
    # Both workers ran items (R3 and R7 were checked across them, not within one).
    assert env.examples > 0
    assert all(env.starts_on[w] > 0 for w in WORKERS), env.starts_on


# -- what the machine found ------------------------------------------------------------------------


async def _take_answers(wq: awr.RemoteWorkqueue, consumer: str) -> list[tuple[str, str]]:
    """One **take** with 2 free slots: its (answer, key) for each entry it started or holds."""
    _nxt, _n, _last, *got = await wq.call("take", consumer, 60_000, 2)
    return [(a.decode(), k.decode()) for a, _i, k, _f, _a in got]


@pytest.mark.asyncio
async def test_fifo_across_two_readers(redis_url: str, key_prefix: str) -> None:
    """Three entries of a max_active 2 queue reach two idle workers at once, as after a
    promote. Both wake from their ``XREAD`` (which delivers nothing) and send **take**, in
    either order: R7, the two oldest, e1 and e2, get the slots and e3 waits, whichever take
    reaches the server first.

    Found by the machine above (three armed items fired at once on "u"; the third started
    before the second), when idle workers read with a blocking ``XREADGROUP`` and started what
    each got with its own **start_many**."""
    for first, second in (("A", "B"), ("B", "A")):
        app = awr.App(url=redis_url, prefix=f"{key_prefix}{first}")
        try:
            app.function(lambda: None, name="f")
            wq = app.workqueue("q", max_active=2)
            await wq.declare()
            _nxt, n, last, *got = await wq.call("take", first, 60_000, 2)
            assert int(n) == 0 and got == []  # idle: both workers now wait after ``last``
            for k in ("k1", "k2", "k3"):
                assert await awr.queue_work(wq, app.work("f", key=k))
            woke: Any = await app.client.xread({wq.keys.stream: last}, count=1, block=1000)
            assert woke, "the XREAD after the take's last ID wakes on the new entries"

            answers = {c: await _take_answers(wq, c) for c in (first, second)}
            assert answers == {first: [("run", "k1"), ("run", "k2")], second: []}, answers
            assert await app.client.lrange(wq.keys.inactive, 0, -1) != []  # e3 waits (R7)
        finally:
            await app.aclose()
