"""Delayed work: arming, firing and disarming loop timers (R8, R9).

A timer is armed with ``loop.call_at(deadline)`` on the loop of the target pool. When it fires it
checks the deadline again and re-arms if the loop woke it early (uvloop rounds timeouts to whole
milliseconds and fires up to 1 ms early; asyncio fires up to its clock resolution early), so an
item is never queued before ``delay`` has passed (R8). The deadline also adds the loop clock's own
resolution, since uvloop's ``loop.time()`` is truncated to the millisecond: measured on the real
clock, ``now + delay`` computed from it could otherwise fall up to 1 ms short.

Cancellation is by generation: disarming bumps ``_tgen``, and a callback that carries an older one
does nothing. On the timer's own loop we also cancel the handle, so it leaves the heap; from another
thread ``TimerHandle.cancel`` is not safe, and the stale callback simply runs once and returns.

Owner: every field is changed under ``_lock.LOCK``; handles are created on the pool's loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ._lock import INTR, LOCK, replay
from ._work import ARMED, DelayedWork

if TYPE_CHECKING:
    from ._pwq import Pwq

__all__ = ("arm", "disarm", "fire_now")

_get_running_loop = asyncio._get_running_loop


def arm(dwork: DelayedWork, pwq: Pwq, delay: float, direct: bool | None = None) -> None:
    """Arm ``dwork`` to be inserted into ``pwq`` after ``delay`` seconds.

    Context: under LOCK, any thread; ``dwork`` has PENDING set and sits nowhere yet.
    """
    pool = pwq.pool.timer_pool()
    loop = pool.loop
    dwork._tloop = loop
    dwork._pwq = pwq
    # loop.time() may trail the real clock by up to the loop's resolution (uvloop: 1 ms), so
    # the deadline carries it too: otherwise "delay after the call" could be up to 1 ms short.
    dwork._deadline = deadline = loop.time() + delay + pool.tres
    gen = dwork._tgen = dwork._tgen + 1
    dwork._state |= ARMED
    pwq.wq._armed[id(dwork)] = dwork
    if direct is None or pool is not pwq.pool:
        direct = pool.direct()
    if direct:
        dwork._timer = loop.call_at(deadline, _fire, dwork, gen)
    else:
        dwork._timer = None
        loop.call_soon_threadsafe(_arm_here, dwork, gen)


def _arm_here(dwork: DelayedWork, gen: int) -> None:
    with LOCK:
        if dwork._tgen == gen and dwork._state & ARMED:
            loop = dwork._tloop
            dwork._timer = loop.call_at(dwork._deadline, _fire, dwork, gen)


def _fire(dwork: DelayedWork, gen: int) -> None:
    with LOCK:
        if dwork._tgen != gen or not dwork._state & ARMED:
            return
        loop = dwork._tloop
        if loop.time() < dwork._deadline:  # woken early: never queue before the deadline (R8)
            dwork._timer = loop.call_at(dwork._deadline, _fire, dwork, gen)
            return
        fire_now(dwork, direct=True)
    if INTR.pending:
        replay()


def disarm(dwork: DelayedWork) -> None:
    """Disarm an armed ``dwork`` (it stays PENDING). Context: under LOCK, any thread."""
    dwork._state &= ~ARMED
    dwork._tgen += 1
    timer = dwork._timer
    dwork._timer = None
    pwq = dwork._pwq
    assert pwq is not None
    del pwq.wq._armed[id(dwork)]
    if timer is not None and _get_running_loop() is dwork._tloop:
        timer.cancel()


def fire_now(dwork: DelayedWork, direct: bool | None = None) -> None:
    """Queue an armed ``dwork`` at once, taking its place now (R6). Context: under LOCK."""
    disarm(dwork)
    pwq = dwork._pwq
    assert pwq is not None
    pwq.insert(dwork, direct if pwq.pool.timer_pool() is pwq.pool else None)
