"""Anatomy of the hot paths: how many bytecodes each operation executes, and on which lines.

A profile that does not depend on the machine: every Python frame is traced at the opcode level
(``sys.settrace`` with ``f_trace_opcodes``) while one kind of operation runs N times, and the
opcodes are counted per source line. The count is exact and the same on every run of the same
build (C code, such as a lock's ``acquire`` or ``deque.append``, counts as the one opcode that
calls it, so the count is a floor of the cost, not the cost). Next to the library: the floors of
``aioworkqueue bench`` (``_tools/bench/_floor.py``) and the stdlib loop's own ``call_later`` /
``TimerHandle.cancel`` (pure Python there; uvloop's are C and cannot be counted).

Usage::

    python benchmarks/anatomy.py             # opcodes per operation
    python benchmarks/anatomy.py --lines 12  # and the 12 busiest lines of each

See benchmarks/README.md ("Where the time goes") for what the counts say.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import linecache
import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import aioworkqueue as aw
from aioworkqueue import _state
from aioworkqueue._tools.bench._floor import LeanItem, LeanQueue, LeanTimer, LeanTimers

N = 200
Key = tuple[str, int, str]  # file, line, function


class Counter:
    """Counts the opcodes of every traced frame, per (file, line, function)."""

    def __init__(self) -> None:
        self.by_line: collections.Counter[Key] = collections.Counter()

    def _local(self, frame: FrameType, event: str, _arg: Any) -> Any:
        if event == "opcode":
            code = frame.f_code
            # f_lineno is None on the opcodes of no line (a generator's setup)
            self.by_line[(code.co_filename, frame.f_lineno or 0, code.co_name)] += 1
        return self._local

    def _global(self, frame: FrameType, _event: str, _arg: Any) -> Any:
        frame.f_trace_opcodes = True
        return self._local

    def start(self) -> None:
        sys.settrace(self._global)

    def stop(self) -> None:
        sys.settrace(None)

    def total(self) -> int:
        return sum(self.by_line.values())


async def _count(op: Callable[[], Awaitable[None]]) -> Counter:
    c = Counter()
    c.start()
    try:
        await op()
    finally:
        c.stop()
    return c


def _noop(_w: object = None) -> None:
    pass


async def _plain(_w: object = None) -> None:
    pass


async def measure() -> dict[str, Counter]:
    """Count every operation; return name -> counter (opcodes of N operations)."""
    loop = asyncio.get_running_loop()
    out: dict[str, Counter] = {}
    wq = aw.alloc_workqueue("anatomy")
    items = [aw.Work(_plain) for _ in range(N)]
    aw.queue_work(wq, aw.Work(_noop))  # bind the queue, start a worker
    await aw.flush_workqueue(wq)

    async def queue_all() -> None:
        for w in items:
            aw.queue_work(wq, w)

    async def flush() -> None:
        await aw.flush_workqueue(wq)

    # Each item has run once before it is counted: the steady state of reused items (Core v2's
    # first queue of an item takes the pending table's slower first-queue path).
    await queue_all()
    await flush()
    # CPython 3.12.1 counts nothing in the first traced stretch of a process: warm the tracer up.
    await _count(flush)
    out["queue_work, same loop"] = await _count(queue_all)
    out["worker, per plain async item (after flush_workqueue)"] = await _count(flush)

    # What a thread with no loop runs: the same calls with no running loop. Not from a real
    # thread: opcode tracing in a second thread crashes CPython 3.12.1 (segfault), and the
    # count is the same (the path depends only on _get_running_loop() being None).
    remote = Counter()
    asyncio._set_running_loop(None)
    remote.start()
    try:
        for w in items:
            aw.queue_work(wq, w)
    finally:
        remote.stop()
        asyncio._set_running_loop(loop)
    await aw.flush_workqueue(wq)
    out["queue_work, from a thread with no loop"] = remote

    dws = [aw.DelayedWork(_noop) for _ in range(N)]

    async def arm() -> None:
        for d in dws:
            aw.queue_delayed_work(wq, d, 10.0)

    async def cancel() -> None:
        for d in dws:
            aw.cancel_delayed_work(d)

    out["queue_delayed_work"] = await _count(arm)
    out["cancel_delayed_work"] = await _count(cancel)
    await aw.destroy_workqueue(wq)

    lq = LeanQueue(4, locked=True)
    await lq.start()
    litems = [LeanItem(_plain) for _ in range(N)]

    async def lqueue() -> None:
        for w in litems:
            lq.queue(w)

    out["floor: queue"] = await _count(lqueue)
    out["floor: worker, per plain async item"] = await _count(lq.flush)
    await lq.close()
    lt = LeanTimers()
    lts = [LeanTimer() for _ in range(N)]

    async def larm() -> None:
        for t in lts:
            lt.arm(t, 10.0)

    async def lcancel() -> None:
        for t in lts:
            lt.cancel(t)

    out["floor: arm"] = await _count(larm)
    out["floor: cancel"] = await _count(lcancel)

    handles: list[asyncio.TimerHandle] = []

    async def call_later() -> None:
        for _ in range(N):
            handles.append(loop.call_later(10.0, _noop))

    async def th_cancel() -> None:
        for h in handles:
            h.cancel()

    if type(loop).__module__.startswith("asyncio"):
        out["asyncio loop.call_later"] = await _count(call_later)
        out["asyncio TimerHandle.cancel"] = await _count(th_cancel)
    return out


_OWN = ("_count", "queue_all", "flush", "measure", "arm", "cancel", "lqueue", "larm")
_OWN += ("lcancel", "call_later", "th_cancel")


def _own_frame(key: Key) -> bool:
    """The measuring loops of this script (their lines are not part of the operation)."""
    return key[0] == __file__ and key[2] in _OWN


def report(out: dict[str, Counter], lines: int) -> None:
    # Debug mode adds the state machine's checks (aioworkqueue._state): say which was measured.
    debug = "on" if _state.DEBUG else "off"
    print(
        f"Opcodes executed per operation (Python {sys.version.split()[0]}, {N} operations each, "
        f"debug mode {debug})"
    )
    for name, c in out.items():
        mine = {k: v for k, v in c.by_line.items() if not _own_frame(k)}
        total = sum(mine.values())
        print(f"  {name:<55} {total / N:8.1f}")
        if lines:
            for (path, lineno, fn), n in sorted(mine.items(), key=lambda kv: -kv[1])[:lines]:
                text = linecache.getline(path, lineno).strip()
                short = path.rsplit("/", 1)[-1]
                print(f"      {n / N:6.1f}  {short}:{lineno} {fn}: {text[:70]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=0, help="show the N busiest lines of each")
    args = parser.parse_args()
    report(asyncio.run(measure()), args.lines)


if __name__ == "__main__":
    main()
