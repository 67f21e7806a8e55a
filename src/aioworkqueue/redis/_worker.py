"""The worker: runs the items of Redis queues in this process (docs/redis.md, "Workers").

One in-process workqueue per Redis queue (``max_active=concurrency``) runs the items, so the
core's statistics, tracepoints and exception handlers apply. One reader task promotes due
items, reads entries (``XREADGROUP``, many per call) and starts them (the **start** script); a
renew task keeps the leases of running items; a claim task takes over the entries of dead
workers (``XAUTOCLAIM``) once their lease has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
import socket
import uuid
from typing import Any

import aioworkqueue
from aioworkqueue import ExceptionHandler, Work

from . import _app
from ._app import RUNNING_IN, App, RemoteWorkqueue
from ._keys import GROUP

log = logging.getLogger("aioworkqueue.redis")

#: Longest a read blocks (ms): the reader re-checks timers, waiting entries and stop this often.
READ_BLOCK_MS = 100


class _Run(Work):
    """One started instance, queued on the local workqueue (its data rides on the Work)."""

    __slots__ = ("args", "entry", "fname", "key", "queue", "worker")

    def __init__(self, worker: Worker, queue: str, entry: tuple[str, str, str, bytes]) -> None:
        super().__init__(_execute)
        self.worker = worker
        self.queue = queue
        self.entry, self.key, self.fname, self.args = entry

    def __repr__(self) -> str:
        return f"<redis run {self.queue}/{self.entry} {self.key!r}>"


async def _execute(work: Work) -> None:
    """Call the registered function of a started instance; ``finish`` it whatever happens.

    An exception goes on to the local core (its exception handler and ``failed`` count, R16)
    after **finish** has recorded the outcome in the server.
    """
    assert isinstance(work, _Run)
    w = work.worker
    token = RUNNING_IN.set((w.app.prefix, work.queue))
    outcome = "fail"
    try:
        fn = w.app.lookup(work.fname)
        args, kwargs = w.app.serializer.loads(work.args)
        r = fn(*args, **kwargs)
        if inspect.isawaitable(r):
            await r
        outcome = "ok"
    finally:
        RUNNING_IN.reset(token)
        await w._finish(work, outcome)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Worker:
    """Runs items of ``queues`` in this process while ``async with app.worker(...)`` lasts.

    On exit it stops reading, lets running items finish within ``stop_timeout`` seconds and
    leaves the rest in the server for other workers (claimed after the lease).
    Context: the event loop of the application.
    """

    def __init__(
        self,
        app: App,
        queues: list[str] | tuple[str, ...],
        concurrency: int,
        *,
        lease: float,
        stop_timeout: float,
        exception_handler: ExceptionHandler | None,
        consumer: str | None,
    ) -> None:
        if isinstance(queues, str) or not queues or not all(isinstance(q, str) for q in queues):
            raise TypeError(f"App.worker: queues must be a list of queue names, got {queues!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise TypeError(f"App.worker: concurrency must be an int, got {concurrency!r}")
        if not 1 <= concurrency <= aioworkqueue.WQ_MAX_ACTIVE:
            raise ValueError(f"App.worker: concurrency must be in 1..{aioworkqueue.WQ_MAX_ACTIVE}")
        for what, v in (("lease", lease), ("stop_timeout", stop_timeout)):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise TypeError(f"App.worker: {what} must be a number of seconds, got {v!r}")
            if math.isnan(v) or v <= 0 or math.isinf(v):
                raise ValueError(f"App.worker: {what} must be finite and > 0, got {v!r}")
        self.app = app
        self.concurrency = concurrency
        self.lease = float(lease)
        self.stop_timeout = float(stop_timeout)
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._handler = exception_handler
        self._wqs: dict[str, RemoteWorkqueue] = {}
        for q in queues:
            known = app._queues.get(q)
            self._wqs[q] = known if known is not None else app.workqueue(q)
        self._by_stream = {wq.keys.stream: q for q, wq in self._wqs.items()}
        self._local: dict[str, aioworkqueue.Workqueue] = {}
        self._running: dict[tuple[str, str], str] = {}  # (queue, entry) -> key
        self._waiting: list[tuple[str, str, str, str, bytes]] = []  # ordered 'wait' answers
        self._inflight = 0
        self._slot = asyncio.Event()
        self._idle = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        #: Runs this worker took over from dead workers (also counted in the server's stats).
        self.redelivered = 0
        #: Instances this worker started.
        self.started = 0

    @property
    def _lease_ms(self) -> int:
        return max(1, int(self.lease * 1000))

    async def __aenter__(self) -> Worker:
        for q, wq in self._wqs.items():
            await wq.declare()
            self._local[q] = aioworkqueue.alloc_workqueue(
                f"redis:{self.app.prefix}:{q}",
                max_active=self.concurrency,
                exception_handler=self._handler,
            )
        self._idle.set()
        self._tasks = [
            asyncio.create_task(self._loop(self._read_once, 0), name="awq-redis-reader"),
            asyncio.create_task(self._loop(self._renew_all, self.lease / 3), name="awq-renew"),
            asyncio.create_task(self._loop(self._claim_all, self.lease / 2), name="awq-claim"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping = True
        reader, *others = self._tasks
        with contextlib.suppress(asyncio.CancelledError):
            await reader  # it notices the stop within one read block
        try:
            await asyncio.wait_for(self._idle.wait(), self.stop_timeout)
        except TimeoutError:
            log.warning(
                "aioworkqueue.redis worker %s: %d item(s) still running after %.1fs; "
                "they are left to the lease",
                self.consumer,
                self._inflight,
                self.stop_timeout,
            )
        for t in others:
            t.cancel()
        for t in others:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._inflight == 0:
            for lwq in self._local.values():
                await aioworkqueue.destroy_workqueue(lwq)

    async def _loop(self, step: Any, period: float) -> None:
        while not self._stopping:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:  # a lost connection must not end the worker: retry
                log.exception("aioworkqueue.redis worker %s: %s failed", self.consumer, step)
                await asyncio.sleep(0.1)
            if period:
                await asyncio.sleep(period)

    # -- reading and starting -------------------------------------------------------------------

    async def _read_once(self) -> None:
        block = READ_BLOCK_MS
        for wq in self._wqs.values():
            _n, nxt = await wq.call("promote", "0")
            if int(nxt) >= 0:
                block = min(block, max(1, int(nxt)))
        await self._retry_waiting()
        free = self.concurrency - self._inflight
        if free <= 0:
            self._slot.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot.wait(), block / 1000)
            return
        streams: Any = dict.fromkeys(self._by_stream, ">")
        resp: Any = await self.app.client.xreadgroup(
            GROUP, self.consumer, streams, count=free, block=block
        )
        for stream, entries in resp or ():
            q = self._by_stream[_s(stream)]
            for entry, fields in entries:
                if not fields:
                    continue
                await self._start(
                    q, _s(entry), _s(fields[b"k"]), _s(fields[b"f"]), bytes(fields[b"a"])
                )

    async def _start(self, q: str, entry: str, key: str, fname: str, args: bytes) -> bool:
        ans = _s(await self._wqs[q].call("start", entry, key, self.consumer, self._lease_ms))
        if ans == "run":
            self._launch(q, entry, key, fname, args)
            return True
        if ans == "wait":  # R6: an earlier entry of the ordered queue has not started yet
            self._waiting.append((q, entry, key, fname, args))
        return False

    async def _retry_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for item in waiting:
            await self._start(*item)

    def _launch(self, q: str, entry: str, key: str, fname: str, args: bytes) -> None:
        self._inflight += 1
        self._idle.clear()
        self.started += 1
        self._running[(q, entry)] = key
        aioworkqueue.queue_work(self._local[q], _Run(self, q, (entry, key, fname, args)))

    async def _finish(self, run: _Run, outcome: str) -> None:
        self._running.pop((run.queue, run.entry), None)
        nxt: Any = ()
        try:
            nxt = await self._wqs[run.queue].call(
                "finish",
                run.entry,
                run.key,
                self.consumer,
                outcome,
                self._lease_ms,
                # a stopping worker takes no hand-off: the instance waits for another worker
                "0" if self._stopping else "1",
            )
        except Exception:  # the entry stays in the PEL: it is claimed after the lease
            log.exception("aioworkqueue.redis: finish of %r failed", run)
        self._inflight -= 1
        if nxt:
            entry, key, fname, args = nxt
            self._launch(run.queue, _s(entry), _s(key), _s(fname), bytes(args))
        if self._inflight == 0:
            self._idle.set()
        self._slot.set()

    # -- leases ---------------------------------------------------------------------------------

    async def _renew_all(self) -> None:
        for (q, entry), key in list(self._running.items()):
            ok = await self._wqs[q].call("renew", entry, key, self.consumer, self._lease_ms)
            if not ok and (q, entry) in self._running:
                log.warning("aioworkqueue.redis: lease of %s/%s (%r) was lost", q, entry, key)

    async def _claim_all(self) -> None:
        for q, wq in self._wqs.items():
            free = self.concurrency - self._inflight
            if free <= 0 or self._stopping:
                return
            for ans, entry, key, fname, args in await wq.call(
                "claim", self.consumer, self._lease_ms, free
            ):
                if _s(ans) == "rerun":
                    self.redelivered += 1
                    log.warning(
                        "aioworkqueue.redis: %s/%s (%r) was cut by a dead worker; running it again",
                        q,
                        _s(entry),
                        _s(key),
                    )
                self._launch(q, _s(entry), _s(key), _s(fname), bytes(args))


def _make_worker(
    app: App, queues: list[str] | tuple[str, ...], concurrency: int, **kw: Any
) -> Worker:
    return Worker(app, queues, concurrency, **kw)


_app.FORMS.make_worker = _make_worker
