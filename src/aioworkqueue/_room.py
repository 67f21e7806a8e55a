"""Bounded queues (R21): the room a workqueue with ``max_pending`` has left, and who waits for it.

One :class:`Room` per bounded workqueue, shared by all its links (the bound is per workqueue in
total, not per pool). ``nr`` counts the instances that are queued and not started (on a
worklist, waiting for a ``max_active`` slot, or deferred behind their own run) plus the room
granted to a ``queue_work_wait`` that has not queued yet. An armed ``DelayedWork`` is not
counted until its timer fires. An unbounded queue has no Room (``None``), so the only cost of
this module on the hot paths of such a queue is one test of that attribute.

Room that frees while somebody waits is not given back: it is handed to the first waiter
(``nr`` stays), so waiters are served in FIFO order and a producer that does not wait cannot take
it in the window before the waiter runs. Hence, while a waiter waits, ``nr >= limit``. A waiter
cancelled after it was granted room passes it on (:meth:`Room.put`), so no room is lost.

``nr`` may exceed ``limit``: items that were accepted before the bound was reached are never
refused later (a timer that fires, ``flush_delayed_work``, destroy, an interrupt-context replay
that already answered True). Room then frees only when ``nr`` is below ``limit`` again.

Owner: every field is changed under ``_lock.LOCK``. A waiter's future is completed on its own
loop: directly when :meth:`Room.put` runs on that loop, else with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ("Room", "RoomWaiter")

_get_running_loop = asyncio._get_running_loop


def _grant(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class RoomWaiter:
    """One ``queue_work_wait`` waiting for room. Owner: LOCK (``fut``: its own loop)."""

    __slots__ = ("fut", "granted")

    def __init__(self, fut: asyncio.Future[None]) -> None:
        self.fut = fut  # set once
        #: Room was handed to this waiter; it must queue with it or pass it on.
        self.granted = False


class Room:
    """The bound of one workqueue and what counts against it. Owner: LOCK."""

    __slots__ = ("limit", "nr", "waiters")

    def __init__(self, limit: int) -> None:
        self.limit = limit  # max_pending, > 0; set once
        self.nr = 0  # queued and not started, plus room granted to waiters
        self.waiters: deque[RoomWaiter] = deque()  # FIFO

    def __repr__(self) -> str:
        return f"<Room {self.nr}/{self.limit} waiters={len(self.waiters)}>"

    def full(self) -> bool:
        """True when one more item would exceed the bound. Context: under LOCK (or a snapshot)."""
        return self.nr >= self.limit

    def put(self) -> None:
        """One counted instance left (it started, or was taken back), or a grant is returned.

        If that leaves room and somebody waits, the room goes to the first waiter whose loop is
        still open, and ``nr`` stays; else ``nr`` goes down by one.
        Context: under LOCK, any thread, never blocks.
        """
        waiters = self.waiters
        while waiters and self.nr <= self.limit:
            waiter = waiters.popleft()
            fut = waiter.fut
            loop = fut.get_loop()
            if _get_running_loop() is loop:
                waiter.granted = True
                _grant(fut)
                return
            try:
                loop.call_soon_threadsafe(_grant, fut)
            except RuntimeError:  # its loop has closed: nobody is left to use the room
                continue
            waiter.granted = True
            return
        self.nr -= 1
