"""The pending bit without a lock (Core v2): every decision one ``list.append``.

This is the layer the lock-free core stands on. It keeps one fact per work item that any thread
and any ``signal.signal`` handler may change: *which instance of the item is pending*, if any.
Everything else about an item (where it sits, flush counts, statistics) is owned by the loop of
the pool that runs it and needs no cross-thread step at all.

The shape. Every instance of an item (each successful queue makes one) has a *token*, a fresh
list ``[work]`` made by the queue that creates it; the token is also the instance's entry on the
pool's inbox. A token only grows (appends), except that its slot 0 is cleared once the instance
is decided, so that no token keeps a work item in a reference cycle. The instances of one item
form a chain:

* slot 1 is the instance's *fate*: absent (``len(token) == 1``) while it is pending, then a
  marker (:class:`_Mark`). The take that starts it appends ``_RUN``, a cancel appends a marker of
  its own; whichever append came first is slot 1 and decided it;
* the first list after slot 1 is the next instance's token. A queue appends its new token only
  after it saw slot 1 filled, and the first such append wins;
* ``work._tok`` is a *hint*: some token of the chain, usually the newest. It may be stored with
  any token of the chain, in any order, because readers walk forward.

So a token with one slot is the newest (a successor is appended only after a fate), and the item
is pending exactly when its newest token has one slot. A list is an append-only log of
proposals here: ``append`` is atomic, so appending and then reading slot 1 (or the first list
after it) is a consensus. Every proposer learns the same winner, the one whose append came
first. Every op decides in one step, its ``append``. The other steps are reads of slots that
never change once written, and stores of the hint, and the hint can be wrong without harm. So no
op waits for another. A handler that interrupts its own thread's op half-way through finds a
state it can answer from: nothing is "being taken" or "being cancelled", there are only decided
and undecided tokens. The claim-based protocol that this replaces needed a claim per take, and a
handler could not wait for its own thread's claim: that left two races no answer was
linearizable for (docs/design.md §9). Appends are made only by an op that saw the slot it competes
for still open (a cancel of an item that is not pending appends nothing), so a token grows by at
most one slot per racing op.

The first instance of an item. A fresh item has no chain yet (``work._tok is None``), and a
slot has no insert-if-absent. So the first queue decides in ``_fresh``, a dict shared by
the process: ``_fresh.setdefault(work, token)``. The winner stores its token as the hint and
removes the entry again, so the dict holds an item only while its first queue is half done. An
entry is trusted only while ``work._tok`` is still None, re-read *after* the entry was read.
Only the root's maker turns the hint from None (a queue that walked from an entry, the hint
still None, links its instance but stores no hint); once stored it stays stored, and the entry
is removed only after it is. So an entry read while the hint is None is the root, and one read
later is a leftover (a queue that lost the race and inserted after the removal), which its
inserter removes again. (A first version let every queue store the hint: the root's maker,
re-reading it, took its own root for a leftover, and the interleaving test caught it.)

Why each step is atomic. ``list.append``, a list's ``len``, an index load or store,
``dict.setdefault``/``get``/``pop``, a slot's load and store and ``deque.append`` are each one C
call. ``_fresh`` is keyed by ``Work`` objects, which hash and compare by identity (their
subclasses may not redefine ``__eq__``/``__hash__``), so no Python code runs inside a step. On a
GIL build no other bytecode runs during one, a signal handler included (handlers run between
bytecodes). On a free-threaded build each list, dict and deque operation holds the object's
per-object lock, and a slot store is one atomic pointer store. No op relies on two steps
happening together.

Memory. A pending instance costs its token, ``[work]`` (64 bytes on CPython 3.11), and one deque
slot. A decided token grows to four slots (88 bytes) and lives until the hint has moved past it and
its entry is taken.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ("Hinted", "Inbox", "PendingTable")


class _Mark:
    """A fate: ``_RUN``, or a cancel's own marker (so a cancel can tell its win from another's)."""

    __slots__ = ()


_RUN = _Mark()  # the fate a take appends


class Inbox(Protocol):
    """A pool's inbox: any container whose ``append`` is one atomic step (a deque)."""

    def append(self, token: list[Any], /) -> None: ...


class Hinted(Protocol):
    """A work item as the table sees one: a ``_tok`` slot, None until its first queue."""

    _tok: Any


def _next(t: list[Any]) -> list[Any] | None:
    """Returns: the token after ``t`` (the first list after its fate), or None if it has none.
    A None is true at the moment ``len(t)`` was last read: slots never change once appended."""
    i = 2
    while i < len(t):
        x = t[i]
        if type(x) is not _Mark:
            return x  # type: ignore[no-any-return]
        i += 1
    return None


