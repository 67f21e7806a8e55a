"""Real servers, real SIGTERMs: every accepted job runs exactly once or is reported unfinished.

Each trial starts a server as a subprocess on 127.0.0.1 (a free port) — uvicorn with a Starlette
app whose lifespan is ``functools.partial(aioworkqueue.running, ...)``, or ``aiohttp.web.run_app``
with ``aioworkqueue.aiohttp.setup`` — in the embedded mode or with a per-CPU Runtime. A client
sends a bounded number of requests that queue jobs: immediate ones, delayed ones, and a few
that run far longer than the drain deadline. At a seeded moment the test sends SIGTERM and keeps
sending. The server keeps a ledger file, one line per event, appended with single ``os.write``
calls (atomic, from any thread): ``accepted ID`` when ``queue_*`` returned True, ``ran ID`` when a
job's function returned, ``unfinished ID STATE`` for each item the shutdown reported, and
``shutdown N`` when the drain ended. The test then checks, from the ledger alone:

* every accepted job ran exactly once, or did not run and was reported unfinished exactly once;
* nothing ran or was reported that was not accepted, and every 2xx answer was accepted;
* the drain ran (one ``shutdown`` line), the jobs longer than the deadline were cut, and
* the server exited by itself within its deadline after the SIGTERM.

This file is also the server: ``python tests/test_integrations.py FRAMEWORK MODE LEDGER``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

DRAIN = 1.0  # the lifespan's flush deadline (aioworkqueue.running(timeout=...))
GRACE = 2.0  # the server's own grace period for open connections, longer than the drain
EXIT_WITHIN = DRAIN + GRACE + 2.0  # SIGTERM to process exit, startup and teardown included
LONG = 30.0  # how long a "long" job works: always longer than a trial
REQUESTS = 48
CONCURRENCY = 6


# -- the server (runs in the subprocess) ----------------------------------------------------------


class Ledger:
    """Append-only event file shared by the request handlers and the jobs (any thread)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, *fields: object) -> None:
        os.write(self.fd, (" ".join(map(str, fields)) + "\n").encode())


def _serve(framework: str, mode: str, ledger_path: str) -> int:
    import aioworkqueue as aw

    ledger = Ledger(ledger_path)
    # Three homes for jobs. "now" jobs: a queue allocated at the first request, so in Runtime
    # mode it belongs to the runtime's pools. "delayed" jobs: system_wq, which follows the active
    # runtime. "long" jobs: a queue allocated at import, before any runtime, so it always runs on
    # the host loop; running() drains that pool in both modes.
    queues: dict[str, aw.Workqueue] = {"long": aw.alloc_workqueue("early", max_active=4)}

    class Job(aw.DelayedWork):
        __slots__ = ("job_id", "seconds")

        def __init__(self, job_id: int, seconds: float) -> None:
            super().__init__(run_job)
            self.job_id = job_id
            self.seconds = seconds

    async def run_job(work: Job) -> None:
        await asyncio.sleep(work.seconds)
        ledger.write("ran", work.job_id)

    def accept(job_id: int, delay: float, seconds: float, kind: str) -> bool:
        job = Job(job_id, seconds)
        try:
            if kind == "delayed":
                ok = aw.schedule_delayed_work(job, delay)
            else:
                if kind not in queues:
                    queues[kind] = aw.alloc_workqueue("jobs", max_active=8)
                ok = aw.queue_work(queues[kind], job)
        except aw.WorkqueueError:  # shutting down: queueing from outside is refused
            return False
        assert ok  # a fresh item is never pending
        ledger.write("accepted", job_id)
        return True

    def on_unfinished(items: list[aw.Unfinished]) -> None:
        for work, _wq, state in items:
            assert isinstance(work, Job)
            ledger.write("unfinished", work.job_id, state)
        ledger.write("shutdown", len(items))

    running_kwargs: dict[str, Any] = {
        "runtime": {"cpus": 2} if mode == "runtime" else False,
        "timeout": DRAIN,
        "on_unfinished": on_unfinished,
    }
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until the server is up
    print("port", sock.getsockname()[1], flush=True)

    if framework == "starlette":
        import functools

        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route

        async def job_endpoint(request: Request) -> PlainTextResponse:
            q = request.query_params
            job_id = int(request.path_params["job_id"])
            ok = accept(job_id, float(q["delay"]), float(q["seconds"]), q["kind"])
            return PlainTextResponse("ok" if ok else "refused", status_code=200 if ok else 503)

        app = Starlette(
            routes=[Route("/job/{job_id}", job_endpoint, methods=["POST"])],
            lifespan=functools.partial(aw.running, **running_kwargs),
        )
        config = uvicorn.Config(
            app, lifespan="on", log_level="warning", timeout_graceful_shutdown=int(GRACE)
        )
        uvicorn.Server(config).run(sockets=[sock])
    else:
        from aiohttp import web

        import aioworkqueue.aiohttp

        async def job_handler(request: web.Request) -> web.Response:
            q = request.query
            job_id = int(request.match_info["job_id"])
            ok = accept(job_id, float(q["delay"]), float(q["seconds"]), q["kind"])
            return web.Response(text="ok" if ok else "refused", status=200 if ok else 503)

        aioapp = web.Application()
        aioapp.router.add_post("/job/{job_id}", job_handler)
        aioworkqueue.aiohttp.setup(aioapp, **running_kwargs)
        web.run_app(aioapp, sock=sock, shutdown_timeout=GRACE, print=None)
    return 0


