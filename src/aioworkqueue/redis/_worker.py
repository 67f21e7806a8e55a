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

    The finish is handed to the worker's finisher, which sends the finishes of every run that
    ended meanwhile in one script. An exception goes on to the local core (its exception
    handler and ``failed`` count, R16) with the outcome already on its way to the server.
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
        w._finished(work, outcome)


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
        self._ended: dict[str, list[tuple[_Run, str]]] = {q: [] for q in self._wqs}
        self._ended_any = asyncio.Event()
        self._inflight = 0
        self._reserved = 0  # free slots promised to a script in flight (see _free)
        self._blocking = 0  # free slots promised to the blocking read in flight
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
            asyncio.create_task(self._finisher(), name="awq-finisher"),
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
        if self._inflight:  # the finisher stays for the late runs and ends after the last one
            others = [t for t in others if t.get_name() != "awq-finisher"]
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

    def _free(self) -> int:
        """Slots neither running nor promised to a script or a read in flight."""
        return self.concurrency - self._inflight - self._reserved - self._blocking

    def _answers(self, q: str, got: list[Any]) -> None:
        """Act on {answer, id, key, f, a} items of **take** / **finish_many**."""
        for ans, entry, key, fname, args in got:
            item = (q, _s(entry), _s(key), _s(fname), bytes(args))
            if _s(ans) == "run":
                self._launch(*item)
            else:  # 'wait', R6: an earlier entry of the ordered queue has not started yet
                self._waiting.append(item)

    async def _read_once(self) -> None:
        """One turn of the reader: take what the queues have, or block until something comes.

        It costs one script per queue per turn (**take**: promote, read up to the free slots,
        start them all); only when that found nothing does it block on ``XREADGROUP`` and
        then start what the read brought in one **start_many**. A busy worker mostly refills
        from the finisher instead (**finish_many** takes into the slots it frees), and the
        reader waits for a free slot.
        """
        await self._retry_waiting()
        if self._free() <= 0:
            self._slot.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot.wait(), READ_BLOCK_MS / 1000)
            return
        block, read = READ_BLOCK_MS, 0
        for q, wq in self._wqs.items():
            free = self._free()
            if free <= 0:
                return  # full: the next turn waits for a slot (the other queues come next)
            self._reserved += free
            try:
                nxt, n, *got = await wq.call("take", self.consumer, self._lease_ms, free)
            finally:
                self._reserved -= free
            read += int(n)
            if int(nxt) >= 0:
                block = min(block, max(1, int(nxt)))
            self._answers(q, got)
        free = self._free()
        if read or free <= 0 or self._stopping:
            return
        streams: Any = dict.fromkeys(self._by_stream, ">")
        self._blocking = free
        try:
            resp: Any = await self.app.client.xreadgroup(
                GROUP, self.consumer, streams, count=free, block=block
            )
            for stream, entries in resp or ():
                q = self._by_stream[_s(stream)]
                await self._start_many(
                    [
                        (q, _s(entry), _s(fields[b"k"]), _s(fields[b"f"]), bytes(fields[b"a"]))
                        for entry, fields in entries
                        if fields
                    ],
                    just_read=True,
                )
        finally:
            self._blocking = 0

    async def _start_many(
        self, items: list[tuple[str, str, str, str, bytes]], *, just_read: bool
    ) -> None:
        """The start steps for ``items`` (entries of one queue this worker read), one script."""
        if not items:
            return
        args: list[str | int] = [self.consumer, self._lease_ms, "1" if just_read else "0"]
        for _q, entry, key, _f, _a in items:
            args += (entry, key)
        answers = await self._wqs[items[0][0]].call("start_many", *args)
        for item, ans in zip(items, answers, strict=True):
            a = _s(ans)
            if a == "run":
                self._launch(*item)
            elif a == "wait":  # R6: an earlier entry of the ordered queue has not started yet
                self._waiting.append(item)

    async def _retry_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        by_queue: dict[str, list[tuple[str, str, str, str, bytes]]] = {}
        for item in waiting:
            by_queue.setdefault(item[0], []).append(item)
        for items in by_queue.values():
            await self._start_many(items, just_read=False)  # may have been claimed since

    def _launch(self, q: str, entry: str, key: str, fname: str, args: bytes) -> None:
        self._inflight += 1
        self._idle.clear()
        self.started += 1
        self._running[(q, entry)] = key
        aioworkqueue.queue_work(self._local[q], _Run(self, q, (entry, key, fname, args)))

    def _finished(self, run: _Run, outcome: str) -> None:
        """A run ended: its **finish** goes with the next batch of the finisher."""
        self._running.pop((run.queue, run.entry), None)
        self._ended[run.queue].append((run, outcome))
        self._ended_any.set()

    async def _finisher(self) -> None:
        """Sends the finishes: every run that ended since the last batch, one script per queue.

        No timer batches them: while one batch is in flight the next one gathers, so an idle
        worker finishes at once and a busy one pays one round trip for many runs. Once the worker
        stops it ends after the last finish, even one that comes after ``stop_timeout``.
        """
        while not (self._stopping and self._inflight == 0):
            await self._ended_any.wait()
            self._ended_any.clear()
            for q, ended in self._ended.items():
                if ended:
                    self._ended[q] = []
                    await self._finish_batch(q, ended)
            if self._inflight == 0:
                self._idle.set()
            self._slot.set()

    async def _finish_batch(self, q: str, ended: list[tuple[_Run, str]]) -> None:
        # The slots these runs free, and any other free one, are offered to the script: after
        # the hand-offs it reads and starts new entries into them (the **take** steps), so a
        # busy worker pays one script per turn. A stopping worker takes nothing: no hand-off,
        # no new entry (they wait for another worker).
        free = 0 if self._stopping else self._free() + len(ended)
        args: list[str | int] = [
            self.consumer,
            self._lease_ms,
            "0" if self._stopping else "1",
            free,
        ]
        for run, outcome in ended:
            args += (run.entry, run.key, outcome)
        got: list[Any] = []
        self._reserved += free - len(ended)  # the runs' own slots are still counted in flight
        try:
            _nxt, _n, *got = await self._wqs[q].call("finish_many", *args)
        except Exception:  # the entries stay in the PEL: they are claimed after the lease
            log.exception("aioworkqueue.redis: finish of %d run(s) of %r failed", len(ended), q)
        finally:
            self._reserved -= free - len(ended)
        self._inflight -= len(ended)
        self._answers(q, got)

    # -- leases ---------------------------------------------------------------------------------

    async def _renew_all(self) -> None:
        by_queue: dict[str, list[tuple[str, str]]] = {}
        for (q, entry), key in list(self._running.items()):
            by_queue.setdefault(q, []).append((entry, key))
        for q, runs in by_queue.items():
            args: list[str | int] = [self.consumer, self._lease_ms]
            for entry, key in runs:
                args += (entry, key)
            oks = await self._wqs[q].call("renew", *args)
            for (entry, key), ok in zip(runs, oks, strict=True):
                if not ok and (q, entry) in self._running:
                    log.warning("aioworkqueue.redis: lease of %s/%s (%r) was lost", q, entry, key)

    async def _claim_all(self) -> None:
        for q, wq in self._wqs.items():
            # not less the blocking read's slots: an idle worker blocks nearly all the time, and
            # a dead worker's entries must not wait for traffic (a rare overlap runs queued
            # locally, within concurrency)
            free = self.concurrency - self._inflight - self._reserved
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
