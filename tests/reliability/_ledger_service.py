"""A small service for the shutdown-under-load test: a steady stream of work, a SQLite ledger of
what was accepted and what ran, and a SIGTERM handler that shuts the runtime down with a deadline.

``python _ledger_service.py DB SEED LOOP DEADLINE``

* A ``Runtime(cpus=2, loop_factory=LOOP)`` with five queues (per-CPU ``max_active`` 8, unbound 4,
  ordered, ``WQ.HIGHPRI``, ``WQ.CPU_INTENSIVE``).
* Producers — a task on the host loop and a plain thread — queue fresh jobs without pause, some
  delayed (so timers are armed when the end comes). Every job has a unique id; when ``queue_*``
  returns True the id is written to the ledger as ``accepted``; a refusal (the runtime is
  shutting down) as ``refused``.
* A job writes ``start`` when it begins and ``done`` just before it returns. Most are quick, some
  await for a while (so some are running at the end), some are plain functions, some queue a
  child job (chained work, still allowed while the shutdown flushes).
* On SIGTERM (``loop.add_signal_handler`` on the host loop): ``rt.shutdown(timeout=DEADLINE)``
  while the producers keep trying; each ``(work, queue, state)`` it returns is written as
  ``unfinished``; then the producers are stopped and joined, ``exit`` is written and the process
  exits 0.

The ledger is one SQLite database in WAL mode, one connection shared under a lock (so a write is
never lost to a busy error), each event its own committed row: ``events(id, kind, info)``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
import threading
import time

import aioworkqueue as aw


class Ledger:
    def __init__(self, path: str) -> None:
        self.mu = threading.Lock()
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER, kind TEXT, info TEXT)")

    def write(self, jid: int, kind: str, info: str = "") -> None:
        with self.mu:
            self.db.execute("INSERT INTO events VALUES (?, ?, ?)", (jid, kind, info))

    def close(self) -> None:
        with self.mu:
            self.db.close()


class Job(aw.DelayedWork):
    __slots__ = ("chain", "jid", "nap", "svc")

    def __init__(self, svc: Service, jid: int, rng: random.Random) -> None:
        r = rng.random()
        super().__init__(sync_job if r < 0.2 else async_job)
        self.svc = svc
        self.jid = jid
        # How long it awaits: mostly nothing or a little, sometimes long enough to be cut.
        self.nap = 0.0 if r < 0.5 else rng.uniform(0, 0.02) if r < 0.95 else rng.uniform(1, 5)
        self.chain = rng.random() < 0.05


def sync_job(job: Job) -> None:
    job.svc.ledger.write(job.jid, "start", threading.current_thread().name)
    if job.chain:
        job.svc.submit(job.svc.rng_for_chain(job.jid), "chained")
    job.svc.ledger.write(job.jid, "done")


async def async_job(job: Job) -> None:
    job.svc.ledger.write(job.jid, "start", threading.current_thread().name)
    if job.nap:
        await asyncio.sleep(job.nap)
    else:
        await asyncio.sleep(0)
    if job.chain:
        job.svc.submit(job.svc.rng_for_chain(job.jid), "chained")
    job.svc.ledger.write(job.jid, "done")


class Service:
    def __init__(self, ledger: Ledger, seed: int) -> None:
        self.ledger = ledger
        self.seed = seed
        self.ids = iter(range(1, 1 << 62))
        self.ids_mu = threading.Lock()
        self.wqs: list[aw.Workqueue] = []
        self.stop = threading.Event()

    def rng_for_chain(self, jid: int) -> random.Random:
        return random.Random(self.seed * 7919 + jid)

    def next_id(self) -> int:
        with self.ids_mu:
            return next(self.ids)

    def submit(self, rng: random.Random, who: str) -> None:
        jid = self.next_id()
        job = Job(self, jid, rng)
        wqi = rng.randrange(len(self.wqs))
        wq = self.wqs[wqi]
        r = rng.random()
        try:
            if r < 0.6:
                ok = aw.queue_work(wq, job)
            elif r < 0.75:
                ok = aw.queue_work_on(rng.randrange(2), wq, job)
            else:
                ok = aw.queue_delayed_work(wq, job, rng.uniform(0.005, 0.5))
        except aw.WorkqueueError as exc:
            self.ledger.write(jid, "refused", f"{who}: {type(exc).__name__}")
            return
        assert ok, "a fresh job is never pending"
        self.ledger.write(jid, "accepted", f"{who} {wq.name}")


def thread_producer(svc: Service) -> None:
    rng = random.Random(svc.seed * 31 + 1)
    while not svc.stop.is_set():
        for _ in range(5):
            svc.submit(rng, "thread")
        time.sleep(0.001)


async def host_producer(svc: Service) -> None:
    rng = random.Random(svc.seed * 31 + 2)
    while not svc.stop.is_set():
        for _ in range(5):
            svc.submit(rng, "host")
        await asyncio.sleep(0.001)


async def main(db: str, seed: int, loop_kind: str, deadline: float) -> None:
    ledger = Ledger(db)
    svc = Service(ledger, seed)
    term = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, term.set)
    rt = aw.Runtime(cpus=2, loop_factory=loop_kind, shutdown_timeout=deadline)
    await rt.start()
    svc.wqs = [
        aw.alloc_workqueue("percpu", 0, 8),
        aw.alloc_workqueue("unbound", aw.WQ.UNBOUND, 4),
        aw.alloc_ordered_workqueue("ordered"),
        aw.alloc_workqueue("highpri", aw.WQ.HIGHPRI, 4),
        aw.alloc_workqueue("cpu", aw.WQ.CPU_INTENSIVE, 2),
    ]
    producer = threading.Thread(target=thread_producer, args=(svc,), name="producer")
    producer.start()
    host = asyncio.ensure_future(host_producer(svc))
    print("ready", flush=True)
    await term.wait()
    t0 = time.monotonic()
    ledger.write(0, "sigterm")
    unfinished = await rt.shutdown(timeout=deadline)  # the producers keep trying meanwhile
    took = time.monotonic() - t0
    for work, wq, state in unfinished:
        ledger.write(work.jid, "unfinished", f"{state} {wq.name}")  # type: ignore[attr-defined]
    svc.stop.set()
    await host
    await asyncio.to_thread(producer.join)
    ledger.write(0, "exit", f"{took:.3f}")
    ledger.close()


if __name__ == "__main__":
    db_path, seed_, loop_, deadline_ = (
        sys.argv[1],
        int(sys.argv[2]),
        sys.argv[3],
        float(sys.argv[4]),
    )
    factory = asyncio.new_event_loop
    if loop_ == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(db_path, seed_, loop_, deadline_))
    sys.stdout.flush()
    os._exit(0)
