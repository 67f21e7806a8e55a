"""Redis: arq and saq against ``aioworkqueue.redis``, on one private server (``--only redis``).

Only when asked for by name (``--only redis``): it needs ``redis-server`` on ``PATH`` and the
``bench`` extra (arq, saq, redis-py). A private server is started for the scenario (127.0.0.1,
a free port, no persistence: ``aioworkqueue._tools.redis_server``) and always stopped; the
database is flushed between systems. Each system is measured with its own client and worker
API, on the same server, in the same run:

* **enqueue**: ``sizes.redis_jobs`` enqueues from one client, each awaited before the next;
  then concurrently, in chunks of ``CHUNK`` (``asyncio.gather``: arq and saq have no batch
  enqueue; saq's ``map`` also waits for the results, so it is not one), and aioworkqueue's
  ``queue_work_many`` (``CHUNK`` works per call: one script each, one answer per work). No
  worker runs; each round goes to a fresh queue; best of ``sizes.redis_rounds``.
  Jobs/s, higher is better.
* **end to end**: ``sizes.redis_jobs`` no-op jobs are queued while the worker processes wait at
  a gate (connected, set up, not reading yet); then the gate opens and the clock runs until
  the last job has run. Each job ``INCR``\\ s a counter in Redis; the one that reaches the
  total pushes to a list the client waits on, and the counter must end exactly at the total.
  1, 2 and 4 worker processes (``multiprocessing``, spawn), ``CONCURRENCY`` jobs at a time
  each. The jobs are all queued before the gate opens (each system its fastest way), so no
  producer competes with the workers for the CPU.
* **scaling** (aioworkqueue.redis only): ``sizes.redis_scale_jobs`` jobs a run, end to end as
  above, with 1 and with 2 worker processes in alternating order (1, 2, then 2, 1, ...), best
  of ``sizes.redis_rounds`` each; the ratio is to 1 worker process. Longer runs than the end to
  end rows, and interleaved, because a 2-core machine's speed drifts between phases.
* **latency**: enqueue to start with one idle worker process, ``sizes.redis_latency`` jobs one at
  a time: the client takes ``time.time()`` just before the enqueue and passes it; the job
  pushes ``time.time() - t0`` at its first line. Median and p99, milliseconds, lower is better.

arq polls its queue (no blocking read): it runs with ``poll_delay`` = ``ARQ_POLL_DELAY``
(5 ms; its default is 0.5 s, which would make its latency about 250 ms and cap a worker at
about one read of 10 jobs per half second). saq blocks on ``BLMOVE``; an idle
aioworkqueue.redis worker on ``XREAD`` (then one script reads and starts). Worker processes
run on the same kind of event loop as the client. Every worker process is terminated
(SIGTERM, then SIGKILL) and joined when its phase ends, whatever happened. Ratios are to
arq, in the same run, on the same server.

The aioworkqueue column uses the public API of ``aioworkqueue.redis`` (``App``,
``@app.function``, ``app.workqueue``, ``app.work``, ``queue_work``, ``queue_work_many``,
``app.worker``); where that module does not import (no ``redis`` extra), its rows say "not
built yet" and the others still run.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import multiprocessing
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from multiprocessing.process import BaseProcess
from typing import Any

from ..redis_server import start_redis_server, stop_redis_server
from ._common import BenchError, Ctx, best, import_optional, median, percentile
from ._model import Cell, Group

__all__ = (
    "ARQ_POLL_DELAY",
    "CHUNK",
    "CONCURRENCY",
    "CPU_ROWS",
    "SCALE_ROWS",
    "SCALE_SYSTEM",
    "SYSTEMS",
    "WORK_US",
    "WorkerSpec",
    "measure",
    "run",
    "worker_main",
)

SYSTEMS = ("arq", "saq", "aioworkqueue.redis")
#: Jobs each worker process runs at a time, for every system.
CONCURRENCY = 10
#: Enqueues in flight at once in the concurrent enqueue rows.
CHUNK = 100
#: arq's ``poll_delay`` here, in seconds (its default is 0.5).
ARQ_POLL_DELAY = 0.005
#: The key prefix of aioworkqueue.redis's queues.
AWQ_PREFIX = "awqbench"
NOT_BUILT = "not built yet"
NOT_INSTALLED = "not installed"

# The harness's own keys (every system's keys are its own; the db is flushed between systems).
K_COUNT = "bench:count"  # INCR by every counted job
K_DONE = "bench:done"  # pushed by the job that brings the count to the total
K_LAT = "bench:lat"  # latency samples, seconds, pushed by the stamp jobs
K_READY = "bench:ready"  # pushed by each worker process at its gate
K_GO = "bench:go"  # one token per worker process opens the gate

_WAIT = 120.0  # bound on any one wait of the harness, seconds


# --- the worker processes ------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process runs: which system, on which server, queue and loop."""

    system: str
    url: str
    queue: str
    loop: str
    target: int  # the count at which the last counted job pushes K_DONE
    concurrency: int = CONCURRENCY
    spin_us: int = 0  # CPU time each counted job spends before its INCR (0: a no-op job)


