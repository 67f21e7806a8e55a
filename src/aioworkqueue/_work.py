"""Work items: :class:`Work` and :class:`DelayedWork`.

A work item's whole life is one integer, ``_state``; its bits and the named transitions that
change them (the state machine, with the rule each serves) are the layer below, ``_state.py``.
The bits are re-exported here for the modules that take them with the work classes.

Owner (tags as in docs/design.md §1: I set once, L under ``_lock.LOCK``, O owner loop, A atomic):
every field below is L, except ``func``, which is I, and ``ASYNC_FN``, computed once at
construction; ``_state`` is also read without the lock, as a snapshot (``work_busy``).
"""

from __future__ import annotations

import functools
import inspect
import math
import types
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeAlias

from ._errors import describe
from ._flags import WorkBusy
from ._state import (
    ARMED,
    ASYNC_FN,
    CALL,
    DEFERRED,
    DISABLE_MASK,
    DISABLE_UNIT,
    INACTIVE,
    PENDING,
    QUEUED,
    REDO,
    RUNNING,
    TABLE,
    WAITED,
    WHERE,
)

# Forward declarations, as a C header declares ``struct pool_workqueue;``: a pending item points
# at its queue link (``_pwq.Pwq``) and an armed one at the pool whose timer heap holds it
# (``_pool.Pool``). Both classes hold work items, so they sit layers above, and a module imports
# only the layers below it (design §1). This layer never reads those slots; the layers that own
# the objects do, under their own annotations (``pwq: Pwq = work._pwq``).
_Pwq: TypeAlias = Any
_Pool: TypeAlias = Any

__all__ = (
    "ARMED",
    "ASYNC_FN",
    "CALL",
    "DEFERRED",
    "DISABLE_MASK",
    "DISABLE_UNIT",
    "FORMS",
    "INACTIVE",
    "PENDING",
    "QUEUED",
    "REDO",
    "RUNNING",
    "WAITED",
    "WHERE",
    "DelayedWork",
    "Work",
    "WorkFunc",
)

#: A work function: receives the work item itself; plain or ``async def``.
WorkFunc: TypeAlias = Callable[[Any], "Awaitable[None] | None"]

#: The largest delay, in seconds, whose deadline every loop can arm. On uvloop deadlines are
#: rounded up to whole milliseconds (``_timer.arm``): ``deadline * 1000.0`` overflows to infinity
#: from about 1.7977e305 s on (found by trying; uvloop itself takes any finite delay). One bound
#: for every loop, well clear of that and of any clock value.
MAX_DELAY = 1e305


def is_async_callable(func: object) -> bool:
    """Return True when calling ``func`` gives a coroutine, as docs/spec.md defines it.

    ``functools.partial`` is unwrapped, and for callable objects ``__call__`` is looked at.
    """
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    if isinstance(func, types.FunctionType | types.MethodType | types.BuiltinFunctionType | type):
        return False
    return inspect.iscoroutinefunction(inspect.getattr_static(type(func), "__call__", None))


def func_name(func: object) -> str:
    """Return a readable name of a callable for messages and traces."""
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return name if isinstance(name, str) else type(func).__name__


