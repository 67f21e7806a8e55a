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

Disabling. The count lives in the chain too, as a fate: ``_Disabled(depth)``. A disable that
finds the newest token pending appends ``_Disabled(1)`` as its fate: one step cancels the
instance and disables the item. Otherwise it links a token ``[None, _Disabled(depth + 1)]``
after the newest, as a queue links an instance. An enable links ``[None, _Disabled(depth -
1)]``, or ``[None, _ENABLED]`` at 0. A queue refuses when the newest token's fate is a
``_Disabled``. So the item's whole state is its newest token: pending (one slot), disabled
(slot 1 a ``_Disabled``), or idle. (A disable that cancels first and links its disabled token
second makes two decisions, and a queue can link its instance between them. The interleaving test
keeps that as a mutant.)

Moving. ``mod_delayed_work`` of a pending item moves its instance (to a new timer, or to the
tail) and must not let a queue in between: a cancel followed by a new queue would be two
decisions. So ``move`` appends a fate ``_Moved(new)`` that names the new token: one step decides
the old instance and makes the new one pending, and a walk goes from the old token to the new
through the fate. A marker that lost its append names nothing (only slot 1 is a fate).

The first instance of an item. A fresh item has no chain yet (``work._tok is None``), and a
slot has no insert-if-absent. So the first queue decides in ``_fresh``, a dict shared by
the process: ``_fresh.setdefault(id(work), token)``. The winner stores its token as the hint and
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
call. ``_fresh`` is keyed by ``id(work)``, an int: a ``Work`` subclass may define
``__hash__`` or ``__eq__`` (or be unhashable, as a dataclass with ``eq=True`` is), and keying by
the object would run that code inside a step, or let two equal items share an entry. An id is
unique while its object lives, and an entry outlives no op on its item: each is removed by the
op that inserted it, which holds the item meanwhile. So no Python code runs inside a step. On a
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
_ENABLED = _Mark()  # the fate of the token an enable_work that reached 0 links: idle


class _Disabled(_Mark):
    """The fate "disabled ``depth`` times": appended by ``disable`` as a pending token's fate, or
    born as slot 1 of the token that a ``disable`` or ``enable`` links after the newest."""

    __slots__ = ("depth",)

    def __init__(self, depth: int) -> None:
        self.depth = depth  # set once


class _Moved(_Mark):
    """The fate "moved": appended by :meth:`PendingTable.move` to a pending token, it decides
    that instance and names its successor, the new pending instance, in the same step."""

    __slots__ = ("next",)

    def __init__(self, n: list[Any]) -> None:
        self.next = n  # set once


class Inbox(Protocol):
    """A pool's inbox: any container whose ``append`` is one atomic step (a deque)."""

    def append(self, token: list[Any], /) -> None: ...


class Hinted(Protocol):
    """A work item as the table sees one: a ``_tok`` slot, None until its first queue."""

    _tok: Any


