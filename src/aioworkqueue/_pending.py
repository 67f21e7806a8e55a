"""The pending bit without a lock (Core v2): R1 test-and-set, take and cancel as atomic dict steps.

This is the layer the lock-free core stands on. It keeps one fact per work item that any thread
and any ``signal.signal`` handler may change: *which instance of the item is pending*, if any.
Everything else about an item (where it sits, flush counts, statistics) is owned by the loop of
the pool that runs it and needs no cross-thread step at all.

The shared state is two dicts, changed only by single built-in operations:

* ``pend[work]``: absent when the item is idle (or only running); else the pending instance's
  *token*, a fresh ``object()`` made by the ``queue`` that created the instance. The token is both
  R1's tie-break (of two calls that race, the one whose token ``setdefault`` kept won) and the
  instance's identity (an entry or timer of an older, cancelled instance carries another token).
* ``claims[work]``: present only while a ``take`` or a ``cancel`` of that item is between its
  first and last step; it excludes the other (and other cancels), never ``queue``.

Every entry a producer puts on a pool's inbox is the pair ``(work, token)``; the pool's loop takes
it with :meth:`PendingTable.take`, which answers whether that instance is still the pending one.
An entry whose instance was cancelled is *stale* and is skipped.

Why each step is atomic. ``dict.setdefault``, ``dict.get``, ``dict.pop``, ``dict.__setitem__``
and ``deque.extend`` of a tuple are single C calls on objects whose hash and equality are the
identity's (the core keys them by ``Work`` objects, whose subclasses may not redefine
``__eq__``/``__hash__`` for this reason). On a
GIL build no other bytecode runs during one of them, a signal handler included (handlers run
between bytecodes); on a free-threaded build each takes the container's per-object lock. No step
relies on two of them happening together: each op below has one step that decides it (its
linearization point), and the other steps are arranged so that whatever runs between them sees a
state it can answer from.

The race the throwaway prototype lost, and why it cannot happen here::

    pool loop: take(w, t1)            thread A                    thread B
    ──────────────────────            ────────                    ────────
    entry (w, t1) popped              cancel(w): pend.pop → t1
                                      (True; entry (w, t1) stale)
                                                                  queue(w): pend[w] = t2,
                                                                  entry (w, t2) appended
    pend.pop(w) → t2  ✗ runs instance t2 at t1's place (R5, R6), and later finds
                         entry (w, t2) stale

Here a take first checks ``pend.get(w) is t1`` (so the sequence above, run one op after the
other, finds ``t2 is not t1`` and skips) and holds ``claims[w]`` across check and pop, so no
cancel can slip between them; a queue cannot insert while ``pend[w]`` is present.

A queue has one step that touches shared state, its ``setdefault``: there is no "being queued"
state for anyone to see. (A first version replaced the token by a small counter after winning, to
save the token's 16 bytes; the interleaving test found two answers no order explains: a queue of
thread B that saw the in-between state as pending, then a cancel of B that saw it as idle.)

Signal handlers. A handler runs on the thread it interrupts and cannot wait for that thread. When
it finds ``claims[w]`` held by its own thread, the interrupted code is a take or a cancel of the
same item, stopped between two steps, and the handler answers as if it ran just before or just
after that op:

* interrupted take of an instance (the claim is the pool's :class:`Claimer`, whose ``token`` is
  written before the claim is taken): if ``pend[w]`` is that token the take will succeed, so a
  cancel answers "not pending" (it comes after the take); otherwise the take will skip its entry,
  and the cancel removes whatever instance is pending, without the claim;
* interrupted cancel: the handler removes nothing (so ``pend[w]`` never goes missing under a
  claim, and a foreign queue's token can never be popped by mistake). If an instance is pending it
  reports it ("stolen") and the interrupted cancel, which removes it, reports nothing; so exactly
  one of the two reports each instance.

A ``queue`` never takes a claim, so it is the same code in every context.

What is proved, and what is open. ``tests/test_pending_protocol.py`` runs this code on real
threads under every interleaving of its dict and deque steps within two preemptions, with signal
handlers landing at any step, and checks each history for linearizability against the sequential
model of the pending bit, and that nothing is left pending once every entry is taken. It holds for
any number of threads that queue, cancel and take, over one pool or two, and for handlers that
queue. It does *not* yet hold for a handler that cancels an item its own thread is half-way
through taking or cancelling: the interrupted op's next step is a blind pop, and neither answer
the rules above give is linearizable (the test keeps both counterexamples as strict xfails). Until
that case is solved the core keeps its lock and replay; this layer is not wired into it yet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ("Claimer", "Inbox", "PendingTable")

_get_ident = threading.get_ident


class Inbox(Protocol):
    """A pool's inbox: any container whose ``extend`` of a pair is one atomic step (a deque)."""

    def extend(self, pair: tuple[Any, object], /) -> None: ...


class Claimer:
    """The claim a pool's loop holds while it takes an entry.

    Owner: the pool's loop thread writes both fields; a signal handler on that thread reads them.
    """

    __slots__ = ("tid", "token")

    def __init__(self) -> None:
        self.tid = _get_ident()  # set once: the loop's thread
        self.token: object = None  # the instance being taken; written before the claim is


# The stages of a cancel that holds its claim, published for a handler of its own thread.
_LOOK, _WILL_POP, _NO_POP, _POPPED = range(4)


