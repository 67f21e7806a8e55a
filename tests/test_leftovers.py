"""Identifiable leftovers (issue 13 item 12, R20): what a shutdown could not finish comes back as
public items a service can persist, and the log holds one summary per workqueue and state.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import aioworkqueue as aw
from aioworkqueue._testing import ManualClock


def _job(i: int, *, tag: str) -> None:
    raise AssertionError("never started: the queue is blocked until the shutdown")


def _summaries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "did not finish" in r.getMessage()
    ]


def test_call_work_says_what_it_calls() -> None:
    async def main() -> None:
        wq = aw.alloc_workqueue("leftovers-props")
        gate = asyncio.Event()

        async def hold() -> None:
            await gate.wait()

        wq.submit(hold)  # takes the one slot, so the next item stays queued
        item = wq.submit(_job, 7, tag="x")
        assert isinstance(item, aw.CallWork) and isinstance(item, aw.Work)
        assert item.fn is _job and item.args == (7,) and item.kwargs == {"tag": "x"}
        item.kwargs["tag"] = "changed"  # a copy: the queued call is unchanged
        assert item.kwargs == {"tag": "x"}
        for name in ("fn", "args", "kwargs"):
            with pytest.raises(AttributeError):
                setattr(item, name, None)
        with pytest.raises(AttributeError):
            item.__dict__  # noqa: B018  # slots only: no per-item dict
        assert aw.cancel_work(item)
        plain = wq.submit(print)
        assert plain.args == () and plain.kwargs == {}
        gate.set()
        await wq.flush()

    asyncio.run(main())


@pytest.mark.asyncio
async def test_500_unfinished_submits_one_warning_per_queue_and_state(
    aiowq_clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioworkqueue")
    never = asyncio.Event()

    async def blocker(name: str) -> None:
        await never.wait()

    wqs = [
        aw.alloc_workqueue("leftovers-a", max_active=2),
        aw.alloc_workqueue("leftovers-b", max_active=1),
    ]
    submitted: dict[int, tuple[Any, tuple[Any, ...], dict[str, Any]]] = {}
    r = aw.running(timeout=1)
    async with r:
        blockers = [wqs[0].submit(blocker, "a0"), wqs[0].submit(blocker, "a1")]
        blockers.append(wqs[1].submit(blocker, name="b0"))
        for b in blockers:
            submitted[id(b)] = (b.fn, b.args, b.kwargs)
        await asyncio.sleep(0)  # the blockers start
        for i in range(500 - len(blockers)):
            wq = wqs[i % 2]
            item = wq.submit(_job, i, tag=f"t{i}")
            submitted[id(item)] = (_job, (i,), {"tag": f"t{i}"})
    # Every item is in .unfinished, with its call, and each exactly once.
    assert len(r.unfinished) == 500
    got = {id(w): (w.fn, w.args, w.kwargs) for w, _wq, _st in r.unfinished}  # type: ignore[attr-defined]
    assert got == submitted
    states = {(wq.name, st) for _w, wq, st in r.unfinished}
    assert states == {(wq.name, st) for wq in wqs for st in ("running", "queued")}
    # The log: one WARNING per (workqueue, state) with the count; each item at DEBUG.
    warned = _summaries(caplog)
    assert len(warned) <= len(wqs) * 2 and len(warned) == len(states), warned
    counts = {(wq.name, st): 0 for wq in wqs for st in ("running", "queued")}
    for _w, wq, st in r.unfinished:
        counts[wq.name, st] += 1
    for (name, st), n in counts.items():
        (line,) = [m for m in warned if repr(name) in m and f"({st})" in m]
        assert f"{n} item" in line and "<CallWork fn=" in line
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "did not finish" in r.msg]
    assert len(debug) == 500


def test_runtime_shutdown_summarises_too(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> list[aw.Unfinished]:
        async with aw.Runtime(cpus=1, shutdown_timeout=0.05) as rt:
            wq = aw.alloc_workqueue("leftovers-rt", max_active=1)

            async def blocker() -> None:
                await asyncio.Event().wait()  # on the pool's loop; cut by the shutdown

            wq.submit(blocker)
            for i in range(200):
                wq.submit(_job, i, tag="rt")
        return rt.unfinished

    unfinished = asyncio.run(main())
    assert len(unfinished) == 201
    assert sorted(w.args[0] for w, _q, st in unfinished if st == "queued") == list(range(200))  # type: ignore[attr-defined]
    warned = _summaries(caplog)
    assert len(warned) <= 2, warned  # one per state: queued, and running unless it never started
    assert any("200 items" in m and "(queued)" in m for m in warned)
