"""Redis backend: end-to-end jobs/s with 1 and 2 worker processes, and where the CPU goes.

Queues N no-op jobs (``queue_work_many``), starts P worker processes (``app.worker``, 10 at a
time each) behind a gate, so that none runs ahead while another is still starting, and times
from the gate's opening to the end of ``flush_workqueue``; the server's and the workers' CPU
time over that span are read from ``/proc``. Two more measurements take the bench's scaling
figures apart (benchmarks/README.md, "Two worker processes against one, on two cores"):
``incr`` is what the bench's job costs (N ``INCR`` calls through redis-py, 10 at a time: the
client's and the server's CPU per call), and ``cycle`` what the worker's scripts cost the server
(one consumer cycling **take** and **finish_many** over N entries, batches of 1 to 20, no worker
process: ``INFO commandstats``). Usage:

    python benchmarks/redis_scaling.py [P] [N]      # P worker processes (1), N jobs (20,000)
    python benchmarks/redis_scaling.py incr [N]     # N INCRs (20,000)
    python benchmarks/redis_scaling.py cycle [N]    # N entries per batch size (10,000)

Needs ``redis-server`` on PATH (a private one is started and stopped). Linux only (``/proc``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import aioworkqueue.redis as awr
from aioworkqueue._tools.redis_server import start_redis_server, stop_redis_server

WORKER = r"""
import asyncio, os, sys
import redis.asyncio as aioredis
import aioworkqueue.redis as awr

async def noop(*a):
    pass

async def main():
    app = awr.App(url=sys.argv[1], prefix="scaling")
    app.function(noop, name="noop")
    app.workqueue("q")
    r = aioredis.Redis.from_url(sys.argv[1])
    await app.client.ping()
    await r.rpush("ready", os.getpid())
    await r.blpop(["go:%d" % os.getpid()], timeout=0)  # all start together: none runs ahead
    async with app.worker(queues=["q"], concurrency=10):
        await r.blpop(["stop:%d" % os.getpid()], timeout=0)
    await app.aclose()
    await r.aclose()

asyncio.run(main())
"""


def _cpu(pid: int) -> float:
    """Returns: user + system CPU seconds of process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def noop(*_args: object) -> None:
    pass


async def main(procs: int, n: int) -> None:
    srv = start_redis_server()
    app = awr.App(url=srv.url, prefix="scaling")
    app.function(noop, name="noop")
    wq = app.workqueue("q")
    try:
        for i in range(0, n, 500):
            await wq.queue_many([app.work(noop, key=str(j)) for j in range(i, min(n, i + 500))])
        # the spawn itself is quick; the workers are awaited through Redis below
        workers = [subprocess.Popen([sys.executable, "-c", WORKER, srv.url]) for _ in range(procs)]  # noqa: ASYNC220
        for _ in workers:
            await app.client.blpop(["ready"], timeout=30)
        r0, w0, t0 = _cpu(srv.proc.pid), [_cpu(p.pid) for p in workers], time.perf_counter()
        for p in workers:
            await app.client.rpush(f"go:{p.pid}", 1)
        await wq.flush()
        t = time.perf_counter() - t0
        r1, w1 = _cpu(srv.proc.pid), [_cpu(p.pid) for p in workers]
        print(
            f"{procs} worker process(es), {n} jobs: {n / t:,.0f} jobs/s (wall {t:.2f} s); "
            f"server CPU {(r1 - r0) / n * 1e6:.0f} us/job, workers "
            + ", ".join(f"{(b - a) / n * 1e6 * procs:.0f}" for a, b in zip(w0, w1, strict=True))
            + " us/job each"
        )
        for p in workers:
            await app.client.rpush(f"stop:{p.pid}", 1)
        for p in workers:
            p.wait(timeout=30)
    finally:
        await app.aclose()
        stop_redis_server(srv)


async def incr(n: int) -> None:
    """The bench's job alone: ``n`` INCRs through redis-py, 10 at a time."""
    import redis.asyncio as aioredis

    srv = start_redis_server()
    r = aioredis.Redis.from_url(srv.url)
    try:
        await r.ping()

        async def one() -> None:
            for _ in range(n // 10):
                await r.incr("c")

        c0, m0, t0 = _cpu(srv.proc.pid), time.process_time(), time.perf_counter()
        await asyncio.gather(*(one() for _ in range(10)))
        c1, m1, t = _cpu(srv.proc.pid), time.process_time(), time.perf_counter() - t0
        print(
            f"{n // 10 * 10} INCRs, 10 at a time: {n / t:,.0f}/s; CPU per INCR: server "
            f"{(c1 - c0) / n * 1e6:.1f} us, client {(m1 - m0) / n * 1e6:.1f} us"
        )
    finally:
        await r.aclose()
        stop_redis_server(srv)


async def cycle(n: int) -> None:
    """The worker's scripts alone: take, then finish_many of each batch (which takes the next),
    over ``n`` entries, for batches of 1 to 20; the server's time from INFO commandstats."""
    srv = start_redis_server()
    try:
        for batch in (1, 2, 5, 10, 20):
            app = awr.App(url=srv.url, prefix=f"cycle{batch}")
            app.function(noop, name="noop")
            wq = app.workqueue("q")
            try:
                for i in range(0, n, 500):
                    works = [app.work(noop, key=str(j)) for j in range(i, min(n, i + 500))]
                    await wq.queue_many(works)
                await app.client.config_resetstat()
                _nxt, _n, _last, *got = await wq.call("take", "A", 30_000, batch)
                done = 0
                while got:
                    args: list[str | int] = ["A", 30_000, "1", batch]
                    for _ans, entry, key, _f, _a in got:
                        args += (entry.decode(), key.decode(), "ok")
                    done += len(got)
                    _nxt, _n, *got = await wq.call("finish_many", *args)
                st = await app.client.info("commandstats")
                ev, xr = st["cmdstat_evalsha"], st["cmdstat_xreadgroup"]
                print(
                    f"batch {batch:2}: {ev['calls']} scripts, {ev['usec_per_call']:.0f} us a "
                    f"script, {ev['usec'] / done:.1f} us a job; XREADGROUP "
                    f"{xr['usec_per_call']:.1f} us a call"
                )
            finally:
                await app.aclose()
    finally:
        stop_redis_server(srv)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "incr":
        asyncio.run(incr(int(args[1]) if len(args) > 1 else 20_000))
    elif args and args[0] == "cycle":
        asyncio.run(cycle(int(args[1]) if len(args) > 1 else 10_000))
    else:
        asyncio.run(
            main(
                int(args[0]) if args else 1,
                int(args[1]) if len(args) > 1 else 20_000,
            )
        )
