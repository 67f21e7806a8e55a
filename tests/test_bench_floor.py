"""The floors of ``aioworkqueue bench`` (``_tools/bench/_floor.py``) do the job they are
measured on, and the report reads them right. A floor that dropped items or ran one twice would
make every "out of reach" verdict a lie, so their correctness is tested like the library's; their
speed, like everything's, only in a real bench run."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from aioworkqueue._tools.bench._floor import LeanItem, LeanQueue, LeanTimer, LeanTimers
from aioworkqueue._tools.bench._model import Cell, Results
from aioworkqueue._tools.bench._report import TARGETS, evaluate, verdict


@pytest.mark.asyncio
@pytest.mark.parametrize("locked", [False, True])
async def test_lean_queue_runs_each_queued_item_once_and_flush_waits(locked: bool) -> None:
    runs = [0] * 50

    def make(i: int) -> LeanItem:
        async def fn() -> None:
            await asyncio.sleep(0)
            runs[i] += 1

        return LeanItem(fn)

    lq = LeanQueue(4, locked=locked)
    await lq.start()
    items = [make(i) for i in range(50)]
    try:
        for _ in range(3):
            assert all(lq.queue(w) for w in items)
            assert not any(lq.queue(w) for w in items)  # pending: the second queue is refused
            await asyncio.wait_for(lq.flush(), 30)
            assert lq.left == 0
        assert runs == [3] * 50
    finally:
        await lq.close()


@pytest.mark.asyncio
async def test_locked_lean_queue_takes_items_from_other_threads() -> None:
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    count = [0]
    total = 4 * 2000

    def hit() -> None:
        count[0] += 1
        if count[0] == total:
            loop.call_soon(done.set)

    lq = LeanQueue(4, locked=True)
    await lq.start()
    ok = [0] * 4

    def produce(k: int) -> None:
        for w in [LeanItem(hit) for _ in range(2000)]:
            ok[k] += lq.queue(w)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    try:
        for th in threads:
            th.start()
        await asyncio.wait_for(done.wait(), 30)
        for th in threads:
            th.join()
        await asyncio.wait_for(lq.flush(), 30)
        assert sum(ok) == total
        assert count[0] == total
    finally:
        await lq.close()


def test_lean_timers_arm_once_and_cancel_only_what_is_armed() -> None:
    lt = LeanTimers()
    t = LeanTimer()
    assert not lt.cancel(t)
    assert lt.arm(t, 10.0)
    assert not lt.arm(t, 10.0)  # pending
    assert lt.cancel(t)
    assert not lt.cancel(t)
    assert lt.arm(t, 5.0)
    live = [e for e in lt.heap if e[1] == e[2].gen]  # lazy deletion: one live entry
    assert len(lt.heap) == 2
    assert len(live) == 1
    assert lt.dead == 1


def _results(lib: dict[str, float], floor: dict[str, float]) -> Results:
    res = Results()
    g = res.group("throughput.plain", "t", "items/s", "higher", "asyncio.Queue + 4 workers")
    for loop, value in lib.items():
        g.put(loop, "asyncio.Queue + 4 workers", Cell(100.0))
        g.put(loop, "aioworkqueue queue_work (reused Work)", Cell(value))
        g.put(loop, "floor: deque + 4 workers + lock, reused item", Cell(floor[loop]))
    return res


def test_the_verdict_says_per_loop_whether_the_floor_meets_a_missed_target() -> None:
    assert TARGETS[0].text.startswith("reused Work, plain items: >= 1.6x")

    def first(lib: dict[str, float], floor: dict[str, float]) -> dict[str, Any]:
        return evaluate(_results(lib, floor), list(lib))[0]

    out = first({"asyncio": 100.0}, {"asyncio": 120.0})  # both miss 1.6x
    assert out["met"] is False
    assert out["floor"] == {"asyncio": "1.20x"}
    assert verdict(out) == "out of reach on asyncio: the floor misses it too (floor: asyncio 1.20x)"

    out = first({"asyncio": 100.0}, {"asyncio": 200.0})
    assert verdict(out) == (
        "the gap is this library's on asyncio: the floor meets it (floor: asyncio 2.00x)"
    )

    # Missed on both loops; the floor misses on one and meets on the other.
    out = first({"asyncio": 100.0, "uvloop": 100.0}, {"asyncio": 120.0, "uvloop": 200.0})
    assert verdict(out) == (
        "out of reach on asyncio: the floor misses it too; "
        "the gap is this library's on uvloop: the floor meets it "
        "(floor: asyncio 1.20x, uvloop 2.00x)"
    )

    # Missed on uvloop only: asyncio's floor is not part of the verdict.
    out = first({"asyncio": 170.0, "uvloop": 100.0}, {"asyncio": 120.0, "uvloop": 120.0})
    assert verdict(out).startswith("out of reach on uvloop: the floor misses it too (")

    out = first({"asyncio": 170.0}, {"asyncio": 200.0})
    assert out["met"] is True
    assert verdict(out) == ""  # met: nothing to explain
