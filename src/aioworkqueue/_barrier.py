"""Flush barriers: what ``flush_workqueue`` and ``flush_work`` wait on.

``flush_workqueue`` must wait for everything queued before it and nothing queued after (R13),
even while producers keep queueing. The kernel does it with flush colours; we use epochs: every
queued instance takes the workqueue's current epoch, a flush closes the current epoch and waits
until no instance of a closed epoch up to its own is in flight. Items are counted, never listed,
so queueing costs one increment.

``flush_work`` waits for one item's instance (R12). Waiters are kept per item, in a side table
that only exists while somebody waits, so a Work needs no field for it: the ``WAITED`` bit says
"look in the table". A waiter waits either for the *pending* instance (it becomes a *running*
waiter when that instance starts) or for the *running* instance (woken when it ends).

Owner: everything here is touched under ``_lock.LOCK``. Futures are woken on their own loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from . import _state
from ._work import RUNNING

if TYPE_CHECKING:
    from ._work import Work

__all__ = ("WAIT_PENDING", "WAIT_RUNNING", "Epochs", "add_waiter", "new_waiter", "wake")

_get_running_loop = asyncio._get_running_loop


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def wake(fut: asyncio.Future[None]) -> None:
    """Complete ``fut`` from any thread. Context: any; never blocks."""
    loop = fut.get_loop()
    if _get_running_loop() is loop:
        _set_done(fut)
    else:
        try:
            loop.call_soon_threadsafe(_set_done, fut)
        except RuntimeError:  # its loop is closed: nobody is left to wake
            pass


def new_waiter() -> asyncio.Future[None]:
    """Return a future on the running loop. Context: a coroutine."""
    return asyncio.get_running_loop().create_future()


class Epochs:
    """Flush epochs of one workqueue. Owner: ``LOCK``."""

    __slots__ = ("cur", "flushers", "nr_cur", "old")

    def __init__(self) -> None:
        #: L: epoch given to instances queued now.
        self.cur = 0
        #: L: instances of epoch ``cur`` in flight (queued, waiting or running).
        self.nr_cur = 0
        #: L: closed epochs that still have instances in flight: epoch → count.
        self.old: dict[int, int] = {}
        #: L: flushes waiting, oldest first: (last epoch they wait for, future).
        self.flushers: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def total(self) -> int:
        """All instances in flight (what drain waits to reach 0). Derived, not kept: the hot
        paths would pay an update per queue and per end for a number only barriers read."""
        return self.nr_cur + sum(self.old.values())

    def done(self, epoch: int) -> None:
        """An instance of ``epoch`` ended (ran or was cancelled)."""
        if epoch == self.cur:
            self.nr_cur -= 1
            return
        old = self.old
        n = old[epoch] - 1
        if n:
            old[epoch] = n
        else:
            del old[epoch]
            self._complete()

    def start_flush(self) -> asyncio.Future[None] | None:
        """Close the current epoch and return a future for its end, or None if nothing is due."""
        if self.nr_cur:
            last = self.cur
            self.old[last] = self.nr_cur
            self.nr_cur = 0
            self.cur = last + 1
        elif self.old:
            last = self.cur - 1
        else:
            return None
        fut = new_waiter()
        self.flushers.append((last, fut))
        return fut

    def _complete(self) -> None:
        old = self.old
        oldest = min(old) if old else self.cur
        flushers = self.flushers
        while flushers and flushers[0][0] < oldest:
            wake(flushers.popleft()[1])


WAIT_PENDING = 0  # waits for the pending instance to start, then to end
WAIT_RUNNING = 1  # waits for the running instance to end

# id(work) → [(mode, future)]: only items somebody waits on are here (bit WAITED).
_WAITERS: dict[int, list[list[object]]] = {}


def add_waiter(work: Work, mode: int) -> asyncio.Future[None]:
    """Register a waiter on ``work``'s pending or running instance. Context: under LOCK."""
    fut = new_waiter()
    _WAITERS.setdefault(id(work), []).append([mode, fut])
    _state.mark_waited(work)
    return fut


def on_start(work: Work) -> None:
    """The pending instance of ``work`` starts: its waiters now wait for the run to end."""
    for waiter in _WAITERS.get(id(work), ()):
        waiter[0] = WAIT_RUNNING


def _wake_mode(work: Work, mode: int) -> None:
    waiters = _WAITERS.get(id(work))
    if waiters is None:
        _state.clear_waited(work)
        return
    keep = []
    for waiter in waiters:
        if waiter[0] == mode:
            wake(waiter[1])  # type: ignore[arg-type]
        else:
            keep.append(waiter)
    if keep:
        _WAITERS[id(work)] = keep
    else:
        del _WAITERS[id(work)]
        _state.clear_waited(work)


def on_end(work: Work) -> None:
    """The running instance of ``work`` ended: wake who waited for it."""
    _wake_mode(work, WAIT_RUNNING)


def on_unqueue(work: Work) -> None:
    """The pending instance of ``work`` was cancelled or re-armed: its flushers are done, unless
    the instance that was running at their call still runs; then they wait for that (R12)."""
    if work._state & RUNNING:
        on_start(work)
    else:
        _wake_mode(work, WAIT_PENDING)
