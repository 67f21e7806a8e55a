"""A model-based test of the scripts: random queue / queue_delayed / mod / cancel / start /
finish / flush-barrier steps from two clients and two fake consumers, against a small reference
model of the pending bit, the stream, the R3 defer slot and the R7 inactive list.

There is no background worker: each rule is one operation (read + start is one rule), so the
model predicts every answer exactly. Timers are armed an hour ahead and only fire through the
"fire" rule (promote with every timer due), so nothing depends on wall-clock time.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import aioworkqueue
import aioworkqueue.redis as awr
from aioworkqueue.redis._keys import GROUP

from .conftest import RedisServer

KEYS = ("a", "b", "c")
MAX_ACTIVE = 2
LEASE = 600_000
HOUR = 3600
_RUNS = itertools.count()


def fn() -> None:
    pass


def _id(e: str) -> tuple[int, int]:
    a, b = e.split("-")
    return int(a), int(b)


@dataclass
class Model:
    """What the server must hold: pend (key -> 'd' or entry), entries and their state."""

    pend: dict[str, str] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)  # entry -> stream/deferred/...
    key_of: dict[str, str] = field(default_factory=dict)
    running: dict[str, str] = field(default_factory=dict)  # key -> entry
    defer: dict[str, str] = field(default_factory=dict)
    inactive: list[str] = field(default_factory=list)
    barriers: list[tuple[str, set[str]]] = field(default_factory=list)

    def drop(self, e: str) -> None:
        self.state[e] = "gone"
        if e in self.inactive:
            self.inactive.remove(e)
        k = self.key_of[e]
        if self.defer.get(k) == e:
            del self.defer[k]

    def try_start(self, e: str, front: bool = False) -> str:
        k = self.key_of[e]
        if self.pend.get(k) != e:
            self.state[e] = "gone"
            return "skip"
        if k in self.running:
            self.defer[k] = e
            self.state[e] = "deferred"
            return "deferred"
        if len(self.running) >= MAX_ACTIVE:
            if e not in self.inactive:
                self.inactive.insert(0, e) if front else self.inactive.append(e)
            self.state[e] = "inactive"
            return "inactive"
        del self.pend[k]
        self.running[k] = e
        self.state[e] = "running"
        return "run"


class RedisMachine(RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        prefix = f"model{next(_RUNS)}"
        self.apps = [awr.App(url=self.url, prefix=prefix) for _ in range(2)]
        self.wqs = []
        for app in self.apps:
            app.function(fn, name="fn")
            self.wqs.append(app.workqueue("q", max_active=MAX_ACTIVE))
        self.m = Model()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        for app in self.apps:
            self.run(app.aclose())
        self.loop.close()

    def work(self, c: int, k: str) -> awr.RemoteWork:
        w = self.apps[c].work(fn, key=k)
        w.workqueue = self.wqs[c]
        return w

    def new_entry(self, k: str) -> None:
        e = self.run(self.apps[0].client.hget(self.wqs[0].keys.pend, k)).decode()
        self.m.pend[k] = e
        self.m.key_of[e] = k
        self.m.state[e] = "stream"

    @rule(c=st.integers(0, 1), k=st.sampled_from(KEYS))
    def queue(self, c: int, k: str) -> None:
        expect = k not in self.m.pend
        assert self.run(awr.queue_work(self.wqs[c], self.work(c, k))) is expect  # R1
        if expect:
            self.new_entry(k)

    @rule(c=st.integers(0, 1), k=st.sampled_from(KEYS))
    def queue_delayed(self, c: int, k: str) -> None:
        expect = k not in self.m.pend
        assert self.run(awr.queue_delayed_work(self.wqs[c], self.work(c, k), HOUR)) is expect
        if expect:
            self.m.pend[k] = "d"

    @rule(c=st.integers(0, 1), k=st.sampled_from(KEYS), delay=st.sampled_from([0, HOUR]))
    def mod(self, c: int, k: str, delay: int) -> None:
        p = self.m.pend.get(k)
        assert self.run(awr.mod_delayed_work(self.wqs[c], self.work(c, k), delay)) is (
            p is not None
        )  # R9
        if p is not None and p != "d":  # queued, not started: the entry is taken back
            self.m.drop(p)
            del self.m.pend[k]
        if delay == 0:  # queued at once, at the tail (docs/spec.md, mod_delayed_work corners)
            self.new_entry(k)
        elif p != "d":
            self.m.pend[k] = "d"

    @rule(c=st.integers(0, 1), k=st.sampled_from(KEYS))
    def cancel(self, c: int, k: str) -> None:
        p = self.m.pend.get(k)
        assert self.run(awr.cancel_work(self.work(c, k))) is (p is not None)  # R10
        if p is not None:
            if p != "d":
                self.m.drop(p)
            del self.m.pend[k]

    @rule()
    def fire(self) -> None:
        self.run(self.wqs[0].call("promote", "1"))
        for k, p in sorted(self.m.pend.items()):
            if p == "d":
                self.new_entry(k)

    @rule(consumer=st.sampled_from(["A", "B"]))
    def read_and_start(self, consumer: str) -> None:
        wq = self.wqs[0]
        resp: Any = self.run(
            wq.app.client.xreadgroup(GROUP, consumer, {wq.keys.stream: ">"}, count=1)
        )
        waiting = sorted((e for e, s in self.m.state.items() if s == "stream"), key=_id)
        if not waiting:
            assert not resp
            return
        (eid, fields) = resp[0][1][0]
        e = eid.decode()
        assert e == waiting[0]  # the oldest entry not read yet
        assert fields[b"k"].decode() == self.m.key_of[e]
        ans = self.run(wq.call("start", e, self.m.key_of[e], consumer, LEASE)).decode()
        assert ans == self.m.try_start(e)  # R2, R3, R7

    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        if not self.m.running:
            return
        k = data.draw(st.sampled_from(sorted(self.m.running)))
        e = self.m.running.pop(k)
        self.m.state[e] = "gone"
        expect: str | None = None
        nxt = self.m.defer.pop(k, None)
        if nxt is not None and self.m.try_start(nxt) == "run":
            expect = nxt
        while expect is None and self.m.inactive:
            h = self.m.inactive.pop(0)
            ans = self.m.try_start(h, front=True)
            if ans == "run":
                expect = h
            elif ans == "inactive":
                break
        got = self.run(self.wqs[1].call("finish", e, k, "X", "ok", LEASE, "1"))
        assert (got[0].decode() if got else None) == expect

    @rule(c=st.integers(0, 1))
    def flush_barrier(self, c: int) -> None:
        b = self.run(self.wqs[c].call("barrier")).decode()
        live = {e for e, s in self.m.state.items() if s != "gone"}
        self.m.barriers.append((b, live))

    @invariant()
    def barriers_answer_exactly(self) -> None:  # R13
        for b, live in self.m.barriers:
            done = all(self.m.state[e] == "gone" for e in live)
            assert bool(self.run(self.wqs[0].call("barrier_done", b))) is done

    @invariant()
    def busy_matches(self) -> None:
        for k in KEYS:
            want = aioworkqueue.WorkBusy(0)
            if k in self.m.pend:
                want |= aioworkqueue.WorkBusy.PENDING
            if k in self.m.running:
                want |= aioworkqueue.WorkBusy.RUNNING
            assert self.run(awr.work_busy(self.work(0, k))) == want
        st_ = self.run(self.wqs[0].stats())
        assert st_["active"] == len(self.m.running)


def test_scripts_follow_the_model(redis_server: RedisServer) -> None:
    RedisMachine.url = redis_server.url
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        RedisMachine,
        settings=settings(max_examples=60, stateful_step_count=30, deadline=None),
    )