class _Cancel:
    """A cancel's claim. Owner: the cancelling thread writes it; a handler on that thread (which
    cannot wait for it) reads it and may set ``stolen``."""

    __slots__ = ("stage", "stolen", "tid", "token")

    def __init__(self, tid: int) -> None:
        self.tid = tid  # set once
        self.stage = _LOOK
        self.token: object = None  # what the look found, once stage is _WILL_POP
        # The instance a handler reported as cancelled; this cancel removes it, reports nothing.
        self.stolen: object = None


def _spin() -> None:
    # Another thread holds the item's claim for a few dict steps: let it run them.
    time.sleep(0)


class PendingTable:
    """The pending instances of work items, shared by every thread and pool of the process.

    Context: every method may be called from any thread and from a ``signal.signal`` handler,
    except :meth:`take`, which only a pool's loop thread calls, never from a handler.
    """

    __slots__ = ("_claims", "_pend", "_spin")

    def __init__(
        self,
        pend: dict[Any, Any] | None = None,
        claims: dict[Any, Any] | None = None,
        spin: Callable[[], None] = _spin,
    ) -> None:
        # The tests pass traced dicts and a spin that yields to their scheduler.
        self._pend: dict[Any, Any] = {} if pend is None else pend
        self._claims: dict[Any, Any] = {} if claims is None else claims
        self._spin = spin

    def queue(self, work: object, inbox: Inbox) -> bool:
        """Make a new instance of ``work`` pending and put ``(work, token)`` on ``inbox`` (R1).

        Returns: True if it was not pending (a new instance is queued); False if it was.
        """
        token = object()
        if self._pend.setdefault(work, token) is not token:
            return False
        # A cancel before this append leaves the entry stale, which the take then skips.
        inbox.extend((work, token))
        return True

    def acquire(self, work: object) -> object | None:
        """Make a new instance of ``work`` pending without placing it (a timer will).

        Returns: its token, or None if ``work`` was pending.
        """
        token = object()
        return token if self._pend.setdefault(work, token) is token else None

    def is_pending(self, work: object) -> bool:
        """Returns: True while an instance of ``work`` is pending."""
        return work in self._pend

    def current(self, work: object, token: object) -> bool:
        """Returns: True if the instance ``token`` of ``work`` is still the pending one (for a
        timer that fires: it places the instance only then; a cancel after this leaves the
        entry stale, which the take skips)."""
        return self._pend.get(work) is token

    def take(self, work: object, token: object, claimer: Claimer) -> bool:
        """Start the instance ``token`` of ``work``: clear its pending state (R2).

        Context: the loop thread of the pool whose inbox held ``(work, token)``; never a handler.
        Returns: True if the caller must run the item now; False if the entry is stale (that
        instance was cancelled).
        """
        pend = self._pend
        claims = self._claims
        claimer.token = token  # first: a handler that sees our claim reads it
        while claims.setdefault(work, claimer) is not claimer:
            self._spin()  # another thread's cancel, or another pool's take, of this item
        try:
            if pend.get(work) is not token:
                return False  # cancelled; a later queue may have made another instance pending
            # Only a handler of this thread could change pend[work] now, and it leaves it alone.
            return pend.pop(work, None) is token
        finally:
            del claims[work]

    def cancel(self, work: object) -> object | None:
        """Remove the pending instance of ``work`` (R10).

        Returns: the token of the instance removed (its entry or timer is now stale), or None
        if ``work`` was not pending.
        """
        pend = self._pend
        claims = self._claims
        tid = _get_ident()
        mine = _Cancel(tid)
        while True:
            held = claims.setdefault(work, mine)
            if held is mine:
                break
            if held.tid == tid:  # we interrupted our own thread's take or cancel of this item
                return self._cancel_nested(work, held)
            self._spin()
        try:
            # Under our claim only we remove pend[work] (a handler of ours removes it only once
            # we are past our pop, see _cancel_nested), and no queue can replace it.
            token = pend.get(work)
            if token is not None:
                mine.token = token
                mine.stage = _WILL_POP
                pend.pop(work)
                mine.stage = _POPPED
                return None if mine.stolen is token else token
            mine.stage = _NO_POP
            if mine.stolen is not None:  # reported by a handler after our look: remove it
                pend.pop(work)
            return None
        finally:
            del claims[work]

    def _cancel_nested(self, work: object, held: Claimer | _Cancel) -> object | None:
        # A handler that interrupted its own thread's take or cancel of ``work``, stopped between
        # two steps: answer as if it ran just before or just after the interrupted op.
        pend = self._pend
        token: object = pend.get(work)
        if token is None:
            return None
        if isinstance(held, Claimer):
            if token is held.token:
                return None  # the take will start this very instance: we come after it
            # The take skips its stale entry and never pops: this instance is ours to remove.
            pend.pop(work)
            return token
        stage = held.stage
        if stage == _POPPED or (stage == _WILL_POP and token is not held.token):
            pend.pop(work)  # the cancel is past its pop: a later instance is ours to remove
            return token
        if stage == _NO_POP and held.stolen is None:
            pend.pop(work)  # it looked, found nothing, and will not look again
            return token
        if held.stolen is token:
            return None  # an outer handler already reported this instance
        # It will pop this instance (it looks next, or it looked and found it): report it, and
        # let it remove it.
        held.stolen = token
        return token
