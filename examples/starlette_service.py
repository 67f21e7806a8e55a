"""A Starlette service (FastAPI works the same way) whose endpoint defers work to a workqueue.

``lifespan=aioworkqueue.running`` is the whole integration: on shutdown the server's lifespan
leaves it, which refuses new outside queueing, flushes every workqueue within its own deadline
(3 s here, shorter than the server's grace period) and reports what could not finish.

Run it: ``python examples/starlette_service.py``. It starts uvicorn on 127.0.0.1 (a free port),
sends itself a few requests, stops the server at once the way a SIGTERM would, and prints what
happened: the welcome mails queued just before the stop are finished by the drain; the follow-ups
armed for a minute later are reported as unfinished, never silently lost.
"""

from __future__ import annotations

import asyncio
import functools
import socket

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import aioworkqueue as aw

jobs = aw.alloc_workqueue("jobs", max_active=4)  # binds to the server's loop at first use
done: list[str] = []
unfinished: list[str] = []


class Email(aw.DelayedWork):
    """One deferred job: the request returns at once, the work runs after it."""

    __slots__ = ("to",)

    def __init__(self, to: str) -> None:
        super().__init__(send_email)
        self.to = to


async def send_email(work: Email) -> None:
    await asyncio.sleep(0.05)  # the slow part the request handler should not wait for
    done.append(work.to)


async def signup(request: Request) -> JSONResponse:
    user = request.path_params["user"]
    aw.queue_work(jobs, Email(f"welcome {user}"))  # synchronous, O(1): never blocks the handler
    aw.queue_delayed_work(jobs, Email(f"tips {user}"), 60)  # a follow-up, a minute later
    return JSONResponse({"queued": user})


def report(items: list[aw.Unfinished]) -> None:
    """What the shutdown could not finish (also logged at WARNING): persist it to retry later."""
    unfinished.extend(f"{w.to} ({state})" for w, _wq, state in items if isinstance(w, Email))


app = Starlette(
    routes=[Route("/signup/{user}", signup, methods=["POST"])],
    lifespan=functools.partial(aw.running, timeout=3.0, on_unfinished=report),
)


async def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn has no event for it)
        await asyncio.sleep(0.01)
    print(f"starlette service on http://127.0.0.1:{port}")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for user in ("ada", "grace", "linus"):
            resp = await client.post(f"/signup/{user}")
            print(resp.status_code, resp.json())
    server.should_exit = True  # what uvicorn's SIGTERM handler does; the welcomes still run
    await serving
    sock.close()
    print(f"stopped; done: {', '.join(sorted(done))}")
    print(f"not finished, reported: {', '.join(sorted(unfinished))}")


if __name__ == "__main__":
    asyncio.run(main())
