"""Copying and pickling a work item gives an idle item (docs/spec.md, "Copying a work item"):
the same function and data, none of the original's queue life."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

import aioworkqueue as aw

pytestmark = pytest.mark.asyncio

_runs: list[Any] = []


def _record(*args: Any) -> None:
    _runs.append(args)


def _job(w: aw.Work) -> None:
    _runs.append(w)


class Job(aw.Work):
    """A subclass with data of its own, in slots and in a dict."""

    __slots__ = ("__dict__", "payload")

    def __init__(self, payload: list[int]) -> None:
        super().__init__(_job)
        self.payload = payload
        self.note = "n"


@pytest.fixture(autouse=True)
def _clear() -> None:
    _runs.clear()


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
async def test_a_copy_of_a_pending_item_is_idle_and_runs_when_queued(how: str) -> None:
    async with aw.alloc_workqueue("copy") as wq:
        w = Job([1, 2])
        assert aw.queue_work(wq, w)
        c = {
            "copy": copy.copy,
            "deepcopy": copy.deepcopy,
            "pickle": lambda x: pickle.loads(pickle.dumps(x)),
        }[how](w)
        assert type(c) is Job and c is not w
        assert not c.pending and c.busy == aw.WorkBusy(0)
        assert c.payload == [1, 2] and c.note == "n" and c.func is _job
        assert (c.payload is w.payload) is (how == "copy")  # a deep copy copies the data
        assert aw.queue_work(wq, c)  # before: False forever, and it never ran
        assert not aw.queue_work(wq, c)  # R1 holds for the copy on its own
        await aw.flush_workqueue(wq)
        assert _runs == [w, c]
        assert aw.queue_work(wq, w) and aw.queue_work(wq, c)  # two items, two chains
        await aw.flush_workqueue(wq)
        assert _runs == [w, c, w, c]


async def test_a_copy_of_an_armed_delayed_item_has_no_timer() -> None:
    async with aw.alloc_workqueue("copy-delayed") as wq:
        d = aw.DelayedWork(_job)
        assert aw.queue_delayed_work(wq, d, 3600)
        c = copy.copy(d)
        assert not c.pending
        assert aw.queue_delayed_work(wq, c, 0)  # due now: queued at once
        await aw.flush_workqueue(wq)
        assert _runs == [c]
        assert aw.cancel_delayed_work(d)  # the original's timer is its own, still armed
        assert not aw.cancel_delayed_work(c)


async def test_a_copy_of_a_disabled_item_is_enabled_and_the_original_stays_disabled() -> None:
    async with aw.alloc_workqueue("copy-disabled") as wq:
        w = aw.Work(_job)
        aw.disable_work(w)
        c = copy.copy(w)
        assert not aw.queue_work(wq, w)
        assert aw.queue_work(wq, c)
        await aw.flush_workqueue(wq)
        assert _runs == [c]
        assert aw.enable_work(w)


async def test_a_pickled_submit_item_keeps_its_call() -> None:
    async with aw.alloc_workqueue("copy-submit") as wq:
        s = wq.submit(_record, "x")
        p = pickle.loads(pickle.dumps(s))  # pending when pickled, and bound to a queue
        await aw.flush_workqueue(wq)
        assert type(p) is aw.CallWork and not p.pending
        assert (p.fn, p.args, p.kwargs) == (_record, ("x",), {})
        assert _runs == [("x",)]
        assert aw.queue_work(wq, p)  # persisted and queued again: it runs its call
        await aw.flush_workqueue(wq)
        assert _runs == [("x",), ("x",)]
