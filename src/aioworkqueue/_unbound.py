"""The shared queue of ``WQ.UNBOUND`` workqueues in a Runtime.

An unbound workqueue has one queue link for the whole runtime, so ``max_active`` counts in total
(R7) and an ordered queue is strictly FIFO across pools (R6). Its active items wait on two deques
shared by every pool (``hi`` first); each pool's workers serve them after their own lists, so any
idle pool picks them up. Nobody polls: queueing wakes one pool that has an idle worker and no
wake-up already on its way, going round the pools.

Owner (tags as in docs/design.md §1): the deques and ``rr`` are L (changed under ``_lock.LOCK``);
each attribute says which.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._pool import Pool
    from ._pwq import Pwq
    from ._work import Work

__all__ = ("UnboundPool",)

_get_ident = threading.get_ident


class UnboundPool:
    """What an unbound queue link sees as its pool: the shared lists of a runtime's pools."""

    __slots__ = ("bh", "cpu", "hi", "pools", "pwqs", "rr", "tids", "worklist")

    def __init__(self, tids: dict[int, int]) -> None:
        self.worklist: deque[Work] = deque()  # L
        self.hi: deque[Work] = deque()  # L
        self.bh: deque[Work] = deque()  # I: never used, WQ.BH queues cannot be unbound
        self.pools: list[Pool] = []  # L, set once: when the runtime has started them all
        self.pwqs: weakref.WeakSet[Pwq] = weakref.WeakSet()  # L
        self.cpu = -1  # I
        self.rr = 0  # L
        self.tids = tids  # I: the runtime's thread ident -> cpu map (shared; its owner: L)

    def __repr__(self) -> str:
        return f"<UnboundPool pools={len(self.pools)} waiting={len(self.worklist)}>"

    def shared(self) -> tuple[deque[Work], deque[Work]]:
        """The (hi, worklist) pair that every pool serves."""
        return self.hi, self.worklist

    def timer_pool(self) -> Pool:
        """The pool whose loop arms a timer: the caller's own pool, else the next in turn."""
        own = self.tids.get(_get_ident())
        if own is not None:
            return self.pools[own]
        pools = self.pools
        for _ in range(len(pools)):
            self.rr = (self.rr + 1) % len(pools)
            if not pools[self.rr].dead:
                break
        return pools[self.rr]  # all dead: the timer never fires; shutdown reports it "armed"

    def wake(self, direct: bool | None = None) -> None:
        """Make sure some pool will look at the shared lists. Context: under LOCK, any thread."""
        pools = self.pools
        n = len(pools)
        start = self.rr
        best = None
        rank = 3
        for i in range(n):
            pool = pools[(start + i) % n]
            if pool.nr_waking or pool.dying:  # dying: its loop is ending, or has (dead)
                continue
            # A pool whose workers are all parked (or that has none yet) is surely turning; one
            # with a parked worker and a busy one may be stuck in that busy item; one with none
            # parked, still more likely.
            r = 0 if len(pool.idle) == pool.nr_workers else 1 if pool.idle else 2
            if r < rank:
                best, rank = pool, r
                if not r:
                    break
        if best is not None:
            self.rr = (pools.index(best) + 1) % n
            best.wake(direct if best.tid == _get_ident() else False)

    def arm_bh(self, direct: bool | None = None) -> None:  # pragma: no cover - never BH
        raise AssertionError("WQ.BH queues cannot be unbound")