# -- the client and the checks ---------------------------------------------------------------------


@dataclass
class Plan:
    """What a seed decides: the jobs and the moment of the SIGTERM."""

    jobs: list[tuple[int, float, float, str]]  # (id, delay, seconds, kind)
    sigterm_after: int  # responses received before the SIGTERM
    linger: float  # then wait this long (jobs keep running, timers keep firing)


def _plan(seed: int) -> Plan:
    rng = random.Random(seed)
    jobs = [(0, 0.0, 0.01, "now")]  # so that every trial has a job that surely runs
    for job_id in range(1, REQUESTS):
        r = rng.random()
        if r < 0.55:
            jobs.append((job_id, 0.0, rng.uniform(0.0, 0.3), "now"))
        elif r < 0.9:
            jobs.append((job_id, rng.choice([0.05, 0.2, 0.6, 1.5, 5.0]), 0.05, "delayed"))
        else:
            jobs.append((job_id, 0.0, LONG, "long"))
    moment = rng.choice(["early", "middle", "after"])
    after = {"early": 3, "middle": REQUESTS // 2, "after": REQUESTS}[moment]
    return Plan(jobs, after, rng.uniform(0.0, 0.5) if moment == "after" else 0.0)


@dataclass
class Trial:
    """What the client saw."""

    answered: dict[int, int] = field(default_factory=dict)  # job id -> status
    failed: int = 0  # requests that got no answer (the server had closed)
    sigterm_at: float = 0.0
    exited_after: float = 0.0


async def _drive(proc: subprocess.Popen[bytes], port: int, plan: Plan, trial: Trial) -> None:
    import httpx

    todo = collections.deque(plan.jobs)
    got = 0
    stopped = asyncio.Event()

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal got
        while todo:
            job_id, delay, seconds, kind = todo.popleft()
            params = {"delay": delay, "seconds": seconds, "kind": kind}
            try:
                resp = await client.post(f"/job/{job_id}", params=params)
            except httpx.HTTPError:
                trial.failed += 1
                continue
            trial.answered[job_id] = resp.status_code
            got += 1
            if got >= plan.sigterm_after and not stopped.is_set():
                stopped.set()

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        senders = [asyncio.create_task(sender(client)) for _ in range(CONCURRENCY)]
        waiting = asyncio.create_task(stopped.wait())
        await asyncio.wait([waiting, *senders], return_when=asyncio.FIRST_COMPLETED)
        if not stopped.is_set():
            await asyncio.gather(*senders)
        await asyncio.sleep(plan.linger)
        trial.sigterm_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*senders)
        waiting.cancel()


