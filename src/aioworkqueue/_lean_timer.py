"""Core v2: the lean pool's timers (R8), armed from any thread without a lock.

An armed instance of a :class:`DelayedWork` is two things: its token in its link's ``armed``
dict (``_lean.LeanLink``), which is the *claim* to place it, and an entry in this heap, which
says when. Whoever pops the claim (one atomic ``dict.pop``) places the instance, once: the timer
when it fires, a ``flush_delayed_work`` or ``destroy_workqueue`` that fires it at once, the
cancel or disable that won it, a ``mod_delayed_work`` that moved it, or the loop's end that
takes it back. An entry whose claim is gone is garbage: dropped when it reaches the top, or by a
compaction when the heap has doubled since the last one.

Arming, from any thread or a signal handler, is one ``deque.append`` to ``arming``; the heap
and the loop's ``TimerHandle`` are the loop's own (O). From a task of the pool's loop the arm
moves what arrived into the heap at once (``busy``, a lock only ever tried without blocking,
keeps a signal handler that interrupted that move out of the heap: it posts instead). From
anywhere else it posts one ``_kick`` (``kick_armed``, cleared before the kick looks, as the
pool's own kick; a race of two arms can post two, which costs a turn and loses nothing).

Deadlines are on the clock of :func:`_theap.loop_clock`: when the timer fires, only entries
due on that clock are placed, in deadline order (ties: in arming order), and the timer is set
again for the rest: nothing is placed early (R8), however early the loop's timer fires.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from ._theap import loop_clock

__all__ = ("LeanTimers", "peek")

_heappush = heapq.heappush
_heappop = heapq.heappop
_get_ident = threading.get_ident
_current_task = asyncio.current_task
_INF = float("inf")
_COMPACT_MIN = 64  # entries: below this a heap is never compacted


def peek(counter: itertools.count[int]) -> int:
    """The value the next ``next(counter)`` returns, without taking it (``count(N)``)."""
    return int(repr(counter)[6:-1])


class LeanTimers:
    """The armed instances of one lean pool, and the one loop timer set for the earliest.

    Context: :meth:`arm` and :meth:`deadline` from any thread (a signal handler included); the
    rest on the pool's loop.
    """

    __slots__ = (
        "arming",
        "busy",
        "clock",
        "compact_at",
        "dead",
        "dead_seen",
        "handle",
        "heap",
        "kick_armed",
        "loop",
        "ms",
        "place",
        "seq",
        "tid",
        "when",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, place: Callable[[list[Any], Any], None]
    ) -> None:
        self.loop = loop  # I
        self.tid = _get_ident()  # I: made on its loop's thread
        self.clock, self.ms = loop_clock(loop)  # I
        # I: place(token, link), on the loop, for an entry that is due: it pops the claim.
        self.place = place
        self.arming: deque[tuple[float, int, list[Any], Any]] = deque()  # A
        self.seq = itertools.count()  # A: the arming order, for ties (and no token compares)
        self.kick_armed = False  # A: a call_soon_threadsafe(_kick) is on its way
        self.busy = threading.Lock()  # O: held while the heap changes; only tried, never waited
        self.heap: list[tuple[float, int, list[Any], Any]] = []  # O
        self.compact_at = _COMPACT_MIN  # O: the heap's size at which to look at compacting
        self.dead = itertools.count()  # A: claims taken from entries, whoever took them
        self.dead_seen = 0  # O: dead at the last compaction (an estimate: see garbage())
        self.handle: asyncio.TimerHandle | None = None  # O: the loop timer
        self.when = _INF  # O: the deadline it is set for

    def __repr__(self) -> str:
        return f"<LeanTimers entries={len(self.heap)} arming={len(self.arming)}>"

    def deadline(self, delay: float) -> float:
        """Returns: the deadline ``delay`` seconds from now (never early on the loop's clock).

        Context: any."""
        t = self.clock() + delay
        if self.ms:
            t = math.ceil(t * 1000.0) / 1000.0
        return t

    def arm(self, when: float, tok: list[Any], link: Any) -> None:
        """Have ``place(tok, link)`` called on the loop once ``when`` has come.

        Context: any thread, a signal handler included; the claim is in ``link.armed`` already.
        Raises: RuntimeError if the loop has closed (the caller takes its claim back).
        """
        e = (when, next(self.seq), tok, link)
        # A task of the loop: the loop is awake, and nothing of ours is half done unless a
        # handler interrupted it (then busy is held, and the handler posts below).
        if (
            _get_ident() == self.tid
            and _current_task(self.loop) is not None
            and self.busy.acquire(False)
        ):
            try:
                heap = self.heap
                _heappush(heap, e)
                if self.arming:
                    self._absorb()
                if when < self.when:
                    self._set(heap[0][0])
                if len(heap) > self.compact_at:
                    self._compact()
            finally:
                self.busy.release()
            return
        self.arming.append(e)
        if not self.kick_armed:
            self.kick_armed = True
            self.loop.call_soon_threadsafe(self._kick)

    # -- the loop ---------------------------------------------------------------------------

    def _kick(self) -> None:
        self.kick_armed = False  # first, then look: an arm after this posts another
        if self.busy.acquire(False):
            try:
                self._absorb()
            finally:
                self.busy.release()
        else:  # pragma: no cover - a callback never runs inside a held section
            self.loop.call_soon(self._kick)

    def _absorb(self) -> None:
        # Context: the loop, busy held.
        arming, heap = self.arming, self.heap
        while arming:
            _heappush(heap, arming.popleft())
        if heap:
            t = heap[0][0]
            if t < self.when:
                self._set(t)
            if len(heap) > self.compact_at:
                self._compact()

    def garbage(self) -> None:
        """An entry's claim was taken by someone other than its timer (a cancel, a move, a fire
        at once): one more garbage entry, counted so that a compaction only runs when garbage
        is over half of the heap. Context: any thread (one atomic ``next``)."""
        next(self.dead)

    def _set(self, when: float) -> None:
        handle = self.handle
        if handle is not None:
            handle.cancel()
        self.when = when
        self.handle = self.loop.call_at(when, self._expire)

    def _compact(self) -> None:
        # Only when garbage is over half: else, next look when the heap has grown by half.
        heap = self.heap
        dead = peek(self.dead)
        if (dead - self.dead_seen) * 2 > len(heap):
            heap[:] = [e for e in heap if e[3].armed.get(id(e[2])) is e[2]]
            heapq.heapify(heap)
            self.dead_seen = dead
        self.compact_at = max(_COMPACT_MIN, len(heap) + (len(heap) >> 1))

    def _expire(self) -> None:
        """The loop timer fired: place every entry that is due, then set it for the next."""
        self.handle = None
        self.when = _INF
        if not self.busy.acquire(False):  # pragma: no cover - as in _kick
            self.loop.call_soon(self._expire)
            return
        try:
            arming, heap = self.arming, self.heap
            while arming:
                _heappush(heap, arming.popleft())
            now = self.clock()
            place = self.place
            while heap:
                e = heap[0]
                if now < e[0]:  # not due yet (or the loop woke early): never early (R8)
                    self._set(e[0])
                    break
                _heappop(heap)
                place(e[2], e[3])
        finally:
            self.busy.release()

    def close(self) -> None:
        """The loop is ending: forget every entry (their claims are taken back by the pool).

        Context: the loop's thread."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.when = _INF
        self.heap.clear()
        self.arming.clear()

    def size(self) -> int:
        """Entries in the heap and on their way to it, garbage included. Context: any."""
        return len(self.heap) + len(self.arming)
