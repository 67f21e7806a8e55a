"""Binding at allocation and on entering ``running()`` (SPEC §5 "Binding (embedded mode)").

A queue allocated on a running loop is bound to it at once; entering ``running()`` binds every
queue no loop has claimed yet (to its loop, or to the runtime); only a queue nobody claimed
refuses a thread, with a message that says how to bind it.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

import aioworkqueue as aw

#: Allocated at import time, outside any loop: claimed only by entering running().
MODULE_WQ = aw.alloc_workqueue("binding-module")
STARLETTE_WQ = aw.alloc_workqueue("binding-starlette")


def _queue_from_thread(wq: aw.Workqueue, work: aw.Work) -> bool:
    """queue_work from a plain thread with no event loop; re-raise what it raised."""
    out: list[bool | BaseException] = []

    def producer() -> None:
        try:
            out.append(aw.queue_work(wq, work))
        except BaseException as exc:  # handed to the caller
            out.append(exc)

    th = threading.Thread(target=producer)
    th.start()
    th.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


@pytest.mark.asyncio
async def test_queue_allocated_in_a_coroutine_takes_work_from_a_thread_at_once() -> None:
    ran = asyncio.Event()
    wq = aw.alloc_workqueue("binding-coro")
    ordered = aw.alloc_ordered_workqueue("binding-coro-ordered")
    loop = asyncio.get_running_loop()
    ordered_ran: list[int] = []
    # Never used from the loop before the thread queues: bound by the allocation itself.
    assert _queue_from_thread(wq, aw.Work(lambda w: loop.call_soon(ran.set)))
    assert _queue_from_thread(ordered, aw.Work(lambda w: ordered_ran.append(1)))
    await asyncio.wait_for(ran.wait(), 10)
    await aw.flush_workqueue(ordered)
    assert ordered_ran == [1] and wq.stats().completed == 1


def test_an_unclaimed_queue_says_how_to_bind_it() -> None:
    wq = aw.alloc_workqueue("binding-unclaimed")
    with pytest.raises(aw.WorkqueueLoopError) as info:
        _queue_from_thread(wq, aw.Work(print))
    msg = str(info.value)
    assert "'binding-unclaimed' is not bound to an event loop yet" in msg
    assert "allocate it inside the loop" in msg and "running()" in msg and "<Work fn=" in msg


@pytest.mark.asyncio
async def test_entering_running_binds_a_module_level_queue() -> None:
    done = threading.Event()
    async with aw.running():
        assert await asyncio.to_thread(aw.queue_work, MODULE_WQ, aw.Work(lambda w: done.set()))
        await aw.flush_workqueue(MODULE_WQ)
    assert done.is_set()


@pytest.mark.asyncio
async def test_running_binds_system_queues_too() -> None:
    # A previous test's loop may have claimed system_wq; it has closed since, so it is unbound.
    done = threading.Event()
    async with aw.running():
        assert await asyncio.to_thread(aw.schedule_work, aw.Work(lambda w: done.set()))
        await aw.flush_workqueue(aw.system_wq)
    assert done.is_set()


@pytest.mark.asyncio
async def test_starlette_plain_def_endpoint_queues_on_a_module_level_queue() -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    wq = STARLETTE_WQ  # allocated at import time: no loop has claimed it
    ran: list[str] = []

    def endpoint(request: Request) -> PlainTextResponse:  # a plain def: a worker thread runs it
        assert aw.queue_work(wq, aw.Work(lambda w: ran.append("job")))
        return PlainTextResponse("queued")

    app = Starlette(routes=[Route("/", endpoint)])
    async with aw.running():  # what Starlette(lifespan=aw.running) enters
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            resp = await client.get("/")
        await aw.flush_workqueue(wq)
    assert resp.status_code == 200 and resp.text == "queued"
    assert ran == ["job"]


def test_consecutive_asyncio_runs_rebind_a_queue_bound_at_allocation() -> None:
    holder: list[aw.Workqueue] = []
    ran: list[int] = []

    async def first() -> None:
        holder.append(aw.alloc_workqueue("binding-rebind"))  # bound to this loop

    async def second() -> None:
        async with aw.running():  # the first loop has closed: running() claims the queue here
            await asyncio.to_thread(aw.queue_work, holder[0], aw.Work(lambda w: ran.append(2)))
            await aw.flush_workqueue(holder[0])

    async def third() -> None:
        assert aw.queue_work(holder[0], aw.Work(lambda w: ran.append(3)))  # use rebinds it
        await aw.flush_workqueue(holder[0])

    asyncio.run(first())
    asyncio.run(second())
    asyncio.run(third())
    assert ran == [2, 3]


def test_running_with_a_runtime_gives_unclaimed_queues_to_it_and_back_after() -> None:
    wq = aw.alloc_workqueue("binding-runtime")
    threads: list[str] = []

    def job(w: aw.Work) -> None:
        threads.append(threading.current_thread().name)

    async def with_runtime() -> None:
        async with aw.running(runtime={"cpus": 1}, timeout=5):
            assert await asyncio.to_thread(aw.queue_work, wq, aw.Work(job))
            await aw.flush_workqueue(wq)

    async def embedded() -> None:
        async with aw.running():  # the runtime has ended: the queue is claimed again, here
            assert await asyncio.to_thread(aw.queue_work, wq, aw.Work(job))
            await aw.flush_workqueue(wq)

    asyncio.run(with_runtime())
    asyncio.run(embedded())
    assert len(threads) == 2
    assert threads[0] != threading.current_thread().name  # a pool thread of the runtime
    assert threads[1] == threading.current_thread().name  # the host loop, this thread