def _read_port(proc: subprocess.Popen[bytes], within: float) -> int:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(within):
            raise AssertionError(f"the server did not report its port within {within} s")
    line = proc.stdout.readline().decode()
    assert line.startswith("port "), line
    return int(line.split()[1])


@contextlib.contextmanager
def _server(
    framework: str, mode: str, ledger: Path, errlog: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with errlog.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, __file__, framework, mode, str(ledger)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            assert proc.stdout is not None
            proc.stdout.close()


# (server, mode, seed); the seeds give each server a SIGTERM early (after 3 answers), in the
# middle (after 24) and after the last answer (plus a random linger with timers still armed).
TRIALS = [
    ("starlette", "embedded", 2),
    ("starlette", "embedded", 11),
    ("starlette", "runtime", 12),
    ("aiohttp", "embedded", 21),
    ("aiohttp", "embedded", 22),
    ("aiohttp", "runtime", 4),
]


@pytest.mark.parametrize(("framework", "mode", "seed"), TRIALS)
def test_sigterm_accounts_for_every_job(
    framework: str, mode: str, seed: int, tmp_path: Path
) -> None:
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn" if framework == "starlette" else "aiohttp")
    plan = _plan(seed)
    ledger = tmp_path / "ledger"
    errlog = tmp_path / "stderr"
    trial = Trial()
    with _server(framework, mode, ledger, errlog) as proc:
        port = _read_port(proc, within=15)
        asyncio.run(_drive(proc, port, plan, trial))
        try:
            proc.wait(timeout=EXIT_WITHIN + 5)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{framework} did not exit after SIGTERM") from None
        trial.exited_after = time.monotonic() - trial.sigterm_at
        returncode = proc.returncode
    stderr = errlog.read_text()
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully
    assert returncode in (0, -signal.SIGTERM), stderr
    assert trial.exited_after < EXIT_WITHIN, (trial.exited_after, stderr)

    events = [line.split() for line in ledger.read_text().splitlines()]
    accepted = [int(e[1]) for e in events if e[0] == "accepted"]
    ran = collections.Counter(int(e[1]) for e in events if e[0] == "ran")
    unfinished = collections.Counter(int(e[1]) for e in events if e[0] == "unfinished")
    states = collections.Counter(e[2] for e in events if e[0] == "unfinished")
    shutdowns = [int(e[1]) for e in events if e[0] == "shutdown"]

    assert len(accepted) == len(set(accepted))
    assert shutdowns == [sum(unfinished.values())], stderr  # the drain ran, once, and reported
    for job_id in accepted:
        assert (ran[job_id], unfinished[job_id]) in ((1, 0), (0, 1)), (job_id, events)
    assert set(ran) | set(unfinished) <= set(accepted)
    ok = {job_id for job_id, status in trial.answered.items() if status == 200}
    assert ok <= set(accepted)
    assert all(status in (200, 503) for status in trial.answered.values())
    kinds = {job_id: kind for job_id, _d, _s, kind in plan.jobs}
    for job_id in accepted:
        if kinds[job_id] == "long":
            assert unfinished[job_id] == 1, job_id  # longer than the deadline: cut, reported
    assert ran[0] == 1
    print(
        f"\n{framework}/{mode} seed={seed}: sent={len(plan.jobs)} answered={len(trial.answered)} "
        f"no-answer={trial.failed} sigterm-after={plan.sigterm_after}+{plan.linger:.2f}s "
        f"accepted={len(accepted)} ran={sum(ran.values())} unfinished={dict(states)} "
        f"exit={trial.exited_after:.2f}s"
    )


if __name__ == "__main__":
    sys.exit(_serve(*sys.argv[1:4]))
