from __future__ import annotations

import asyncio

import pytest

import aioworkqueue as aw
from tests.vclock import run_virtual


@pytest.mark.asyncio
async def test_plain_and_async_items_run() -> None:
    ran: list[str] = []

    async def a(w: aw.Work) -> None:
        ran.append("a")

    def p(w: aw.Work) -> None:
        ran.append("p")

    async with aw.alloc_workqueue("smoke") as wq:
        assert aw.queue_work(wq, aw.Work(a))
        assert aw.queue_work(wq, aw.Work(p))
        await aw.flush_workqueue(wq)
    assert sorted(ran) == ["a", "p"]


def test_virtual_clock_jumps() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - t0

    assert run_virtual(main) == pytest.approx(3600)
