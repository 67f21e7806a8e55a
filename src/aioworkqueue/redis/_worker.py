"""The worker: runs the items of Redis queues in this process (docs/redis.md, "Workers").

One in-process workqueue per Redis queue (``max_active=concurrency``) runs the items, so the
core's statistics, tracepoints and exception handlers apply. One reader task promotes due
items, reads entries and starts them in one script (**take**, ``XREADGROUP`` inside it, many
entries per call), and waits on a plain ``XREAD`` when there is nothing; a
renew task keeps the leases of running items; a claim task takes over the entries of dead
workers (``XAUTOCLAIM``) once their lease has passed, or at once when a stopping worker hands
its entries back (a message on the queue's hand-back channel, which a listener task follows).

Stopping (leaving ``async with``, or SIGTERM in ``aioworkqueue worker``): the reader stops at
once, running items get ``stop_timeout`` seconds, then the runs still going are cut (their task
cancelled) and, with every entry read but not started, handed back (the **handback** script) so
another worker re-runs them without waiting for the lease (docs/redis.md, "Stopping a worker").
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

log = logging.getLogger("aioworkqueue.redis")

#: Longest a read blocks (ms): the reader re-checks timers, waiting entries and stop this often.
READ_BLOCK_MS = 100

#: Longest (s) a busy worker holds the finishes of ended runs back, waiting for half of its
#: runs to end, so that they share one **finish_many**: per script the server pays some 50 us
#: whatever the batch, per item about 10 us. An idle worker (nothing else running) and a
#: stopping one send at once.
GATHER_S = 0.001

#: How long (s) runs cut at the stop deadline get to unwind from their cancellation; a run still
#: going after that is left to its lease (its function would not stop, so handing it back could
#: let another worker run it at the same time, against R3).
CUT_GRACE = 1.0


def handback_channel(wq: RemoteWorkqueue) -> str:
    """Return the pub/sub channel a stopping worker announces hand-backs of ``wq`` on.

    Context: any. Returns: the channel's name (it shares the queue's hash tag).
    """
    return f"{wq.keys.tag}:handback"


class _Run(Work):
    """One started instance, queued on the local workqueue (its data rides on the Work)."""

    __slots__ = ("args", "cut", "entry", "fname", "key", "queue", "task", "worker")

    def __init__(self, worker: Worker, queue: str, entry: tuple[str, str, str, bytes]) -> None:
        super().__init__(_execute)
        self.worker = worker
        self.queue = queue
        self.entry, self.key, self.fname, self.args = entry
        #: The pool task running it, once its function has started (the stop deadline cancels it).
        self.task: asyncio.Task[Any] | None = None
        #: Set when the stop deadline cancelled this run: its end is a hand-back, not a finish.
        self.cut = False

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
    work.task = task = asyncio.current_task()
    token = RUNNING_IN.set((w.app.prefix, work.queue))
    outcome = "fail"
    try:
        fn = w.app.lookup(work.fname)
        args, kwargs = w.app.serializer.loads(work.args)
        r = fn(*args, **kwargs)
        if inspect.isawaitable(r):
            try:
                await r
            except asyncio.CancelledError:
                if not work.cut:
                    raise
                outcome = "cut"  # the stop deadline's cancel, not the item's error (R16)
                return
        outcome = "ok"
    finally:
        RUNNING_IN.reset(token)
        if work.cut and task is not None and task.cancelling():
            # The cancel was ours and is spent here (caught above, or swallowed by the function):
            # the pool's task must not take it for its own (it would end the worker).
            task.uncancel()
        if outcome == "cut":
            w._cut_ended(work)
        else:
            w._finished(work, outcome)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Worker:
    """Runs items of ``queues`` in this process while ``async with app.worker(...)`` lasts.

    On exit it stops reading at once, lets running items finish within ``stop_timeout`` seconds,
    then cuts the runs still going and hands them back, with every entry it read and did not
    start, so that another worker re-runs them at once (docs/redis.md, "Stopping a worker").
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
        self._local: dict[str, aioworkqueue.Workqueue] = {}
        self._running: dict[tuple[str, str], str] = {}  # (queue, entry) -> key
        self._runs: dict[tuple[str, str], _Run] = {}  # the same runs, for the stop deadline
        self._waiting: list[tuple[str, str, str, str, bytes]] = []  # ordered 'wait' answers
        self._ended: dict[str, list[tuple[_Run, str]]] = {q: [] for q in self._wqs}
        self._ended_any = asyncio.Event()
        self._inflight = 0
        self._reserved = 0  # free slots promised to a script in flight (see _free)
        self._slot = asyncio.Event()
        self._idle = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        #: Runs this worker took over from dead workers (also counted in the server's stats).
        self.redelivered = 0
        #: Instances this worker started.
        self.started = 0
        #: Runs cut at the stop deadline and handed back to other workers.
        self.handed_back = 0
        #: Entries read but never started, handed back at the stop.
        self.handed_back_unstarted = 0
        #: Runs left to their lease at the stop: they did not end when cancelled, or the
        #: hand-back failed (another worker runs them after the lease).
        self.left = 0
        self._hurry = asyncio.Event()  # stop_now(): the stop deadline is now
        self._claim_now = asyncio.Event()  # a hand-back was announced on one of our queues
        self._cut_by_queue: dict[str, int] = {}  # runs cut at the stop deadline, per queue

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
            # renew goes on while the worker stops: the runs finishing within stop_timeout keep
            # their leases however long it is
            asyncio.create_task(
                self._loop(self._renew_all, self.lease / 3, stopping=True), name="awq-renew"
            ),
            asyncio.create_task(self._claimer(), name="awq-claim"),
            asyncio.create_task(self._loop(self._listen, 0), name="awq-handback-listener"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    def stop_now(self) -> None:
        """Make the stop deadline now: the runs still going are cut and handed back at once.

        For a second SIGTERM / SIGINT: called before the stop, the stop does not wait at all.
        Context: the worker's event loop (a loop signal handler, a callback or a task).
        """
        self._hurry.set()

    async def _stop(self) -> None:
        """Stop reading, let runs finish within ``stop_timeout``, cut and hand back the rest."""
        self._stopping = True
        self._slot.set()  # a reader waiting for a free slot looks again, and sees the stop
        reader, finisher, *others = self._tasks
        with contextlib.suppress(asyncio.CancelledError):
            await reader  # it starts nothing more; a read in flight ends within one block
        if self._inflight:
            idle = asyncio.ensure_future(self._idle.wait())
            hurry = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait(
                (idle, hurry), timeout=self.stop_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            idle.cancel()
            hurry.cancel()
        stuck = await self._cut() if self._inflight else []
        await self._hand_back(stuck)
        if self._inflight:  # the finisher stays for the late runs and ends after the last one
            log.warning(
                "aioworkqueue.redis worker %s: %d run(s) did not end when cut; they are left to "
                "the lease",
                self.consumer,
                len(stuck),
            )
        else:
            others.append(finisher)
        for t in others:
            t.cancel()
        for t in others:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._inflight == 0:
            for lwq in self._local.values():
                await aioworkqueue.destroy_workqueue(lwq)

    async def _cut(self) -> list[tuple[str, str]]:
        """Cancel the runs still going at the stop deadline; wait for them to unwind.

        Returns: the (queue, entry) of the runs that did not end within :data:`CUT_GRACE` (their
        function went on after its cancellation); they are kept out of the hand-back.
        """
        cut = list(self._runs.values())
        log.warning(
            "aioworkqueue.redis worker %s: %d run(s) still going after the stop timeout (%.1fs); "
            "cutting them and handing them back",
            self.consumer,
            len(cut),
            self.stop_timeout,
        )
        for run in cut:
            if run.task is not None:
                run.cut = True
                run.task.cancel()
                self._cut_by_queue[run.queue] = self._cut_by_queue.get(run.queue, 0) + 1
            elif aioworkqueue.cancel_work(run):  # queued locally, never started: nothing to undo
                self._cut_ended(run)
        # Until the cut runs have ended and the finisher has sent the finishes of those that
        # ended on their own before the cut (so none of them is handed back). Both set _slot;
        # the reader, its other user, has ended.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CUT_GRACE
        while any(run.cut and (run.queue, run.entry) in self._runs for run in cut) or (
            self._inflight > len(self._runs)
        ):
            left = deadline - loop.time()
            if left <= 0:
                break
            self._slot.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot.wait(), left)
        return list(self._runs)

    def _cut_ended(self, run: _Run) -> None:
        """A cut run has unwound: its entry goes back with the hand-back, not with a finish."""
        self._running.pop((run.queue, run.entry), None)
        self._runs.pop((run.queue, run.entry), None)
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()
        self._ended_any.set()  # the finisher re-checks whether it may end
        self._slot.set()

    async def _hand_back(self, stuck: list[tuple[str, str]]) -> None:
        """Run **handback** on each queue: every entry of this consumer but ``stuck`` goes back."""
        for q, wq in self._wqs.items():
            keep = [entry for sq, entry in stuck if sq == q]
            try:
                cut, unstarted, _gone = await wq.call(
                    "handback", handback_channel(wq), self.consumer, *keep
                )
            except Exception:
                log.exception(
                    "aioworkqueue.redis worker %s: the hand-back of %r failed; its entries are "
                    "left to the lease",
                    self.consumer,
                    q,
                )
                self.left += self._cut_by_queue.get(q, 0)
                continue
            self.handed_back += int(cut)
            self.handed_back_unstarted += int(unstarted)
            if cut or unstarted:
                log.warning(
                    "aioworkqueue.redis worker %s: handed back %d cut run(s) and %d unstarted "
                    "entr(ies) of %r to the other workers",
                    self.consumer,
                    int(cut),
                    int(unstarted),
                    q,
                )
        self.left += len(stuck)

    async def _loop(self, step: Any, period: float, *, stopping: bool = False) -> None:
        while stopping or not self._stopping:
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
        """Slots neither running nor promised to a script in flight."""
        return self.concurrency - self._inflight - self._reserved

    def _answers(self, q: str, got: list[Any]) -> None:
        """Act on {answer, id, key, f, a} items of **take** / **finish_many**."""
        for ans, entry, key, fname, args in got:
            item = (q, _s(entry), _s(key), _s(fname), bytes(args))
            if _s(ans) == "run":
                self._launch(*item)
            else:  # 'wait', R6: an earlier entry of the ordered queue has not started yet
                self._waiting.append(item)

    async def _read_once(self) -> None:
        """One turn of the reader: take what the queues have, or wait until something comes.

        It costs one script per queue per turn (**take**: promote, read up to the free slots,
        start them all, in stream order); only when that found nothing does it block, on a
        plain ``XREAD`` from the last entry each **take** saw, which delivers nothing: every
        entry is read by a script that starts it in the same step. (A blocking
        ``XREADGROUP`` would split one batch between idle workers, whose start scripts then
        reach the server in any order: a later entry could take the free slot of an earlier
        one, against R7's FIFO.) A busy worker mostly refills from the finisher instead
        (**finish_many** takes into the slots it frees), and the reader waits for a free slot.
        """
        if self._stopping:
            return  # what it holds ('wait' answers) goes back with the hand-back
        await self._retry_waiting()
        if self._free() <= 0:
            self._slot.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot.wait(), READ_BLOCK_MS / 1000)
            return
        block, read = READ_BLOCK_MS, 0
        after: Any = {}  # stream → the last entry its take saw
        for q, wq in self._wqs.items():
            free = self._free()
            if free <= 0 or self._stopping:
                return  # full: the next turn waits for a slot (the other queues come next)
            self._reserved += free
            try:
                nxt, n, last, *got = await wq.call("take", self.consumer, self._lease_ms, free)
            finally:
                self._reserved -= free
            read += int(n)
            after[wq.keys.stream] = _s(last)
            if int(nxt) >= 0:
                block = min(block, max(1, int(nxt)))
            self._answers(q, got)
        if read or self._free() <= 0 or self._stopping:
            return
        # Wakes on the first entry after what the takes saw; the next turn's take reads it.
        await self.app.client.xread(after, count=1, block=block)

    async def _start_many(self, items: list[tuple[str, str, str, str, bytes]]) -> None:
        """The start steps for ``items`` (entries of one queue this worker read), one script."""
        if not items:
            return
        # '0': held since an earlier turn, the entries may have been claimed by now
        args: list[str | int] = [self.consumer, self._lease_ms, "0"]
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
            await self._start_many(items)

    def _launch(self, q: str, entry: str, key: str, fname: str, args: bytes) -> None:
        self._inflight += 1
        self._idle.clear()
        self.started += 1
        self._running[(q, entry)] = key
        run = self._runs[(q, entry)] = _Run(self, q, (entry, key, fname, args))
        aioworkqueue.queue_work(self._local[q], run)

    def _finished(self, run: _Run, outcome: str) -> None:
        """A run ended: its **finish** goes with the next batch of the finisher."""
        self._running.pop((run.queue, run.entry), None)
        self._runs.pop((run.queue, run.entry), None)
        self._ended[run.queue].append((run, outcome))
        self._ended_any.set()

    async def _finisher(self) -> None:
        """Sends the finishes: every run that ended since the last batch, one script per queue.

        While one batch is in flight the next one gathers; before it is sent, a worker with
        other runs still going waits until half of its runs have ended, for at most
        ``GATHER_S`` (jobs that each await I/O end one by one: sent as they come, they would
        make batches of one or two, and the server's cost per script would be paid per job).
        An idle worker finishes at once. Once the worker stops it ends after the last finish,
        even one that comes after ``stop_timeout``.
        """
        loop = asyncio.get_running_loop()
        while not (self._stopping and self._inflight == 0):
            await self._ended_any.wait()
            deadline = loop.time() + GATHER_S
            while not self._stopping and self._ended_count() * 2 < self._inflight:
                self._ended_any.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await self._ended_any.wait()
                if loop.time() >= deadline:
                    break
            self._ended_any.clear()
            for q, ended in self._ended.items():
                if ended:
                    self._ended[q] = []
                    await self._finish_batch(q, ended)
            if self._inflight == 0:
                self._idle.set()
            self._slot.set()

    def _ended_count(self) -> int:
        """Runs that ended and wait for the finisher's next batch."""
        return sum(len(ended) for ended in self._ended.values())

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

    async def _claimer(self) -> None:
        """Claim every half lease, and at once when a hand-back is announced.

        After an announcement it goes on claiming (each read block) while its free slots limit
        what it takes, so a hand-back larger than its free slots does not wait half a lease.
        """
        pressing = False
        while not self._stopping:
            try:
                limited = await self._claim_all()
            except asyncio.CancelledError:
                raise
            except Exception:  # a lost connection must not end the worker: retry
                log.exception("aioworkqueue.redis worker %s: claim failed", self.consumer)
                limited = True
            pressing = pressing and limited
            period = READ_BLOCK_MS / 1000 if pressing else self.lease / 2
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._claim_now.wait(), period)
                pressing = True
            self._claim_now.clear()

    async def _listen(self) -> None:
        """Follow the hand-back channels of this worker's queues (a listener task)."""
        ps = self.app.client.pubsub()
        try:
            await ps.subscribe(*(handback_channel(wq) for wq in self._wqs.values()))
            mine = self.consumer.encode()
            while True:
                msg = await ps.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is not None and msg.get("data") != mine:
                    self._claim_now.set()
        finally:
            await ps.aclose()  # type: ignore[no-untyped-call]

    async def _claim_all(self) -> bool:
        """One **claim** per queue. Returns: whether free slots limited it (more may wait)."""
        for q, wq in self._wqs.items():
            # not less the blocking read's slots: an idle worker blocks nearly all the time, and
            # a dead worker's entries must not wait for traffic (a rare overlap runs queued
            # locally, within concurrency)
            free = self.concurrency - self._inflight - self._reserved
            if self._stopping:
                return False
            if free <= 0:
                return True
            got = await wq.call("claim", self.consumer, self._lease_ms, free)
            for ans, entry, key, fname, args in got:
                if _s(ans) == "rerun":
                    self.redelivered += 1
                    log.warning(
                        "aioworkqueue.redis: %s/%s (%r) was cut by a dead worker or handed back by "
                        "a stopping one; running it again",
                        q,
                        _s(entry),
                        _s(key),
                    )
                self._launch(q, _s(entry), _s(key), _s(fname), bytes(args))
            if len(got) >= free:
                return True
        return False


def _make_worker(
    app: App, queues: list[str] | tuple[str, ...], concurrency: int, **kw: Any
) -> Worker:
    return Worker(app, queues, concurrency, **kw)


_app.FORMS.make_worker = _make_worker
