"""``benchmarks/core_v2_floors.py`` compares floors that must do the job they are compared on:
every item of a burst runs exactly once, on the pools it was queued to, and the latency probe
starts each time it is queued."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

_BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load() -> Any:
    sys.path.insert(0, str(_BENCH))  # the script imports pending_floor from its own directory
    try:
        spec = importlib.util.spec_from_file_location(
            "core_v2_floors", _BENCH / "core_v2_floors.py"
        )
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(_BENCH))


@pytest.mark.parametrize("cpus", [0, 1, 2])
def test_the_runtime_floor_runs_each_item_of_each_burst_once_on_its_pool(cpus: int) -> None:
    fl = _load()
    n = 600
    runs = [0] * n
    where: list[set[int]] = [set() for _ in range(n)]
    inside = {"now": 0, "peak": 0}  # items of one pool thread at a time (GIL or host loop)

    def make(i: int) -> Any:
        async def fn() -> None:
            runs[i] += 1
            where[i].add(threading.get_ident())
            if i % 2:
                inside["now"] += 1
                inside["peak"] = max(inside["peak"], inside["now"])
                await asyncio.sleep(0)
                inside["now"] -= 1

        return fl.Item(fn)

    items = [make(i) for i in range(n)]

    async def main() -> list[Any]:
        rate, pools = await fl.run_bursts(asyncio.new_event_loop, cpus, items, 3)
        assert rate > 0
        return list(pools)

    host = threading.get_ident()
    pools = asyncio.run(main())
    assert runs == [4] * n  # the warm-up and 3 rounds
    assert [p.done for p in pools] == [p.share for p in pools]
    threads = {next(iter(w)) for w in where}
    assert all(len(w) == 1 for w in where)  # an item runs on the pool it was queued to
    # Items that await run side by side on a pool's workers, the host's own included: the
    # baseline must not be one worker doing everything while the others sleep.
    assert inside["peak"] > 1
    if cpus == 0:
        assert threads == {host}
    else:
        assert host not in threads and len(threads) == cpus


def test_the_latency_floor_starts_the_probe_once_per_sample() -> None:
    fl = _load()

    async def main() -> dict[str, list[float]]:
        return dict(await asyncio.wait_for(fl._latency(30), 30))  # a probe never started: fail

    lat = asyncio.run(main())
    assert sorted(lat) == ["floor", "loop.call_soon", "loop.create_task"]
    assert all(len(xs) == 30 and min(xs) > 0 for xs in lat.values())


def test_a_pool_answers_false_for_an_item_pending_there_already() -> None:
    fl = _load()
    loop = asyncio.new_event_loop()
    try:
        pool = fl.Pool(loop, loop)  # no workers: what it takes stays pending
        item = fl.Item(None)
        assert pool.queue(item) and not pool.queue(item)
        assert len(pool.dq) == 1
    finally:
        loop.close()


def test_a_pool_fed_from_another_thread_runs_each_item_once() -> None:
    fl = _load()
    n = 2000
    runs = [0] * n

    def make(i: int) -> Any:
        async def fn() -> None:
            runs[i] += 1

        return fl.Item(fn)

    items = [make(i) for i in range(n)]

    async def main() -> list[bool]:
        host = asyncio.get_running_loop()
        pool, th, stop = fl.start_loop_thread(
            asyncio.new_event_loop, lambda loop: fl.Pool(loop, host)
        )
        pool.share, pool.fut = n, host.create_future()
        answers = [pool.queue(it) for it in items]
        await asyncio.wait_for(pool.fut, 30)  # a lost wake-up would hang here
        stop()
        th.join(10)
        return answers

    answers = asyncio.run(main())
    assert all(answers) and runs == [1] * n