class Work:
    """A unit of deferred work: ``Work(func)``; ``func(work)`` runs on a worker.

    Subclass it to carry data (the kernel's ``container_of`` pattern): the function always receives
    the work object it was queued with. A work item can be pending at most once at a time (R1)
    and never runs concurrently with itself (R3).

    Context: construct anywhere.
    """

    __slots__ = ("_by", "_epoch", "_pwq", "_state", "_tok", "func")

    func: WorkFunc  # I
    _state: int  # L (read lock-free as a snapshot)
    _pwq: _Pwq | None  # L: the queue link of the pending (or last) instance
    _epoch: int  # L: flush epoch of the queued instance (``_flush.py``)
    # A: the pending table's hint, a token of the item's chain (``_pending.py``); kept in debug
    # mode only for now, as a shadow of the PENDING bit (``_state.py``).
    _tok: Any
    # O: the lean pool's worker running this item, or None (``_lean.py``, R3; Core v2).
    _by: Any

    def __init__(self, func: WorkFunc) -> None:
        if not callable(func):
            raise TypeError(f"{type(self).__name__}: func must be callable, got {describe(func)}")
        self.func = func
        self._state = ASYNC_FN if is_async_callable(func) else 0
        self._pwq = None
        self._epoch = 0
        self._tok = None
        self._by = None

    def __repr__(self) -> str:
        try:
            func = self.func
        except AttributeError:  # a subclass whose __init__ skipped Work.__init__
            return f"<{type(self).__name__} (not initialised)>"
        return f"<{type(self).__name__} fn={func_name(func)}>"

    def _idle_slots(self) -> dict[str, Any]:
        # The slots of the item's queue life, as a new item has them. Only the set-once bits of
        # the state survive (what kind of function, made by submit or not).
        return {
            "_state": getattr(self, "_state", 0) & (ASYNC_FN | CALL),
            "_pwq": None,
            "_epoch": 0,
            "_tok": None,
            "_by": None,
        }

    def __getstate__(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """The state that ``copy.copy``, ``copy.deepcopy`` and ``pickle`` take: the function
        and every field of the item and its subclass, with none of its queue life. So a copy
        is an idle item, neither pending nor disabled, that may be queued at once. (A copy
        that kept the original's state would claim to be pending, sit on no queue, and never
        run.) Context: any.
        """
        state = super().__getstate__()
        if isinstance(state, tuple):
            inst, slots = state
        else:
            inst, slots = state, None
        out = dict(slots or ())
        out.update(self._idle_slots())
        return inst or None, out

    @property
    def pending(self) -> bool:
        """True while a successful ``queue_*`` of this item has not started or been cancelled."""
        try:
            link = self._pwq
            if link is not None and link.lean:  # Core v2: the table is the truth
                return TABLE.is_pending(self)
            return bool(self._state & PENDING)
        except AttributeError:
            check_initialised("Work.pending", self)
            raise

    @property
    def busy(self) -> WorkBusy:
        """The :class:`WorkBusy` flags of this item right now (see :func:`work_busy`)."""
        try:
            st = self._state
            link = self._pwq
        except AttributeError:
            check_initialised("Work.busy", self)
            raise
        if link is not None and link.lean:  # Core v2: the table, and the worker running it
            busy = WorkBusy.PENDING if TABLE.is_pending(self) else WorkBusy(0)
            return busy | WorkBusy.RUNNING if self._by is not None else busy
        return WorkBusy((st & PENDING and WorkBusy.PENDING) | (st & RUNNING and WorkBusy.RUNNING))

    def cancel(self) -> bool:
        """Same as :func:`cancel_work` (or :func:`cancel_delayed_work` for a DelayedWork)."""
        return FORMS.cancel_work(self)

    async def cancel_sync(self) -> bool:
        """Same as :func:`cancel_work_sync`."""
        return await FORMS.cancel_work_sync(self)

    async def flush(self) -> bool:
        """Same as :func:`flush_work` (:func:`flush_delayed_work` for a DelayedWork)."""
        return await FORMS.flush_work(self)


class DelayedWork(Work):
    """A work item that can also be queued after a delay (``struct delayed_work``).

    A DelayedWork is a Work: every plain-work call accepts it (docs/spec.md).

    Context: construct anywhere.
    """

    __slots__ = ("_deadline", "_tgen", "_tpool")

    _deadline: float  # L: pool-clock time before which the armed instance may not be queued (R8)
    _tgen: int  # L: the arm's generation, unique; its heap entry is garbage once this changes
    _tpool: _Pool | None  # L: the pool whose timer heap holds the armed instance (_timer.py)

    def __init__(self, func: WorkFunc) -> None:
        super().__init__(func)
        self._deadline = 0.0
        self._tgen = 0
        self._tpool = None

    def _idle_slots(self) -> dict[str, Any]:
        out = super()._idle_slots()
        out.update(_deadline=0.0, _tgen=0, _tpool=None)  # no timer
        return out

    async def flush(self) -> bool:
        """Same as :func:`flush_delayed_work`."""
        return await FORMS.flush_delayed_work(self)


class _Forms:
    """The functions behind the method forms of :class:`Work` (``work.cancel()``, ...).

    They sit layers above (``_cancel.py``, ``_flush.py``), which this module must not import:
    each fills its entries here when it is imported, as the kernel's lower layers call up
    through a table of function pointers. ``import aioworkqueue`` (which any import of a
    submodule runs first) imports both, so the table is full before user code holds a Work.

    Owner: set once, at import.
    """

    __slots__ = ("cancel_work", "cancel_work_sync", "flush_delayed_work", "flush_work")

    cancel_work: Callable[[Work], bool]
    cancel_work_sync: Callable[[Work], Coroutine[Any, Any, bool]]
    flush_work: Callable[[Work], Coroutine[Any, Any, bool]]
    flush_delayed_work: Callable[[DelayedWork], Coroutine[Any, Any, bool]]


FORMS = _Forms()


def check_work(call: str, work: object) -> Work:
    """Return ``work`` if it is a :class:`Work`, else raise a TypeError that names ``call``."""
    if not isinstance(work, Work):
        raise TypeError(f"{call}: expected a Work, got {type(work).__name__} {describe(work)}")
    if type(work) is not Work and type(work) is not DelayedWork:
        check_initialised(call, work)
    return work


def check_initialised(call: str, work: Work) -> None:
    """Raise a TypeError naming ``call`` if ``work``'s ``__init__`` never ran ``Work.__init__``."""
    if not hasattr(work, "_state"):
        raise TypeError(
            f"{call}: {type(work).__name__} object was not initialised: its __init__ must call "
            f"super().__init__(func, ...)"
        )


def check_delayed(call: str, work: object) -> DelayedWork:
    """Return ``work`` if it is a :class:`DelayedWork`, else raise a TypeError naming ``call``."""
    if not isinstance(work, DelayedWork):
        raise TypeError(
            f"{call}: expected a DelayedWork, got {type(work).__name__} {describe(work)}"
        )
    if type(work) is not DelayedWork:
        check_initialised(call, work)
    return work


def check_delay(call: str, delay: object, work: object) -> float:
    """Return ``delay`` as seconds, or raise per docs/spec.md (bool: TypeError; <0, NaN, inf)."""
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise TypeError(
            f"{call}: delay must be int or float seconds, got {describe(delay)} "
            f"for {describe(work)}"
        )
    try:
        d = float(delay)
    except OverflowError:  # an int beyond any float: no timer can be armed that far
        raise ValueError(
            f"{call}: delay is too large ({delay.bit_length()}-bit int seconds) for "  # type: ignore[union-attr]
            f"{describe(work)}"
        ) from None
    if math.isnan(d) or math.isinf(d) or d < 0:
        raise ValueError(
            f"{call}: delay must be finite and >= 0, got {describe(delay)} for {describe(work)}"
        )
    if d > MAX_DELAY:  # a deadline no loop can arm: refused before anything changes
        raise ValueError(
            f"{call}: delay {d!r} is too large (at most {MAX_DELAY!r} seconds) for {describe(work)}"
        )
    return d + 0.0  # -0.0 becomes 0.0
