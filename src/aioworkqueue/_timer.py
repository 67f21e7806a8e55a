"""Delayed work: arming, firing and disarming timers (R8, R9), one timer heap per pool.

Each pool keeps its armed items in its ``TimerHeap`` (``_theap.py``: a binary heap of ``(deadline,
gen, dwork)`` entries) and holds one loop ``TimerHandle``, for the earliest deadline. Arming is a
``heappush``; the loop timer is touched only when the new deadline is earlier than the one it is
set for. Disarming (cancel, a re-arm, firing at once) only invalidates the entry: ``gen`` is unique
over all arms, and an entry whose ``gen`` is no longer the item's ``_tgen`` is garbage, dropped
when it reaches the top or when garbage exceeds half of the heap (compaction). So neither arming
nor disarming has to be on the pool's loop, and a cancel is a few stores.

Deadlines are on the pool's clock ``TimerHeap.clock``: ``time.monotonic()`` for asyncio's loops
(their ``loop.time()`` is that) and for uvloop (whose ``loop.time()`` is the same clock truncated
to whole milliseconds); ``loop.time()`` for other asyncio loops (a virtual clock). On a loop whose
own clock is truncated (``TimerHeap.ms``) a deadline is rounded up to the next whole millisecond:
then the item waits ``delay`` both on the real clock and on the loop's, and the loop's millisecond
timer can be set for it exactly. When the loop timer fires, every entry that is due on the real
clock is queued, in deadline order (ties: in arming order); if the timer fired early (uvloop may;
asyncio by up to its clock resolution), nothing is queued early (R8) and it is set again for the
remainder.

Arming from anywhere but a task of the pool's loop, when the deadline is the new earliest, asks the
loop to re-set its timer with one ``call_soon_threadsafe`` (coalesced by ``TimerHeap.kick``):
``TimerHandle`` is not thread-safe, and a plain ``call_at`` from a signal handler would not wake a
loop asleep in ``select()`` (design §5).

Owner: the heap and every field are changed under ``_lock.LOCK``; the loop ``TimerHandle``
(``TimerHeap.handle``, ``TimerHeap.when``) is only touched on the pool's loop thread.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING

from . import _state
from ._lock import INTR, LOCK, replay
from ._work import DelayedWork

if TYPE_CHECKING:
    from ._pool import Pool
    from ._pwq import Pwq

__all__ = ("arm", "disarm", "fire_now", "next_gen", "retime")

#: Arm generations, unique over all items and pools (0 is never issued: "not armed").
next_gen = itertools.count(1).__next__
_heappush = heapq.heappush
_heappop = heapq.heappop
_INF = float("inf")


def arm(dwork: DelayedWork, pwq: Pwq, delay: float, direct: bool | None = None) -> None:
    """Arm ``dwork`` to be inserted into ``pwq`` after ``delay`` seconds.

    Context: under LOCK, any thread; ``dwork`` has PENDING set and sits nowhere yet.
    """
    pool = pwq.pool.timer_pool()
    dwork._tpool = pool
    dwork._pwq = pwq
    timers = pool.timers
    t = dwork._deadline = timers.deadline(delay)
    gen = dwork._tgen = next_gen()
    _state.arm(dwork)
    pwq.wq._armed[id(dwork)] = dwork
    _heappush(timers.heap, (t, gen, dwork))
    if t < timers.when:
        if direct is None or pool is not pwq.pool:
            direct = pool.direct()
        retime(pool, t, direct)


def retime(pool: Pool, when: float, direct: bool) -> None:
    """A deadline ``when`` earlier than the loop timer's was pushed: have the timer set for it.

    Context: under LOCK, any thread; ``direct``: the caller runs in a task of the pool's loop.
    """
    if direct:
        _set(pool, when)
    elif not pool.timers.kick:
        pool.timers.kick = True
        try:
            pool.loop.call_soon_threadsafe(_retime, pool)
        except RuntimeError:
            if not (pool.dying or pool.dead):
                raise
            # Its loop has closed: the entry stays armed and is reported with the pool's items.


def _set(pool: Pool, when: float) -> None:
    # Context: under LOCK, on the pool's loop thread.
    timers = pool.timers
    handle = timers.handle
    if handle is not None:
        handle.cancel()
    timers.when = when
    timers.handle = pool.loop.call_at(when, _expire, pool)


def _retime(pool: Pool) -> None:
    """Set the loop timer for the earliest live deadline. Context: the pool's loop thread."""
    with LOCK:
        timers = pool.timers
        timers.kick = False  # first, then look: an arm after this sends another (design §6)
        heap = timers.heap
        while heap:
            t, gen, dwork = heap[0]
            if dwork._tgen == gen:
                if t < timers.when:
                    _set(pool, t)
                break
            _heappop(heap)
            timers.dead -= 1
    if INTR.pending:
        replay()


def _expire(pool: Pool) -> None:
    """The loop timer fired: queue every item that is due, then set it for the next one."""
    with LOCK:
        timers = pool.timers
        timers.handle = None
        timers.when = _INF
        heap = timers.heap
        now = timers.clock()
        while heap:
            t, gen, dwork = heap[0]
            if dwork._tgen != gen:  # cancelled or re-armed: garbage
                _heappop(heap)
                timers.dead -= 1
            elif now < t:  # not due yet (or the loop woke early): never queue early (R8)
                _set(pool, t)
                break
            else:
                _heappop(heap)
                _state.disarm(dwork)  # it fired (R8): queued now
                dwork._tgen = 0
                pwq = dwork._pwq
                assert pwq is not None
                del pwq.wq._armed[id(dwork)]
                pwq.insert(dwork, True if pwq.pool is pool else None)
    if INTR.pending:
        replay()


def disarm(dwork: DelayedWork) -> None:
    """Disarm an armed ``dwork`` (it stays PENDING). Context: under LOCK, any thread."""
    _state.disarm(dwork)
    dwork._tgen = 0  # its heap entry is garbage now
    pwq = dwork._pwq
    assert pwq is not None
    del pwq.wq._armed[id(dwork)]
    pool = dwork._tpool
    assert pool is not None
    pool.timers.garbage()


def fire_now(dwork: DelayedWork, direct: bool | None = None) -> None:
    """Queue an armed ``dwork`` at once, taking its place now (R6). Context: under LOCK."""
    disarm(dwork)
    pwq = dwork._pwq
    assert pwq is not None
    pwq.insert(dwork, direct if pwq.pool is dwork._tpool else None)
