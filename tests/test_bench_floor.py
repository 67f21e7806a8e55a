"""The floors of ``aioworkqueue bench`` (``_bench/_floor.py``) do the job they are measured on,
and the report reads them right. A floor that dropped items or ran one twice would make every
"out of reach" verdict a lie, so their correctness is tested like the library's; their speed,
like everything's, only in a real bench run."""

from __future__ import annotations

import asyncio
import threading

import pytest

from aioworkqueue._bench._floor import LeanItem, LeanQueue, LeanTimer, LeanTimers
from aioworkqueue._bench._model import Cell, Results
from aioworkqueue._bench._report import TARGETS, evaluate, verdict


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


def _results(lib: float, floor: float, base: float) -> Results:
    res = Results()
    g = res.group("throughput.plain", "t", "items/s", "higher", "asyncio.Queue + 4 workers")
    g.put("asyncio", "asyncio.Queue + 4 workers", Cell(base))
    g.put("asyncio", "aioworkqueue queue_work (reused Work)", Cell(lib))
    g.put("asyncio", "floor: deque + 4 workers + lock, reused item", Cell(floor))
    return res


def test_the_verdict_says_whether_the_floor_meets_a_missed_target() -> None:
    assert TARGETS[0].text.startswith("reused Work, plain items: >= 1.6x")

    def first(res: Results) -> dict[str, object]:
        return evaluate(res, ["asyncio"])[0]

    out = first(_results(lib=100.0, floor=120.0, base=100.0))  # both miss 1.6x
    assert out["met"] is False
    assert out["floor"] == {"asyncio": "1.20x"}
    assert verdict(out) == "out of reach: the floor misses it too (asyncio 1.20x)"

    out = first(_results(lib=100.0, floor=200.0, base=100.0))
    assert verdict(out) == "the floor meets it (asyncio 2.00x): the gap is this library's"

    out = first(_results(lib=170.0, floor=200.0, base=100.0))
    assert out["met"] is True
    assert verdict(out) == ""  # met: nothing to explain
