"""Soak the signal-handler path: R4 per item while a thread sends SIGUSR2 every 0.5 ms.

The scenario of ``tests/test_threads.py::test_queue_from_signal_handler_at_random_moments_of_a_
busy_loop``, repeated and counted per item (which item ran more or fewer times than its
successful queues, and whether it was queued by the handler or by the loop). That test failed
once (ran == successful queues + 2) in about 25 runs of the whole suite with four suites at once
on two cores. The cause was its count, not the library: Python signal handlers nest (a signal
that lands while the handler runs is handled inside it, e.g. inside queue_work), and the test
counted with ``n += queue_work(...)``, which drops the inner handler's increments. This script
appends each answer (nesting-safe), so it never saw that. Run it under load, on both loops:

    python tools/sigsoak.py 500
    python tools/sigsoak.py 500 uvloop hooks timing

Prints one line per round with a mismatch, then ``done N``; exit status 1 if any round had one.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
import threading
from typing import Any

import aioworkqueue as aw


async def one_round() -> list[tuple[str, int, int]]:
    runs: collections.Counter[int] = collections.Counter()
    ok: collections.Counter[int] = collections.Counter()

    def fn(w: aw.Work) -> None:
        runs[id(w)] += 1

    sig_items = [aw.Work(fn) for _ in range(8)]
    results: list[tuple[int, bool]] = []

    def handler(signum: int, frame: Any) -> None:
        for it in sig_items:
            results.append((id(it), aw.queue_work(wq, it)))

    busy = [aw.Work(fn) for _ in range(64)]
    async with aw.alloc_workqueue("sigsoak", 0, 8) as wq:
        old = signal.signal(signal.SIGUSR2, handler)
        stop = threading.Event()

        def shooter() -> None:
            while not stop.is_set():
                os.kill(os.getpid(), signal.SIGUSR2)
                stop.wait(0.0005)

        th = threading.Thread(target=shooter)
        th.start()
        try:
            for _ in range(300):
                for it in busy:
                    if aw.queue_work(wq, it):
                        ok[id(it)] += 1
                await asyncio.sleep(0)
        finally:
            stop.set()
            th.join()
            signal.signal(signal.SIGUSR2, old)
        await wq.flush()
        await wq.flush()
    for key, queued in results:
        ok[key] += queued
    sig_ids = {id(s) for s in sig_items}
    return [
        ("handler" if key in sig_ids else "loop", runs[key], ok[key])
        for key in set(runs) | set(ok)
        if runs[key] != ok[key]
    ]


class _Quiet:
    def workqueue_queue_work(self, *args: Any) -> None:
        pass


async def main(rounds: int, flags: list[str]) -> int:
    if "hooks" in flags:
        aw.add_instrument(_Quiet())
    if "timing" in flags:
        aw.enable_timing()
    failed = 0
    for r in range(rounds):
        bad = await one_round()
        if bad:
            failed += 1
            print(f"round {r}: (queued by, runs, successful queues) {bad}", flush=True)
    print(f"done {rounds}")
    return 1 if failed else 0


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    flags = sys.argv[2:]
    if "uvloop" in flags:
        import uvloop

        sys.exit(uvloop.run(main(n, flags)))
    sys.exit(asyncio.run(main(n, flags)))
