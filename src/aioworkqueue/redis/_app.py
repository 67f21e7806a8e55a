"""The client side of the Redis backend: App (connection, registry, serializer), RemoteWorkqueue
and RemoteWork (docs/redis.md).

The method forms (``await wq.queue(work)``, ``await work.cancel()``...) call the coroutines of
``_ops`` through :data:`FORMS`, which ``_ops`` fills when it is imported (the package imports it
at once), so this module never imports ``_ops`` and no import circle forms.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from types import SimpleNamespace
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis

from aioworkqueue import WQ_DFL_ACTIVE, WQ_MAX_ACTIVE, ExceptionHandler, WorkBusy

from ._keys import QueueKeys, queue_keys
from ._scripts import Scripts

F = TypeVar("F", bound=Callable[..., Any])

#: The (prefix, queue) of the Redis item that runs in this task: queueing onto a draining queue
#: is allowed from there (chained work, R14). The worker sets it around each run. A default,
#: not a ``set`` at import: a set reaches only the context of the import, and a loop started
#: later in another context (a second ``asyncio.Runner``) would find the variable unset.
RUNNING_IN: ContextVar[tuple[str, str] | None] = ContextVar(
    "aioworkqueue_redis_running_in", default=None
)

#: The method forms' table, filled by ``_ops`` (see the module docstring).
FORMS: Any = SimpleNamespace()


class Serializer(Protocol):
    """What ``serializer=`` must provide (the ``json`` module does)."""

    def dumps(self, obj: Any, /) -> str | bytes: ...

    def loads(self, s: str | bytes, /) -> Any: ...


class App:
    """The connection to one Redis server, a key prefix and a registry of work functions.

    ``App(url="redis://127.0.0.1:6379/0", prefix="awq", serializer=json)``. The arguments of
    work items are encoded by ``serializer`` (``dumps``/``loads``, JSON by default).
    ``async with App(...) as app:`` closes the connection on exit (or ``await app.aclose()``).

    Context: construct anywhere; the connection opens at first use on the running loop.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "awq",
        serializer: Serializer | Any = json,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"aioworkqueue.redis.App: url must be a str, got {url!r}")
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(
                f"aioworkqueue.redis.App: prefix must be a non-empty str without braces, "
                f"got {prefix!r}"
            )
        if not (
            callable(getattr(serializer, "dumps", None))
            and callable(getattr(serializer, "loads", None))
        ):
            raise TypeError("aioworkqueue.redis.App: serializer needs dumps() and loads()")
        self.url = url
        self.prefix = prefix
        self.serializer = serializer
        self.client: aioredis.Redis = aioredis.Redis.from_url(url)
        self.scripts = Scripts(self.client)
        self._functions: dict[str, Callable[..., Any]] = {}
        self._names: dict[int, str] = {}  # id(fn) -> registered name
        self._queues: dict[str, RemoteWorkqueue] = {}
        #: (queue, key) -> how many ``cancel_work_sync`` calls of this App wait for that item:
        #: meanwhile its ``queue_*`` from this App answer False (R11 for the calling client; the
        #: mark lives in the client, so it dies with it, unlike a mark in the server).
        self._syncing: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        return f"<aioworkqueue.redis.App {self.url} prefix={self.prefix!r}>"

    async def __aenter__(self) -> App:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (the scripts' and the pool). Context: a coroutine."""
        await self.scripts.aclose()
        await self.client.aclose()

    # -- the registry ---------------------------------------------------------------------------

    def function(self, fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
        """Register ``fn`` (``async def`` or ``def``) under ``name`` (default: its qualified name).

        Use as ``@app.function`` or ``@app.function(name="x")``. Workers look functions up by
        this name, so every process must register the same ones.
        Context: any. Returns: ``fn`` itself. Raises: TypeError for a non-callable, ValueError
        for a name already taken by another function.
        """

        def register(f: F) -> F:
            if not callable(f):
                raise TypeError(f"App.function: {f!r} is not callable")
            n = name if name is not None else f"{f.__module__}.{f.__qualname__}"
            if not isinstance(n, str) or not n:
                raise TypeError(f"App.function: name must be a non-empty str, got {n!r}")
            old = self._functions.get(n)
            if old is not None and old is not f:
                raise ValueError(f"App.function: name {n!r} is already registered for {old!r}")
            self._functions[n] = f
            self._names[id(f)] = n
            return f

        if fn is None:
            return register
        return register(fn)

    def lookup(self, name: str) -> Callable[..., Any]:
        """Return the function registered as ``name``.

        Context: any. Raises: LookupError when no function has that name here.
        """
        try:
            return self._functions[name]
        except KeyError:
            raise LookupError(f"aioworkqueue.redis: no function registered as {name!r}") from None

    def _name_of(self, call: str, fn: object) -> str:
        if isinstance(fn, str):
            if fn not in self._functions:
                raise TypeError(f"{call}: no function is registered as {fn!r}")
            return fn
        if not callable(fn):
            raise TypeError(f"{call}: fn must be a registered function, got {fn!r}")
        n = self._names.get(id(fn))
        if n is None or self._functions.get(n) is not fn:
            raise TypeError(f"{call}: {fn!r} is not registered (use @app.function)")
        return n

    # -- queues and items -----------------------------------------------------------------------

    def workqueue(
        self, name: str, max_active: int = 0, ordered: bool = False, max_pending: int = 0
    ) -> RemoteWorkqueue:
        """Return the queue ``name`` of this app (its keys are made at first use or ``declare``).

        ``max_active`` (0: ``WQ_DFL_ACTIVE``) bounds the items running at once over all workers
        (R7); ``ordered`` runs one at a time in queueing order (R6); ``max_pending`` (0: none)
        bounds the items pending (R21). The first declaration of a queue in the server fixes them.
        Context: any. Returns: the RemoteWorkqueue. Raises: TypeError / ValueError for bad
        arguments.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"App.workqueue: name must be a non-empty str, got {name!r}")
        for what, v in (("max_active", max_active), ("max_pending", max_pending)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"App.workqueue: {what} of {name!r} must be an int, got {v!r}")
        if not isinstance(ordered, bool):
            raise TypeError(f"App.workqueue: ordered of {name!r} must be a bool")
        if not 0 <= max_active <= WQ_MAX_ACTIVE:
            raise ValueError(
                f"App.workqueue: max_active of {name!r} must be in 0..{WQ_MAX_ACTIVE}, "
                f"got {max_active}"
            )
        if max_pending < 0:
            raise ValueError(f"App.workqueue: max_pending of {name!r} must be >= 0")
        if ordered:
            if max_active not in (0, 1):
                raise ValueError(f"App.workqueue: an ordered queue {name!r} runs max_active 1")
            max_active = 1
        elif max_active == 0:
            max_active = WQ_DFL_ACTIVE
        wq = RemoteWorkqueue(self, name, max_active, ordered, max_pending)
        self._queues[name] = wq  # a worker of this app declares the queue as this one
        return wq

    def work(self, fn: Callable[..., Any] | str, /, *args: Any, key: str | None = None,
             **kwargs: Any) -> RemoteWork:  # fmt: skip
        """Return a work item that calls the registered ``fn(*args, **kwargs)`` on a worker.

        ``key`` is its identity, what the pending bit is about (R1); by default the function
        name, ``:`` and a stable hash of the encoded arguments, so equal calls are one item.
        Context: any. Returns: the RemoteWork. Raises: TypeError for a function that is not
        registered or not callable, or arguments the serializer cannot encode.
        """
        name = self._name_of("App.work", fn)
        try:
            blob = self.serializer.dumps([list(args), dict(sorted(kwargs.items()))])
        except (TypeError, ValueError) as e:
            raise TypeError(f"App.work: arguments of {name!r} cannot be encoded: {e}") from e
        raw = blob.encode() if isinstance(blob, str) else blob
        if key is None:
            key = f"{name}:{hashlib.sha1(raw).hexdigest()[:16]}"
        elif not isinstance(key, str) or not key:
            raise TypeError(f"App.work: key must be a non-empty str, got {key!r}")
        return RemoteWork(self, name, raw, key)

    def worker(
        self,
        queues: list[str] | tuple[str, ...],
        concurrency: int = 10,
        *,
        lease: float = 30.0,
        stop_timeout: float = 10.0,
        exception_handler: ExceptionHandler | None = None,
        consumer: str | None = None,
    ) -> AbstractAsyncContextManager[Any]:
        """Return a worker for ``queues`` (``async with app.worker(...) as w:``; see ``_worker``).

        ``concurrency`` items run at once in this process; a run not renewed for ``lease``
        seconds is taken over by another worker; on exit, running items get ``stop_timeout``
        seconds to finish. ``exception_handler(wq, work, exc)`` is the local workqueues' (R16).
        Context: any. Returns: the :class:`Worker`, not started. Raises: TypeError /
        ValueError for bad arguments.
        """
        return FORMS.make_worker(  # type: ignore[no-any-return]
            self,
            queues,
            concurrency,
            lease=lease,
            stop_timeout=stop_timeout,
            exception_handler=exception_handler,
            consumer=consumer,
        )


class RemoteWorkqueue:
    """A queue in the server (``app.workqueue(...)``); methods mirror the in-process Workqueue."""

    __slots__ = ("_all", "_declared", "app", "keys", "max_active", "max_pending", "name", "ordered")

    def __init__(
        self, app: App, name: str, max_active: int, ordered: bool, max_pending: int
    ) -> None:
        self.app = app
        self.name = name
        self.max_active = max_active
        self.ordered = ordered
        self.max_pending = max_pending
        self.keys: QueueKeys = queue_keys(app.prefix, name)
        self._all = tuple(self.keys.all())
        self._declared = False

    def __repr__(self) -> str:
        return f"<RemoteWorkqueue {self.name!r} prefix={self.app.prefix!r}>"

    async def declare(self) -> str:
        """Create the queue's keys and consumer group if they do not exist yet.

        Context: a coroutine. Returns: the queue's state in the server (``live``, ``draining``
        or ``destroyed``).
        """
        st = await self.app.scripts.call(
            "declare",
            self._all,
            self.max_active,
            int(self.ordered),
            self.max_pending,
        )
        self._declared = True
        return st.decode() if isinstance(st, bytes) else str(st)

    async def call(self, script: str, *args: str | int | bytes) -> Any:
        """Run ``script`` on this queue's keys (declared first). Context: a coroutine."""
        if not self._declared:
            await self.declare()
        return await self.app.scripts.call(script, self._all, *args)

    def queue(self, work: RemoteWork) -> Awaitable[bool]:
        """Same as :func:`queue_work` ``(self, work)``."""
        return FORMS.queue_work(self, work)  # type: ignore[no-any-return]

    def queue_many(self, works: Iterable[RemoteWork]) -> Awaitable[list[bool]]:
        """Same as :func:`queue_work_many` ``(self, works)``."""
        return FORMS.queue_work_many(self, works)  # type: ignore[no-any-return]

    def queue_delayed(self, work: RemoteWork, delay: float) -> Awaitable[bool]:
        """Same as :func:`queue_delayed_work` ``(self, work, delay)``."""
        return FORMS.queue_delayed_work(self, work, delay)  # type: ignore[no-any-return]

    def mod_delayed(self, work: RemoteWork, delay: float) -> Awaitable[bool]:
        """Same as :func:`mod_delayed_work` ``(self, work, delay)``."""
        return FORMS.mod_delayed_work(self, work, delay)  # type: ignore[no-any-return]

    def flush(self) -> Awaitable[None]:
        """Same as :func:`flush_workqueue` ``(self)``."""
        return FORMS.flush_workqueue(self)  # type: ignore[no-any-return]

    def drain(self) -> Awaitable[None]:
        """Same as :func:`drain_workqueue` ``(self)``."""
        return FORMS.drain_workqueue(self)  # type: ignore[no-any-return]

    def destroy(self) -> Awaitable[None]:
        """Same as :func:`destroy_workqueue` ``(self)``."""
        return FORMS.destroy_workqueue(self)  # type: ignore[no-any-return]

    async def stats(self) -> dict[str, int]:
        """Return the queue's counters in the server (``T:stats``) and ``active``, ``pending``.

        Context: a coroutine. Returns: a dict of ints (absent counters are 0).
        """
        flat = await self.call("stats")
        out = dict.fromkeys(
            ("queued", "started", "completed", "failed", "cancelled", "redelivered", "handedback"),
            0,
        )
        for i in range(0, len(flat), 2):
            out[flat[i].decode()] = int(flat[i + 1])
        return out


class RemoteWork:
    """A remote work item: a registered function, its encoded arguments and its ``key``.

    It remembers the queue it was last queued on (``workqueue``), which ``cancel_work``,
    ``flush_work``, ``work_pending`` and ``work_busy`` ask; an item never queued through this
    object is idle for them.
    """

    __slots__ = ("app", "args", "func_name", "key", "workqueue")

    def __init__(self, app: App, func_name: str, args: bytes, key: str) -> None:
        self.app = app
        self.func_name = func_name
        self.args = args
        self.key = key
        self.workqueue: RemoteWorkqueue | None = None

    def __repr__(self) -> str:
        return f"<RemoteWork {self.key!r}>"

    def pending(self) -> Awaitable[bool]:
        """Same as :func:`work_pending` ``(self)``."""
        return FORMS.work_pending(self)  # type: ignore[no-any-return]

    def busy(self) -> Awaitable[WorkBusy]:
        """Same as :func:`work_busy` ``(self)``."""
        return FORMS.work_busy(self)  # type: ignore[no-any-return]

    def cancel(self) -> Awaitable[bool]:
        """Same as :func:`cancel_work` ``(self)``."""
        return FORMS.cancel_work(self)  # type: ignore[no-any-return]

    def cancel_sync(self) -> Awaitable[bool]:
        """Same as :func:`cancel_work_sync` ``(self)``."""
        return FORMS.cancel_work_sync(self)  # type: ignore[no-any-return]

    def flush(self) -> Awaitable[bool]:
        """Same as :func:`flush_work` ``(self)``."""
        return FORMS.flush_work(self)  # type: ignore[no-any-return]


def delay_ms(call: str, delay: object, work: object) -> int:
    """Return ``delay`` seconds as whole milliseconds, rounded up (never early, R8).

    Context: any. Raises: TypeError for a non-number, ValueError for a negative, NaN or infinite
    delay.
    """
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise TypeError(f"{call}: delay must be int or float seconds, got {delay!r} for {work!r}")
    d = float(delay)
    if math.isnan(d) or math.isinf(d) or d < 0:
        raise ValueError(f"{call}: delay must be finite and >= 0, got {delay!r} for {work!r}")
    return math.ceil(d * 1000)
