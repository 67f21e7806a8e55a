"""An aiohttp service whose handler defers work, drained when the app cleans up.

``aioworkqueue.aiohttp.setup(app, timeout=...)`` is the whole integration: one entry of
``app.cleanup_ctx`` that leaves :func:`aioworkqueue.running` after aiohttp has stopped serving,
which flushes every workqueue within the deadline and reports what could not finish.

Run it: ``python examples/aiohttp_service.py``. It serves on 127.0.0.1 (a free port), sends itself
a few requests, cleans the app up as ``web.run_app`` does on SIGTERM, and prints what happened.
"""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
from aiohttp import web

import aioworkqueue as aw
import aioworkqueue.aiohttp

thumbnails = aw.alloc_workqueue("thumbnails", max_active=2)
made: dict[str, str] = {}


class Thumbnail(aw.Work):
    """Render one thumbnail; the upload handler answers before it runs."""

    __slots__ = ("data", "name")

    def __init__(self, name: str, data: bytes) -> None:
        super().__init__(render)
        self.name = name
        self.data = data


async def render(work: Thumbnail) -> None:
    await asyncio.sleep(0.05)  # stands for the slow part
    made[work.name] = hashlib.sha256(work.data).hexdigest()[:12]


async def upload(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    aw.queue_work(thumbnails, Thumbnail(name, await request.read()))
    return web.json_response({"accepted": name}, status=202)


async def main() -> None:
    app = web.Application()
    app.router.add_put("/images/{name}", upload)
    running = aioworkqueue.aiohttp.setup(app, timeout=3.0)  # keep it: .unfinished after cleanup
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"aiohttp service on http://127.0.0.1:{port}")
    async with aiohttp.ClientSession() as session:
        for i in range(5):
            url = f"http://127.0.0.1:{port}/images/img{i}"
            async with session.put(url, data=b"pixels %d" % i) as resp:
                print(resp.status, await resp.json())
    await runner.cleanup()  # what web.run_app does on SIGTERM: stop serving, then clean up
    print(f"stopped; thumbnails made: {len(made)} of 5, unfinished: {len(running.unfinished)}")


if __name__ == "__main__":
    asyncio.run(main())