_R: Any = None  # the worker process's own client: the jobs use it (the same for every system)
_TARGET = 0
_SPIN = 0.0  # seconds of CPU per counted job


def _spin(seconds: float) -> None:
    # CPU time, not wall time: a VM that preempts the worker must not shorten the work.
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def _count() -> None:
    if _SPIN:
        _spin(_SPIN)
    n = await _R.incr(K_COUNT)
    if n == _TARGET:
        await _R.rpush(K_DONE, n)


async def _stamp(t0: float) -> None:
    await _R.rpush(K_LAT, time.time() - t0)


# Each system calls its functions its own way: arq fn(ctx, *args), saq fn(ctx, **kwargs),
# aioworkqueue.redis fn(*args) (the last argument is the one passed to app.work either way).
async def arq_count(_ctx: Any, _i: int) -> None:
    await _count()


async def arq_stamp(_ctx: Any, t0: float) -> None:
    await _stamp(t0)


async def saq_count(_ctx: Any, *, i: int) -> None:
    await _count()


async def saq_stamp(_ctx: Any, *, t0: float) -> None:
    await _stamp(t0)


async def awq_count(*_args: Any) -> None:
    await _count()


async def awq_stamp(*args: Any) -> None:
    await _stamp(float(args[-1]))


def _awq_app(awr: Any, url: str) -> Any:
    """An ``aioworkqueue.redis.App`` with the bench's functions registered (both sides)."""
    app = awr.App(url=url, prefix=AWQ_PREFIX)
    app.function(awq_count)
    app.function(awq_stamp)
    return app


async def _aclose(obj: Any) -> None:
    """Close whatever ``obj`` offers (``aclose()`` or ``close()``, awaited if it is a coroutine)."""
    closer = getattr(obj, "aclose", None) or getattr(obj, "close", None)
    if closer is not None:
        result = closer()
        if inspect.isawaitable(result):
            await result


async def _gate() -> None:
    """Set up and connected: say so, then wait for the client to open the gate."""
    await _R.rpush(K_READY, os.getpid())
    await _R.blpop([K_GO], timeout=0)


async def _until_stopped(stop: asyncio.Event, task: asyncio.Future[Any]) -> None:
    """Until SIGTERM (``stop``) or the worker's own end; re-raise a worker that failed."""
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


async def _serve_arq(spec: WorkerSpec, stop: asyncio.Event) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker

    async def startup(_ctx: dict[Any, Any]) -> None:
        await _gate()

    # arq types its functions and hooks as Protocols with *args/**kwargs; these take fewer.
    functions: list[Any] = [arq_count, arq_stamp]
    on_startup: Any = startup
    worker = Worker(
        functions=functions,
        queue_name=spec.queue,
        redis_settings=RedisSettings.from_dsn(spec.url),
        max_jobs=spec.concurrency,
        poll_delay=ARQ_POLL_DELAY,
        on_startup=on_startup,
        handle_signals=False,
        log_results=False,
    )
    task = asyncio.ensure_future(worker.async_run())
    try:
        await _until_stopped(stop, task)
    finally:
        # Not worker.close(): without its own signal handlers it cancels the running jobs and
        # then re-raises their CancelledError. Stop polling, let the jobs end, close the pool.
        task.cancel()
        await asyncio.gather(task, *worker.tasks.values(), return_exceptions=True)
        if worker._pool is not None:
            await worker._pool.aclose()