def _next(t: list[Any]) -> list[Any] | None:
    """Returns: the token after ``t`` (the one its ``_Moved`` fate names, or the first list after
    its fate), or None if it has none. A None is true at the moment ``len(t)`` was last read:
    slots never change once appended."""
    f = t[1]
    if type(f) is _Moved:
        return f.next
    i = 2
    while i < len(t):
        x = t[i]
        if not isinstance(x, _Mark):
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

    def _root(self, work: Hinted) -> tuple[Any, bool]:
        """Returns: a token of ``work``'s chain to walk from (None if it was never queued), and
        whether a token linked after it may be stored as the hint (not when the walk starts at
        a first-queue entry: only the root's maker turns the hint from None)."""
        t = work._tok
        if t is not None:
            return t, True
        t = self._fresh.get(id(work))
        h = work._tok
        if h is not None:  # the root's hint was stored meanwhile: start there
            return h, True
        return t, False

    def _start(self, work: Hinted, n: list[Any]) -> tuple[Any, bool]:
        """Offer ``n`` as the root of ``work``'s chain if it has none.

        Returns: (None, True) if ``n`` is the root now; else a token to walk from and whether a
        token linked after it may be stored as the hint (as :meth:`_root`).
        """
        t = work._tok
        if t is not None:
            return t, True
        fresh = self._fresh
        t = fresh.setdefault(id(work), n)
        if work._tok is None:
            if t is n:  # the first token ever: ours
                work._tok = n
                fresh.pop(id(work), None)  # safe: the hint is stored, nobody trusts it now
                return None, True
            # Another's first token, not yet hinted: walk from it, and leave the hint to it.
            return t, False
        if t is n:
            fresh.pop(id(work), None)  # a leftover of ours (see the module docstring)
        return work._tok, True

    def _make(self, work: Hinted) -> Any:
        """Make a new pending instance of ``work``. Returns: its token, or None if an instance
        was pending (R1) or ``work`` is disabled."""
        n = self._token(work)
        t, hint = self._start(work, n)
        if t is None:
            return n
        return self._link(work, t, n, hint)

    def _link(self, work: Hinted, t: Any, n: list[Any], hint: bool) -> Any:
        # Walk from t to the newest token; if it is decided and not disabled, make n its
        # successor.
        while True:
            k = len(t)
            if k == 1:
                return None  # undecided, so the newest: pending
            s = None if k == 2 else _next(t)
            if s is None:
                f = t[1]
                if f is not _RUN:  # the common fate needs no more looks
                    if type(f) is _Disabled:
                        return None  # the newest, when we looked, and disabled
                    if type(f) is _Moved:
                        t = f.next  # its successor, named by the fate
                        continue
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

    def move(self, work: Hinted) -> tuple[Any, Any]:
        """Replace the pending instance of ``work`` by a new one, in one step, or make a new one
        if none is pending (R9, ``mod_delayed_work``: the instance moves to a new timer or to
        the tail).

        Returns: (old, new): ``old`` the token of the instance replaced (its entry or timer is
        now stale) or None if none was pending; ``new`` the token of the pending instance now,
        or None (and ``old`` None) if ``work`` is disabled.
        """
        n = self._token(work)
        t, hint = self._start(work, n)
        if t is None:
            return None, n
        while True:
            if len(t) == 1:
                m = _Moved(n)
                t.append(m)  # the step that decides: the old instance's fate names the new
                if t[1] is m:
                    t[0] = None
                    if hint:
                        work._tok = n
                    return t, n
                continue  # decided by another meanwhile (our marker, lost, names nothing)
            s = _next(t)
            if s is None:  # t, decided, was the newest when we looked: nothing is pending
                if type(t[1]) is _Disabled:
                    n[0] = None
                    return None, None
                t.append(n)  # the step that decides, as a queue's
                s = _next(t)
                if s is n:
                    if hint:
                        work._tok = n
                    return None, n
                n[0] = None  # lost: our token stays in t's log, and must not hold the work
                n = self._token(work)
            t = s

    def disabled(self, work: Hinted) -> bool:
        """Returns: True while the disable count of ``work`` is above 0 (a snapshot)."""
        t = self._root(work)[0]
        while t is not None:
            if len(t) == 1:
                return False  # pending, so not disabled
            s = _next(t)
            if s is None:  # t, decided, was the newest when we looked
                return type(t[1]) is _Disabled
            t = s
        return False

    def is_pending(self, work: Hinted) -> bool:
        """Returns: True while an instance of ``work`` is pending."""
        return self.pending(work) is not None

    def pending(self, work: Hinted) -> Any:
        """Returns: the token of the pending instance of ``work``, or None if none is."""
        t = self._root(work)[0]
        while t is not None:
            if len(t) == 1:
                return t
            t = _next(t)  # None: t, decided, was the newest when we looked
        return None

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
        t = self._root(work)[0]
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

    def disable(self, work: Hinted) -> Any:
        """Raise the disable count of ``work``; a pending instance is cancelled (R10). While the
        count is above 0, :meth:`queue` and :meth:`acquire` refuse ``work``.

        Returns: the token of the instance cancelled, or None if ``work`` was not pending.
        """
        t, hint = self._start(work, [None, _Disabled(1)])
        while t is not None:
            if len(t) == 1:
                m = _Disabled(1)
                t.append(m)  # the step that decides: this instance's end is "disabled"
                if t[1] is m:
                    t[0] = None
                    return t
                continue  # decided by another meanwhile: look at its fate
            s = _next(t)
            if s is None:  # t, decided, was the newest when we looked
                f = t[1]
                n = [None, _Disabled(f.depth + 1 if type(f) is _Disabled else 1)]
                t.append(n)  # the step that decides
                s = _next(t)
                if s is n:
                    if hint:
                        work._tok = n
                    return None
            t = s
        return None

    def enable(self, work: Hinted) -> bool | None:
        """Lower the disable count of ``work``.

        Returns: True if it reached 0, False if it is still above 0, None if ``work`` was not
        disabled (the count is left at 0).
        """
        t, hint = self._root(work)
        while t is not None:
            if len(t) == 1:
                return None  # pending, so not disabled
            s = _next(t)
            if s is None:  # t, decided, was the newest when we looked
                f = t[1]
                if type(f) is not _Disabled:
                    return None
                n = [None, _Disabled(f.depth - 1) if f.depth > 1 else _ENABLED]
                t.append(n)  # the step that decides
                s = _next(t)
                if s is n:
                    if hint:
                        work._tok = n
                    return f.depth == 1
            t = s
        return None
