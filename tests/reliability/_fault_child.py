"""A child process for faults that may leave the runtime (or the process) broken.

``python _fault_child.py MODE LOOP`` starts a ``Runtime(cpus=2)``, causes the fault ``MODE`` on
pool 0, then probes what still works, and prints one JSON object on its last line of stdout:

* ``pool0_dead``: pool 0's loop has closed;
* ``reported``: ERROR/CRITICAL log records on ``aioworkqueue``/``asyncio`` (the fault's report);
* ``pool1_serves`` / ``unbound_serves``: an item queued on pool 1 / on an unbound queue ran;
* ``queue_on_dead``: what ``queue_work_on(0, ...)`` did afterwards, whether the item then ran
  within a second (``victim_ran``) or was left pending (``victim_pending``);
* ``shutdown``: ``"ok"``, ``"raised <exc>"`` or ``"hung"``; ``unfinished``: what it returned;
  ``threads_after``: the runtime's threads still alive after it; ``new_runtime``: whether
  another Runtime can start afterwards.

Modes: ``kbi_async``, ``kbi_sync``, ``sysexit_async``, ``sysexit_sync`` (the exception raised
inside a work item), ``loop_stop`` (pool 0's loop stopped from outside, while it runs an item),
``shutdown_from_pool`` (``rt.shutdown()`` awaited by a work item on pool 0).

Every wait is bounded and the process ends with ``os._exit`` so that it never hangs the test.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import os
import sys
import threading
import time

import aioworkqueue as aw

STEP = 3.0  # bound of each wait


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception as exc:  # a message that cannot be formatted is still a report
            msg = f"<unformattable: {exc!r}>"
        self.messages.append(f"{record.name}: {msg.splitlines()[0] if msg else ''}")


async def wait_for_event(ev: threading.Event, limit: float = STEP) -> bool:
    return await asyncio.to_thread(ev.wait, limit)


async def main(mode: str, loop_kind: str) -> dict[str, object]:
    cap = Capture()
    for name in ("aioworkqueue", "asyncio"):
        logging.getLogger(name).addHandler(cap)
    out: dict[str, object] = {"mode": mode, "loop": loop_kind}
    rt = aw.Runtime(cpus=2, loop_factory=loop_kind, shutdown_timeout=1.0)
    await rt.start()
    wq = aw.alloc_workqueue("faulty", 0, 0)
    ub = aw.alloc_workqueue("faulty-unbound", aw.WQ.UNBOUND, 0)
    entered = threading.Event()

    if mode.startswith(("kbi", "sysexit")):
        exc_type = KeyboardInterrupt if mode.startswith("kbi") else SystemExit

        if mode.endswith("async"):

            async def bad(w: aw.Work) -> None:
                entered.set()
                await asyncio.sleep(0)
                raise exc_type("raised inside a work item")
        else:

            def bad(w: aw.Work) -> None:  # type: ignore[misc]
                entered.set()
                raise exc_type("raised inside a work item")

        assert aw.queue_work_on(0, wq, aw.Work(bad))
        await wait_for_event(entered)
    elif mode == "loop_stop":

        async def long(w: aw.Work) -> None:
            entered.set()
            await asyncio.sleep(3600)

        narrow = aw.alloc_workqueue("faulty-narrow", 0, 1)
        assert aw.queue_work_on(0, narrow, aw.Work(long))
        await wait_for_event(entered)
        # Left behind on pool 0: two items waiting for narrow's one slot, one armed timer.
        assert aw.queue_work_on(0, narrow, aw.Work(lambda w: None))
        assert aw.queue_work_on(0, narrow, aw.Work(lambda w: None))
        assert aw.queue_delayed_work_on(0, wq, aw.DelayedWork(lambda w: None), 3600)
        loop0 = rt.pools[0].loop
        loop0.call_soon_threadsafe(loop0.stop)
    elif mode == "shutdown_from_pool":
        result: list[str] = []

        async def stopper(w: aw.Work) -> None:
            entered.set()
            try:
                await rt.shutdown(timeout=0.3)  # refused: see 692ace3
                result.append("returned")
            except aw.WorkqueueError as exc:
                result.append(f"WorkqueueError: {exc}")
            except BaseException as exc:
                result.append(f"{type(exc).__name__}")
                raise

        assert aw.queue_work_on(0, wq, aw.Work(stopper))
        await wait_for_event(entered)
        deadline = time.monotonic() + STEP
        while not result and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        out["shutdown_in_work"] = result
    else:
        raise SystemExit(f"unknown mode {mode}")

    deadline = time.monotonic() + STEP
    while not rt.pools[0].loop.is_closed() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    out["pool0_dead"] = rt.pools[0].loop.is_closed()
    out["running"] = rt.running

    async def probe(fn: object) -> bool:
        ev = threading.Event()
        try:
            ok = fn(aw.Work(lambda w: ev.set()))  # type: ignore[operator]
        except BaseException as exc:
            out.setdefault("probe_errors", []).append(repr(exc))  # type: ignore[union-attr]
            return False
        return bool(ok) and await wait_for_event(ev)

    out["pool1_serves"] = await probe(lambda w: aw.queue_work_on(1, wq, w))
    out["unbound_serves"] = await probe(lambda w: aw.queue_work(ub, w))
    victim_ran = threading.Event()
    victim = aw.Work(lambda w: victim_ran.set())
    try:
        out["queue_on_dead"] = f"returned {aw.queue_work_on(0, wq, victim)}"
    except BaseException as exc:
        out["queue_on_dead"] = f"raised {type(exc).__name__}: {exc}"
    out["victim_ran"] = await wait_for_event(victim_ran, 1.0)
    out["victim_pending"] = aw.work_pending(victim)
    try:
        unfinished = await asyncio.wait_for(rt.shutdown(timeout=1.0), STEP + 2)
        out["shutdown"] = "ok"
        out["unfinished"] = sorted(f"{wq.name}:{state}" for _, wq, state in unfinished)
    except TimeoutError:
        out["shutdown"] = "hung"
    except BaseException as exc:
        out["shutdown"] = f"raised {type(exc).__name__}: {exc}"
    out["threads_after"] = sorted(
        t.name for t in threading.enumerate() if t.name.startswith(("aiowq/", "aiowq-watchdog"))
    )
    try:
        async with aw.Runtime(cpus=1, loop_factory=loop_kind, shutdown_timeout=1.0):
            pass
        out["new_runtime"] = True
    except BaseException as exc:
        out["new_runtime"] = f"{type(exc).__name__}: {exc}"
    out["reported"] = cap.messages
    return out


if __name__ == "__main__":
    faulthandler.dump_traceback_later(40, exit=True)  # never hang the parent
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = {"error": "did not finish"}
    try:
        result = asyncio.run(main(sys.argv[1], sys.argv[2]))
    except BaseException as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)