async def _serve_saq(spec: WorkerSpec, stop: asyncio.Event) -> None:
    from saq import Queue, Worker

    queue = Queue.from_url(spec.url, name=spec.queue)
    await queue.connect()

    async def startup(_ctx: Any) -> None:
        await _gate()

    worker = Worker(queue, [saq_count, saq_stamp], concurrency=spec.concurrency, startup=startup)
    worker.SIGNALS = []  # SIGTERM is this process's to handle
    task = asyncio.ensure_future(worker.start())
    try:
        await _until_stopped(stop, task)
    finally:
        await worker.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await queue.disconnect()


async def _serve_awq(spec: WorkerSpec, stop: asyncio.Event) -> None:
    awr = importlib.import_module("aioworkqueue.redis")
    app = _awq_app(awr, spec.url)
    app.workqueue(spec.queue)
    try:
        await _gate()
        async with app.worker(queues=[spec.queue], concurrency=spec.concurrency):
            await stop.wait()
    finally:
        await _aclose(app)


_SERVE: dict[str, Callable[[WorkerSpec, asyncio.Event], Awaitable[None]]] = {
    "arq": _serve_arq,
    "saq": _serve_saq,
    "aioworkqueue.redis": _serve_awq,
}


async def _serve(spec: WorkerSpec) -> None:
    global _R, _SPIN, _TARGET
    import redis.asyncio as aioredis

    _R = aioredis.Redis.from_url(spec.url)
    _TARGET = spec.target
    _SPIN = spec.spin_us / 1e6
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    default_handler = loop.get_exception_handler()

    def quiet_at_stop(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # A worker stopped mid-poll drops a redis-py pipeline: said once, at the stop, harmless.
        if stop.is_set() and str(context.get("message", "")).startswith("Unclosed"):
            return
        if default_handler is not None:
            default_handler(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(quiet_at_stop)
    try:
        await _SERVE[spec.system](spec, stop)
    finally:
        await _R.aclose()


def worker_main(spec: WorkerSpec) -> None:
    """The entry point of a worker process: run ``spec.system``'s worker until SIGTERM."""
    import logging
    import warnings

    # saq warns at every stop that it cancelled its idle readers: expected here.
    logging.getLogger("saq").setLevel(logging.ERROR)
    # arq closes its pool with redis-py's deprecated close(): not this bench's to fix.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="arq")
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if spec.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(spec))


def _start(specs: Sequence[WorkerSpec]) -> list[BaseProcess]:
    mp = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    for spec in specs:
        p = mp.Process(target=worker_main, args=(spec,), name=f"bench-{spec.system}", daemon=True)
        p.start()
        procs.append(p)
    return procs


def _stop(procs: Sequence[BaseProcess]) -> None:
    """Terminate every process, then kill what is still alive after 5 s; join all."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)


# --- the client side -------------------------------------------------------------------------

Enqueue = Callable[[str, Sequence[int]], Awaitable[None]]


class _Client:
    """One system's client: enqueue a counted job or a stamp job onto a named queue."""

    #: The row of enqueues awaited one by one; the gathered row adds ``batched_suffix``.
    one_label = ""
    batched_suffix = ""

    async def one(self, queue: str, i: int) -> None:
        raise NotImplementedError

    async def stamp(self, queue: str, t0: float) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def before_workers(self, r: Any, queue: str) -> None:
        """Anything to set up on the server before worker processes start on ``queue``."""

    def batched(self) -> dict[str, Enqueue]:
        """Each concurrent or batched way of enqueueing: row label -> how."""
        return {f"{self.one_label}, gather of {CHUNK}{self.batched_suffix}": self.gathered}

    async def awaited(self, queue: str, ids: Sequence[int]) -> None:
        one = self.one
        for i in ids:
            await one(queue, i)

    async def gathered(self, queue: str, ids: Sequence[int]) -> None:
        for k in range(0, len(ids), CHUNK):
            await asyncio.gather(*(self.one(queue, i) for i in ids[k : k + CHUNK]))


class _Arq(_Client):
    one_label = "arq enqueue_job"
    batched_suffix = " (no batch API)"

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, url: str) -> _Arq:
        from arq import create_pool
        from arq.connections import RedisSettings

        return cls(await create_pool(RedisSettings.from_dsn(url)))

    async def one(self, queue: str, i: int) -> None:
        if await self.pool.enqueue_job("arq_count", i, _queue_name=queue) is None:
            raise BenchError(f"arq: job {i} was not queued")

    async def stamp(self, queue: str, t0: float) -> None:
        await self.pool.enqueue_job("arq_stamp", t0, _queue_name=queue)

    async def aclose(self) -> None:
        await self.pool.aclose()


