"""Redis backend: end-to-end jobs/s with 1 and 2 worker processes, and where the CPU goes.

Queues N no-op jobs (``queue_work_many``), starts P worker processes (``app.worker``, 10 at a
time each) behind a gate, so that none runs ahead while another is still starting, and times
from the gate's opening to the end of ``flush_workqueue``; the server's and the workers' CPU
time over that span are read from ``/proc``. Usage:

    python benchmarks/redis_scaling.py [P] [N]      # P worker processes (1), N jobs (20,000)

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


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 1,
            int(sys.argv[2]) if len(sys.argv) > 2 else 20_000,
        )
    )
