"""aiohttp integration: run aioworkqueue for the life of an ``aiohttp.web.Application``.

::

    from aiohttp import web
    import aioworkqueue.aiohttp

    app = web.Application()
    aioworkqueue.aiohttp.setup(app, timeout=5.0)   # drained when the app cleans up
    web.run_app(app)

This module does not import aiohttp itself (only for type checking), so importing it never fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from ._lifespan import OnUnfinished, Running, running
from ._runtime import Runtime

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ("setup",)


def setup(
    app: web.Application,
    *,
    runtime: bool | Runtime | Mapping[str, Any] = False,
    timeout: float = 5.0,
    on_unfinished: OnUnfinished | None = None,
) -> Running:
    """Enter :func:`aioworkqueue.running` when ``app`` starts and leave it when it cleans up.

    It is one entry of ``app.cleanup_ctx``: at startup it starts the runtime (nothing in the
    embedded mode); at cleanup — after aiohttp has stopped accepting requests and waited for the
    handlers — it refuses outside queueing, flushes every workqueue for at most ``timeout``
    seconds (keep it below ``run_app``'s ``shutdown_timeout``), and cancels and reports what is
    left. The arguments are those of :func:`aioworkqueue.running`.

    Context: before the app starts (``app.cleanup_ctx`` is frozen afterwards).
    Returns: the :class:`~aioworkqueue._lifespan.Running` context; after cleanup its
    ``.unfinished`` lists what did not finish.
    Raises: TypeError / ValueError for bad arguments, at once.
    """
    ctx = running(runtime=runtime, timeout=timeout, on_unfinished=on_unfinished)

    async def aioworkqueue_running(app: web.Application) -> AsyncIterator[None]:
        async with ctx:
            yield

    app.cleanup_ctx.append(aioworkqueue_running)
    return ctx