class _Saq(_Client):
    one_label = "saq enqueue"
    batched_suffix = " (no batch enqueue)"

    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: dict[str, Any] = {}

    @classmethod
    async def open(cls, url: str) -> _Saq:
        import saq  # noqa: F401 - ImportError here means "not installed"

        return cls(url)

    def _queue(self, name: str) -> Any:
        q = self.queues.get(name)
        if q is None:
            from saq import Queue

            q = self.queues[name] = Queue.from_url(self.url, name=name)
        return q

    async def before_workers(self, r: Any, queue: str) -> None:
        # saq's first sweep runs as a worker starts, beside its readers: a job a reader has
        # moved to the active list but not marked active yet is swept and queued again (run
        # twice). Holding the sweep lock (which saq's own sweeps take for 60 s) keeps the run
        # to saq's steady state, where that sweep comes once a minute.
        await r.set(f"saq:{queue}:sweep", 1, ex=600)

    async def one(self, queue: str, i: int) -> None:
        if await self._queue(queue).enqueue("saq_count", i=i) is None:
            raise BenchError(f"saq: job {i} was not queued")

    async def stamp(self, queue: str, t0: float) -> None:
        await self._queue(queue).enqueue("saq_stamp", t0=t0)

    async def aclose(self) -> None:
        for q in self.queues.values():
            await q.disconnect()


class _Awq(_Client):
    one_label = "aioworkqueue.redis queue_work"

    def __init__(self, awr: Any, url: str) -> None:
        self.awr = awr
        self.app = _awq_app(awr, url)
        self.wqs: dict[str, Any] = {}

    @classmethod
    async def open(cls, url: str) -> _Awq:
        return cls(importlib.import_module("aioworkqueue.redis"), url)

    def _wq(self, name: str) -> Any:
        wq = self.wqs.get(name)
        if wq is None:
            wq = self.wqs[name] = self.app.workqueue(name)
        return wq

    def batched(self) -> dict[str, Enqueue]:
        ways = super().batched()
        if getattr(self.awr, "queue_work_many", None) is not None:
            ways[f"aioworkqueue.redis queue_work_many, {CHUNK} per call"] = self.many
        return ways

    async def one(self, queue: str, i: int) -> None:
        if not await self.awr.queue_work(self._wq(queue), self.app.work(awq_count, i)):
            raise BenchError(f"aioworkqueue.redis: job {i} was not queued")

    async def many(self, queue: str, ids: Sequence[int]) -> None:
        wq, work = self._wq(queue), self.app.work
        for k in range(0, len(ids), CHUNK):
            answers = await self.awr.queue_work_many(
                wq, [work(awq_count, i) for i in ids[k : k + CHUNK]]
            )
            if not all(answers):
                raise BenchError(f"aioworkqueue.redis: a job of {k}..{k + CHUNK} was not queued")

    async def stamp(self, queue: str, t0: float) -> None:
        await self.awr.queue_work(self._wq(queue), self.app.work(awq_stamp, t0))

    async def aclose(self) -> None:
        await _aclose(self.app)


_CLASSES: dict[str, type[_Arq | _Saq | _Awq]] = {
    "arq": _Arq,
    "saq": _Saq,
    "aioworkqueue.redis": _Awq,
}