class PendingTable:
    """The pending instances of work items, shared by every thread and pool of the process.

    Context: every method may be called from any thread and from a ``signal.signal`` handler,
    including one that interrupts another method of the table on its own thread, except
    :meth:`take`, which only the loop of the pool whose inbox held the token calls.
    """

    __slots__ = ("_fresh", "_token")

    def __init__(
        self,
        fresh: dict[Any, Any] | None = None,
        token: Callable[[Any], list[Any]] = lambda work: [work],
    ) -> None:
        # The tests pass a traced dict and a factory of traced tokens.
        self._fresh: dict[Any, Any] = {} if fresh is None else fresh
        self._token = token

    # -- the chain --------------------------------------------------------------------------

    def _root(self, work: Hinted) -> Any:
        """A token of ``work``'s chain to walk from, or None if it was never queued."""
        t = work._tok
        if t is None:
            t = self._fresh.get(work)
            if work._tok is not None:  # the root's hint was stored meanwhile: start there
                t = work._tok
        return t

    def _make(self, work: Hinted) -> Any:
        """Make a new pending instance of ``work``. Returns: its token, or None if an instance
        was pending (R1)."""
        n = self._token(work)
        t = work._tok
        hint = True
        if t is None:
            fresh = self._fresh
            t = fresh.setdefault(work, n)
            if work._tok is None:
                if t is n:  # the first instance ever: ours
                    work._tok = n
                    fresh.pop(work, None)  # safe: the hint is stored, nobody trusts it now
                    return n
                # Another queue's first instance, not yet hinted. Walk from it, and leave the
                # hint to that queue: only the root's maker turns it from None (see above).
                hint = False
            else:
                if t is n:
                    fresh.pop(work, None)  # a leftover of ours (see the module docstring)
                t = work._tok
        return self._link(work, t, n, hint)

    def _link(self, work: Hinted, t: Any, n: list[Any], hint: bool) -> Any:
        # Walk from t to the newest token; if it is decided, make n its successor.
        while True:
            k = len(t)
            if k == 1:
                return None  # undecided, so the newest: pending
            s = None if k == 2 else _next(t)
            if s is None:
                t.append(n)  # the step that decides
                s = _next(t)
                if s is n:
                    if hint:
                        work._tok = n  # a racing store of an older token does no harm
                    return n
                n[0] = None  # lost: our token stays in t's log, and must not hold the work
                n = self._token(work)
            t = s

    # -- the ops ----------------------------------------------------------------------------

    def queue(self, work: Hinted, inbox: Inbox) -> bool:
        """Make a new instance of ``work`` pending and put its token on ``inbox`` (R1).

        Returns: True if it was not pending (a new instance is queued); False if it was.
        """
        n = self._make(work)
        if n is None:
            return False
        # A cancel before this append leaves the entry stale, which the take then skips.
        inbox.append(n)
        return True

    def acquire(self, work: Hinted) -> Any:
        """Make a new instance of ``work`` pending without placing it (a timer will).

        Returns: its token, or None if ``work`` was pending.
        """
        return self._make(work)

    def is_pending(self, work: Hinted) -> bool:
        """Returns: True while an instance of ``work`` is pending."""
        t = self._root(work)
        while t is not None:
            if len(t) == 1:
                return True
            t = _next(t)  # None: t, decided, was the newest when we looked
        return False

    @staticmethod
    def current(token: list[Any]) -> bool:
        """Returns: True if the instance ``token`` is still pending (for a timer that fires: a
        cancel after this leaves the entry stale, which the take skips)."""
        return len(token) == 1

    @staticmethod
    def take(token: list[Any]) -> Any:
        """Start the instance ``token``: clear its pending state (R2).

        Context: the loop thread of the pool whose inbox held ``token``.
        Returns: the work item to run now, or None if the entry is stale (that instance was
        cancelled).
        """
        token.append(_RUN)  # the step that decides; only this take ever appends _RUN
        if token[1] is not _RUN:
            return None
        work = token[0]
        token[0] = None
        return work

    def cancel(self, work: Hinted) -> Any:
        """Remove the pending instance of ``work`` (R10).

        Returns: the token of the instance removed (its entry or timer is now stale), or None
        if ``work`` was not pending.
        """
        t = self._root(work)
        mine = None
        while t is not None:
            if len(t) == 1:
                if mine is None:
                    mine = _Mark()  # our own fate, so that a win is told from another's
                t.append(mine)  # the step that decides
                if t[1] is mine:
                    t[0] = None
                    return t
            t = _next(t)  # None: t, decided, was the newest when we looked
        return None
