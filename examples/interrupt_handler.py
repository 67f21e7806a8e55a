"""Interrupt context, the kernel way: top halves that only queue work, bottom halves that sleep.

Two "interrupts" defer work to a workqueue, as a driver's handler does with ``schedule_work``:

* ``loop.add_reader`` on a socket: the loop calls the callback synchronously from its select
  step; it drains the socket and queues one work item per key. A burst for the same key while its
  item is still pending coalesces into one run (R1): ``queue_work`` returns False.
* a ``signal.signal`` handler (SIGUSR1): Python runs it between two bytecodes of whatever the main
  thread was doing, possibly in the middle of aioworkqueue's own bookkeeping; ``queue_work`` is
  safe there (it is O(1), never blocks on its own thread's lock, and wakes a sleeping loop).

Neither handler awaits. The work functions are ``async def`` and may sleep (process context).
Run it: ``python examples/interrupt_handler.py`` (POSIX).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from types import FrameType

import aioworkqueue as aw

events = aw.alloc_workqueue("events", max_active=4)
handled: dict[str, int] = {}
stats = {"irq": 0, "queued": 0, "coalesced": 0, "signals": 0}


class KeyWork(aw.Work):
    """The bottom half of one key: handles whatever arrived for it since it was queued."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        super().__init__(bottom_half)
        self.key = key


async def bottom_half(work: KeyWork) -> None:
    await asyncio.sleep(0.01)  # process context: may sleep
    handled[work.key] = handled.get(work.key, 0) + 1


items = {key: KeyWork(key) for key in ("disk", "net", "tty")}
sigwork = KeyWork("signal")


def on_readable(sock: socket.socket) -> None:
    """Top half: called by the loop from its select step; must not block or await."""
    stats["irq"] += 1
    try:
        data = sock.recv(4096)
    except BlockingIOError:
        return
    for key in data.decode().split():
        if aw.queue_work(events, items[key]):
            stats["queued"] += 1
        else:
            stats["coalesced"] += 1  # already pending: it will see this event too (R1)


def on_sigusr1(signum: int, frame: FrameType | None) -> None:
    """A real signal handler: interrupt context in the strictest sense."""
    stats["signals"] += 1
    if aw.queue_work(events, sigwork):
        stats["queued"] += 1
    else:
        stats["coalesced"] += 1


async def main() -> None:
    loop = asyncio.get_running_loop()
    rx, tx = socket.socketpair()
    rx.setblocking(False)
    previous = signal.signal(signal.SIGUSR1, on_sigusr1)
    try:
        async with aw.running(timeout=2.0):  # leaving it flushes what the handlers queued
            loop.add_reader(rx.fileno(), on_readable, rx)
            for burst in range(20):
                tx.send(b"disk net disk tty disk ")
                if burst % 5 == 0:
                    os.kill(os.getpid(), signal.SIGUSR1)
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)  # let the last burst reach the reader
            loop.remove_reader(rx.fileno())
    finally:
        signal.signal(signal.SIGUSR1, previous)
        rx.close()
        tx.close()
    print(
        f"interrupts={stats['irq']} signals={stats['signals']} queued={stats['queued']} "
        f"coalesced={stats['coalesced']}"
    )
    print("bottom halves ran:", ", ".join(f"{k}={n}" for k, n in sorted(handled.items())))
    ran = sum(handled.values())
    print(f"every successful queue_work ran exactly once: {ran == stats['queued']}")


if __name__ == "__main__":
    asyncio.run(main())