# --- the measurements ------------------------------------------------------------------------


@dataclass
class _Groups:
    enqueue: Group
    batched: Group
    e2e: dict[int, Group]
    p50: Group
    p99: Group
    scaling: Group | None
    cpu: Group | None
    work: Group | None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def _groups(ctx: Ctx, server_version: str, workers: Sequence[int], scaling: bool) -> _Groups:
    s, res = ctx.sizes, ctx.results
    n = s.redis_jobs
    where = (
        f"redis-server {server_version} on loopback; arq {_version('arq')}, saq {_version('saq')}"
    )
    return _Groups(
        enqueue=res.group(
            "redis.enqueue",
            f"Redis, enqueue: {n:,} jobs from one client, each awaited before the next, "
            f"no worker running; best of {s.redis_rounds} ({where})",
            "items/s",
            "higher",
            _Arq.one_label,
        ),
        batched=res.group(
            "redis.enqueue.batched",
            f"Redis, enqueue: {n:,} jobs, {CHUNK} in flight at once (asyncio.gather where a "
            f"system has no batch call); best of {s.redis_rounds}",
            "items/s",
            "higher",
            f"{_Arq.one_label}, gather of {CHUNK}{_Arq.batched_suffix}",
        ),
        e2e={
            w: res.group(
                f"redis.e2e.{w}",
                f"Redis, end to end: {n:,} no-op jobs queued, then run by {w} worker "
                f"process{'es' if w > 1 else ''} x {CONCURRENCY} concurrent jobs "
                f"(arq poll_delay {ARQ_POLL_DELAY * 1000:g} ms)",
                "items/s",
                "higher",
                "arq",
            )
            for w in workers
        },
        p50=res.group(
            "redis.latency.median",
            f"Redis, enqueue to start, median of {s.redis_latency} jobs, 1 idle worker process "
            f"(arq polls every {ARQ_POLL_DELAY * 1000:g} ms; its default is 500 ms)",
            "ms",
            "lower",
            "arq",
        ),
        p99=res.group(
            "redis.latency.p99",
            f"Redis, enqueue to start, p99 of {s.redis_latency} jobs, 1 idle worker process",
            "ms",
            "lower",
            "arq",
        ),
        scaling=res.group(
            "redis.scaling",
            f"Redis, scaling: {SCALE_SYSTEM}, {s.redis_scale_jobs:,} no-op jobs a run, 1 and 2 "
            f"worker processes x {CONCURRENCY} concurrent jobs, alternating, best of "
            f"{s.redis_rounds}",
            "items/s",
            "higher",
            SCALE_ROWS[1],
        )
        if scaling
        else None,
        cpu=res.group(
            "redis.scaling.cpu",
            f"Redis, scaling: CPU time per job of the no-op runs above, median of "
            f"{s.redis_rounds} (from /proc); the ratio to the worker is the server's share s/w. "
            f"On 2 cores that the server shares, 1 worker process does at most 1 / max(w, s) "
            f"jobs/s and 2 at most 2 / (w + s): the ratio of the two is 2 * max(w, s) / (w + s)",
            "us",
            "lower",
            CPU_ROWS[1, "workers"],
        )
        if scaling
        else None,
        work=res.group(
            "redis.scaling.work",
            f"Redis, scaling: {SCALE_SYSTEM}, {max(1, s.redis_scale_jobs // 4):,} jobs of "
            f"{WORK_US} us of CPU each a run, 1 and 2 worker processes x {CONCURRENCY} "
            f"concurrent jobs, alternating, best of {s.redis_rounds}",
            "items/s",
            "higher",
            SCALE_ROWS[1],
        )
        if scaling
        else None,
    )


async def _pop(r: Any, key: str, procs: Sequence[BaseProcess], what: str) -> bytes:
    """BLPOP ``key``; a worker process that died or a wait past ``_WAIT`` raises BenchError."""
    deadline = time.monotonic() + _WAIT
    while True:
        got = await r.blpop([key], timeout=0.5)
        if got is not None:
            value: bytes = got[1]
            return value
        dead = [p for p in procs if not p.is_alive()]
        if dead:
            raise BenchError(f"{what}: a worker process exited with {dead[0].exitcode}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: nothing after {_WAIT:.0f} s")


def _put_missing(g: _Groups, loop: str, system: str, note: str) -> None:
    """``note`` in each of ``system``'s rows that has no number yet (a failure keeps the
    numbers measured before it)."""
    client = _CLASSES[system]
    one = client.one_label
    rows = [(g.enqueue, one), (g.batched, f"{one}, gather of {CHUNK}{client.batched_suffix}")]
    rows += [(e, system) for e in g.e2e.values()] + [(g.p50, system), (g.p99, system)]
    for group, row in rows:
        if group.value(loop, row) is None:
            group.put(loop, row, Cell(None, note))


async def _system(
    ctx: Ctx, system: str, *, url: str, r: Any, g: _Groups, workers: Sequence[int]
) -> None:
    s, loop = ctx.sizes, ctx.loop_name
    n = s.redis_jobs
    ids = list(range(n))
    client = await _CLASSES[system].open(url)
    try:
        # 1. Enqueue, no worker running; every round onto a fresh queue.
        ways: dict[str, tuple[Group, Enqueue]] = {client.one_label: (g.enqueue, client.awaited)}
        ways |= {label: (g.batched, fn) for label, fn in client.batched().items()}
        for label, (group, fn) in ways.items():
            times: list[float] = []
            for rnd in range(s.redis_rounds + 1):  # round 0 warms up (connections, scripts)
                ctx.progress.show(f"{system}: enqueue, {label} {rnd}/{s.redis_rounds}")
                size = min(n, CHUNK) if rnd == 0 else n
                t0 = time.perf_counter()
                await fn(f"enq{len(times)}-{label}-{rnd}", ids[:size])
                if rnd:
                    times.append(time.perf_counter() - t0)
            group.put(loop, label, Cell(n / best(times), extra={"median": n / median(times)}))
        fill = list(client.batched().values())[-1]  # the fastest way each system has
        # 2. End to end (and 3. latency, with the one idle worker process).
        for w in workers:
            lat: list[float] | None = [] if w == 1 else None
            rate = await _e2e(
                ctx, system, client, url=url, r=r, queue=f"e2e{w}", w=w, n=n, fill=fill, lat=lat
            )
            g.e2e[w].put(loop, system, Cell(rate))
            if lat:
                g.p50.put(loop, system, Cell(median(lat)))
                g.p99.put(loop, system, Cell(percentile(sorted(lat), 0.99)))
    finally:
        await client.aclose()


async def _e2e(
    ctx: Ctx,
    system: str,
    client: _Client,
    *,
    url: str,
    r: Any,
    queue: str,
    w: int,
    n: int,
    fill: Enqueue,
    lat: list[float] | None = None,
    spin_us: int = 0,
    cpu: dict[str, float] | None = None,
    server_pid: int | None = None,
) -> float:
    """One end-to-end run: ``n`` jobs queued on ``queue`` while ``w`` worker processes wait at
    the gate, then timed from the gate's opening to the last job; each job spends ``spin_us``
    of CPU first. With ``lat``, the latency samples are taken after it, on the same (then
    idle) workers. With ``cpu`` (and where ``/proc`` has the numbers), it gets the CPU time
    per job over the timed span, in microseconds: ``"server"`` (``server_pid``) and
    ``"workers"`` (all worker processes together). Returns: jobs/s.
    Raises: BenchError if a worker dies, a wait times out or the count is not ``n``."""
    await r.delete(K_COUNT, K_DONE, K_READY, K_GO, K_LAT)
    await client.before_workers(r, queue)
    spec = WorkerSpec(system, url, queue, ctx.loop_name, target=n, spin_us=spin_us)
    procs = _start([spec] * w)
    try:
        for _ in range(w):
            ctx.progress.show(f"{system}: starting {w} worker process(es)")
            await _pop(r, K_READY, procs, f"{system}, {w} worker(s) starting")
        ctx.progress.show(f"{system}: queueing {n:,} jobs for {w} worker process(es)")
        await fill(queue, list(range(n)))
        ctx.progress.show(f"{system}: {n:,} jobs, {w} worker process(es)")
        pids = [p.pid for p in procs if p.pid is not None]
        c0 = _cpu_seconds(server_pid, *pids) if cpu is not None else None
        await r.rpush(K_GO, *([1] * w))
        t0 = time.perf_counter()
        await _pop(r, K_DONE, procs, f"{system}, end to end, {w} worker(s)")
        dt = time.perf_counter() - t0
        c1 = _cpu_seconds(server_pid, *pids) if c0 is not None else None
        if cpu is not None and c0 is not None and c1 is not None:
            cpu["server"] = (c1[0] - c0[0]) / n * 1e6
            cpu["workers"] = sum(b - a for a, b in zip(c0[1:], c1[1:], strict=True)) / n * 1e6
        if lat is not None:
            lat += await _latency(ctx, system, client, r=r, queue=queue, procs=procs)
    finally:
        await asyncio.to_thread(_stop, procs)
    ran = int(await r.get(K_COUNT) or 0)
    if ran != n:
        raise BenchError(f"{system}, {w} worker(s): {ran} jobs ran, {n} were queued")
    return n / dt


def _cpu_seconds(*pids: int | None) -> list[float] | None:
    """User + system CPU seconds of each of ``pids`` so far, or None where ``/proc`` cannot
    say (not Linux, a process gone, no pid)."""
    out: list[float] = []
    try:
        for pid in pids:
            if pid is None:
                return None
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
    return out


#: The system of the scaling rows, and their labels by number of worker processes.
SCALE_SYSTEM = "aioworkqueue.redis"
SCALE_ROWS = {1: "1 worker process", 2: "2 worker processes"}


#: CPU time that each job of the second scaling group spends before its ``INCR``, microseconds:
#: a job that does something (about what decoding a small JSON document and building a reply
#: take), so that the server's share per job is that of real work, not of bookkeeping alone.
WORK_US = 200

#: The rows of the CPU group: CPU time per job, by process kind and number of worker processes.
CPU_ROWS = {
    (1, "workers"): "1 worker process: the worker",
    (1, "server"): "1 worker process: the server",
    (2, "workers"): "2 worker processes: the workers",
    (2, "server"): "2 worker processes: the server",
}


async def _scaling(
    ctx: Ctx, *, url: str, r: Any, g: _Groups, server_pid: int | None = None
) -> None:
    """aioworkqueue.redis with 1 and with 2 worker processes, in alternating order (1, 2, then
    2, 1, ...) so that a machine that slows down or speeds up during the scenario weighs on
    both; best of ``sizes.redis_rounds`` each: ``sizes.redis_scale_jobs`` no-op jobs a run
    (``g.scaling``, and the CPU per job of the server and the workers, median of the rounds,
    in ``g.cpu``), then a quarter as many jobs of ``WORK_US`` each (``g.work``)."""
    s, loop = ctx.sizes, ctx.loop_name
    assert g.scaling is not None and g.cpu is not None and g.work is not None
    client = await _CLASSES[SCALE_SYSTEM].open(url)
    try:
        fill = list(client.batched().values())[-1]
        variants = [(g.scaling, 0, s.redis_scale_jobs), (g.work, WORK_US, s.redis_scale_jobs // 4)]
        for group, spin, n in variants:
            rates: dict[int, list[float]] = {1: [], 2: []}
            cpus: dict[tuple[int, str], list[float]] = {k: [] for k in CPU_ROWS}
            for rnd in range(s.redis_rounds):
                for w in (1, 2) if rnd % 2 == 0 else (2, 1):
                    ctx.progress.show(f"scaling: {w} worker process(es), round {rnd + 1}")
                    cpu: dict[str, float] = {}
                    rate = await _e2e(
                        ctx,
                        SCALE_SYSTEM,
                        client,
                        url=url,
                        r=r,
                        queue=f"scale{w}-{spin}-{rnd}",
                        w=w,
                        n=max(1, n),
                        fill=fill,
                        spin_us=spin,
                        cpu=cpu,
                        server_pid=server_pid,
                    )
                    rates[w].append(rate)
                    for (cw, kind), got in cpus.items():
                        if cw == w and kind in cpu:
                            got.append(cpu[kind])
            for w, row in SCALE_ROWS.items():
                # best round: the one least disturbed by everything else on the machine
                group.put(loop, row, Cell(max(rates[w]), extra={"median": median(rates[w])}))
            if spin == 0:
                for key, row in CPU_ROWS.items():
                    if cpus[key]:
                        g.cpu.put(loop, row, Cell(median(cpus[key])))
                    else:
                        g.cpu.put(loop, row, Cell(None, "no /proc"))
    finally:
        await client.aclose()


async def _latency(
    ctx: Ctx, system: str, client: _Client, *, r: Any, queue: str, procs: Sequence[BaseProcess]
) -> list[float]:
    """Milliseconds from just before the enqueue to the job's first line, one job at a time."""
    samples: list[float] = []
    total = ctx.sizes.redis_latency
    for k in range(total + 2):  # the first two warm up
        ctx.progress.show(f"{system}: latency {k}/{total}")
        await client.stamp(queue, time.time())
        value = float(await _pop(r, K_LAT, procs, f"{system}, latency"))
        if k >= 2:
            samples.append(value * 1000)
    return samples


def _scaling_missing(g: _Groups, loop: str, note: str) -> None:
    """``note`` in each scaling row that has no number yet."""
    for group, rows in (
        (g.scaling, SCALE_ROWS.values()),
        (g.cpu, CPU_ROWS.values()),
        (g.work, SCALE_ROWS.values()),
    ):
        for row in rows:
            if group is not None and group.value(loop, row) is None:
                group.put(loop, row, Cell(None, note))


async def measure(
    ctx: Ctx, systems: Sequence[str] = SYSTEMS, workers: Sequence[int] | None = None
) -> None:
    """Measure ``systems`` on a private server, with ``workers`` worker processes (default
    ``sizes.redis_workers``). A system that fails is reported in ``results.errors``; the others
    still run. Raises BenchError when there is no server or no redis-py to measure with."""
    aioredis = import_optional("redis.asyncio")
    if aioredis is None:
        raise BenchError("redis: needs redis-py, arq and saq: pip install 'aioworkqueue[bench]'")
    workers = tuple(ctx.sizes.redis_workers if workers is None else workers)
    server = await asyncio.to_thread(start_redis_server)
    try:
        r = aioredis.Redis.from_url(server.url)
        try:
            info = await r.info("server")
            g = _groups(ctx, str(info["redis_version"]), workers, SCALE_SYSTEM in systems)
            for system in systems:
                await r.flushdb()
                ctx.progress.show(system)
                try:
                    await _system(ctx, system, url=server.url, r=r, g=g, workers=workers)
                except ImportError as exc:
                    unbuilt = exc.name == "aioworkqueue.redis"
                    _put_missing(g, ctx.loop_name, system, NOT_BUILT if unbuilt else NOT_INSTALLED)
                except Exception as exc:
                    ctx.results.errors.append(
                        f"{ctx.loop_name}, redis, {system}: {type(exc).__name__}: {exc}"
                    )
                    _put_missing(g, ctx.loop_name, system, "failed")
            if g.scaling is not None:
                await r.flushdb()
                try:
                    await _scaling(ctx, url=server.url, r=r, g=g, server_pid=server.proc.pid)
                except ImportError:
                    _scaling_missing(g, ctx.loop_name, NOT_BUILT)
                except Exception as exc:
                    ctx.results.errors.append(
                        f"{ctx.loop_name}, redis, scaling: {type(exc).__name__}: {exc}"
                    )
                    _scaling_missing(g, ctx.loop_name, "failed")
        finally:
            await r.aclose()
    finally:
        await asyncio.to_thread(stop_redis_server, server)


async def run(ctx: Ctx) -> None:
    """The ``redis`` scenario: arq, saq and aioworkqueue.redis on one private server."""
    await measure(ctx)
