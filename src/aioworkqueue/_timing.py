"""Opt-in timing statistics: :func:`enable_timing` / :func:`disable_timing`.

While timing is on, every workqueue counts the runs that started (``started``), the CPU time its
items consumed (``cpu_time``) and the latency from ``queue_*`` to the start of the run
(``latency_p50``/``p90``/``p99``/``max``); ``wq.stats()`` reports them, and ``None`` for a queue
that timing never saw. It is opt-in because it reads two clocks per run and meters every step of
a coroutine item: switched off, it costs what every tracepoint costs, the ``if HOOKS.on:`` test
the core makes anyway (plus one test of a local in the worker), and nothing else.

How. Timing is an instrument on the kernel's tracepoints (``_hooks.py``), like the structlog
tracer:

* ``workqueue_queue_work`` stamps the time a :class:`Work` was queued; a :class:`DelayedWork` is
  stamped at ``workqueue_activate_work`` instead, when its timer has fired and it got a
  ``max_active`` slot (its latency does not include the delay it asked for). The stamps live in
  one side table keyed by the item, written under the state lock (the two tracepoints run under
  it) and taken by the start of the run; stamps of items cancelled before they ran are pruned
  whenever the table doubles.
* ``workqueue_execute_start`` counts the run, adds its latency to the histogram and notes when
  it started (``show_state()`` shows how long each item has been running).
* CPU time is thread CPU time (``time.thread_time``). A plain function's is exact between
  ``execute_start`` and ``execute_end`` (``WQ.BH`` items are measured that way). A coroutine
  suspends, and other tasks run on the same thread meanwhile, so a worker that sees timing on
  runs the item through :func:`run_timed` (``HOOKS.run``), a ``types.coroutine`` generator that
  steps the item's coroutine itself and reads the clock around each ``send()``/``throw()``: a
  coroutine is charged for its own steps only, never for the time it spends suspended. The CPU
  of a ``WQ.CPU_INTENSIVE`` function is read in the worker thread that runs it. ``thread_time``
  is a system call (about 0.5 us on a VM), so it is read twice per step and no more.

The histogram has fixed power-of-two buckets of microseconds: bucket 0 holds latencies under
1 us, bucket ``i`` those in [2**(i-1), 2**i) us, up to 2**26 us (67 s); the last bucket holds
everything longer. A percentile is the upper edge of the bucket that holds it (so the true value
is between half of it and it), capped by the maximum, which is kept exactly. Adding a sample is
``int.bit_length()`` and an increment.

Where. Each workqueue holds one :class:`TimingAcc` per thread that ran its items (the pool's loop
thread; ``wq._timing``, keyed by thread ident). Only that thread writes it, without a lock; the
dict is extended under the state lock, once per thread and queue. ``wq.stats()`` merges the
accumulators of all threads under the state lock; reading another thread's counters while it
counts gives a snapshot that may be one run behind, never a torn value.

Owner: ``_STAMPS`` is written under ``_lock.LOCK`` and popped (one atomic ``dict.pop``) by the
thread that starts the run; a :class:`TimingAcc` belongs to its thread.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import types
import weakref
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from ._hooks import HOOKS, add_instrument, remove_instrument
from ._lock import INTR, LOCK, replay
from ._pool import _call, _call_in_thread, _isawaitable
from ._work import ASYNC_FN, CALL, PENDING, RUNNING, DelayedWork, Work

if TYPE_CHECKING:
    from ._pwq import Pwq

__all__ = (
    "BUCKETS",
    "EDGES",
    "TimingAcc",
    "disable_timing",
    "enable_timing",
    "histogram",
    "run_timed",
    "running_for",
    "summarize",
    "timing_enabled",
)

#: The clocks. Module attributes so a test can put deterministic ones in their place: ``clock``
#: for latencies and running times (system-wide, so a queue stamp from another thread compares),
#: ``cpu_clock`` for CPU time (of the calling thread).
clock = time.perf_counter
cpu_clock = time.thread_time

#: Number of histogram buckets: 27 bounded ones (< 1 us, then up to 2**26 us) and one overflow.
BUCKETS = 28
#: Upper edge of each bounded bucket, in seconds (the last bucket has none: +Inf).
EDGES = tuple((1 << i) / 1e6 for i in range(BUCKETS - 1))

_get_ident = threading.get_ident

# id(item) -> (when it was queued or activated, the item). The item is held so that its id
# cannot be reused while the stamp exists. Written under LOCK; popped by the start of the run.
_STAMPS: dict[int, tuple[float, Work]] = {}
_PRUNE_MIN = 4096


class _State:
    __slots__ = ("instrument", "prune_at")

    def __init__(self) -> None:
        self.instrument: _Timing | None = None  # L: subscribed while timing is on
        self.prune_at = _PRUNE_MIN  # L: prune _STAMPS when it grows past this


_STATE = _State()
# Every accumulator alive, to forget the runs in progress when timing is switched off.
_ACCS: weakref.WeakSet[TimingAcc] = weakref.WeakSet()


class TimingAcc:
    """What one thread measured for one workqueue. Owner: T, that thread (every attribute);
    others only read, under LOCK (a snapshot at most one run behind, never a torn value)."""

    __slots__ = ("__weakref__", "cpu", "cpu0", "hist", "lat_max", "lat_sum", "since", "started")

    def __init__(self) -> None:
        self.started = 0  # runs started
        self.cpu = 0.0  # CPU seconds of finished runs
        self.hist = [0] * BUCKETS  # latency samples per bucket
        self.lat_sum = 0.0  # seconds, over the samples (for a Prometheus histogram)
        self.lat_max = 0.0
        self.since: dict[int, float] = {}  # id(item) -> when its running instance started
        self.cpu0: dict[int, float] = {}  # id(item) -> CPU clock at start, until it is charged

    def add_latency(self, lat: float) -> None:
        if lat < 0.0:  # noqa: PLR1730 - a test is cheaper than a call to max()
            lat = 0.0  # a clock that stepped: count it, as the shortest
        i = int(lat * 1e6).bit_length()
        self.hist[i if i < BUCKETS else BUCKETS - 1] += 1
        self.lat_sum += lat
        if lat > self.lat_max:  # noqa: PLR1730
            self.lat_max = lat


def _acc(wq: Any) -> TimingAcc:
    """This thread's accumulator for ``wq``, created on first use. Context: not under LOCK."""
    accs: dict[int, TimingAcc] | None = wq._timing
    tid = _get_ident()
    if accs is not None:
        acc = accs.get(tid)
        if acc is not None:
            return acc
    with LOCK:  # once per thread and queue
        accs = wq._timing
        if accs is None:
            accs = wq._timing = {}
        acc = accs.get(tid)
        if acc is None:
            acc = accs[tid] = TimingAcc()
            _ACCS.add(acc)
    if INTR.pending:
        replay()
    return acc


def _own_acc(wq: Any) -> TimingAcc | None:
    accs: dict[int, TimingAcc] | None = wq._timing
    return None if accs is None else accs.get(_get_ident())


def _stamp(work: Work) -> None:
    # Context: under LOCK (the queue and activate tracepoints run under it).
    stamps = _STAMPS
    stamps[id(work)] = (clock(), work)
    if len(stamps) > _STATE.prune_at:
        # Stamps of items cancelled before they started: drop those no longer pending (or
        # running: a worker may have taken it and not reached execute_start yet). The copy is
        # one atomic call; starts pop concurrently, and only pop.
        for key, (_t, item) in stamps.copy().items():
            if not item._state & (PENDING | RUNNING):
                stamps.pop(key, None)
        _STATE.prune_at = max(_PRUNE_MIN, 2 * len(stamps))


class _Timing:
    """The instrument behind :func:`enable_timing`."""

    def workqueue_queue_work(self, work: Work, wq: Any, req_cpu: int | None, cpu: int) -> None:
        if not isinstance(work, DelayedWork):
            _stamp(work)

    def workqueue_activate_work(self, work: Work, wq: Any) -> None:
        if isinstance(work, DelayedWork):
            _stamp(work)  # the timer fired (or it was queued at once) and it got a slot

    def workqueue_execute_start(self, work: Work, wq: Any) -> None:
        now = clock()
        accs = wq._timing
        acc = None if accs is None else accs.get(_get_ident())
        if acc is None:
            acc = _acc(wq)
        acc.started += 1
        key = id(work)
        # A stamp only a concurrent re-queue could have replaced: then this run is measured
        # from that queue_* and the next one not at all, a window of a few bytecodes.
        stamp = _STAMPS.pop(key, None)
        if stamp is not None:
            acc.add_latency(now - stamp[0])
        acc.since[key] = now
        # "Charge this run": a WQ.BH item is a plain call, timed from here to execute_end; a
        # worker's item is charged by run_timed, which reads the clock itself (a CPU clock is a
        # system call: not one more than needed).
        acc.cpu0[key] = cpu_clock() if wq._bh else 0.0

    def workqueue_execute_end(self, work: Work, wq: Any, duration: float, outcome: str) -> None:
        acc = _own_acc(wq)
        if acc is None:
            return
        key = id(work)
        acc.since.pop(key, None)
        t = acc.cpu0.pop(key, None)
        if t is not None and wq._bh:  # a worker's item was charged (and popped) by run_timed
            acc.cpu += cpu_clock() - t


def _call_metered(work: Work, box: list[float]) -> Any:
    # In a WQ.CPU_INTENSIVE worker thread: its own CPU clock.
    t = cpu_clock()
    try:
        return _call_in_thread(work)
    finally:
        box[0] = cpu_clock() - t


@types.coroutine
def run_timed(work: Work, pwq: Pwq) -> Generator[Any, Any, None]:
    """Run ``work`` as a worker does (``_pool.Pool._worker_main``), charging its CPU time.

    ``HOOKS.run`` while timing is on; the worker awaits it. It is a generator-based coroutine
    so that it can step the item's coroutine itself: the CPU clock is read around each
    ``send()``/``throw()``, and what runs while the item is suspended (other tasks) is not
    charged to it. What it yields and what is sent or thrown in pass through unchanged, as with
    ``yield from``; exceptions reach the worker unchanged.
    Context: a worker task, between ``execute_start`` and ``execute_end``.
    """
    clk = cpu_clock
    spent = 0.0
    try:
        st = work._state
        it: Any
        if st & ASYNC_FN and not st & CALL:
            t = clk()
            try:
                it = work.func(work)  # a coroutine: send/throw/close of its own
            finally:
                spent += clk() - t
        else:
            if pwq.cpu_thread and not st & ASYNC_FN:
                box = [0.0]
                try:
                    r = yield from asyncio.get_running_loop().run_in_executor(
                        pwq.wq._cpu_executor(), _call_metered, work, box
                    )
                finally:
                    spent += box[0]
            else:
                t = clk()
                try:
                    r = _call(work)
                finally:
                    spent += clk() - t
            if r is None or not _isawaitable(r):
                return
            it = r.__await__()
        send = it.send
        value: Any = None
        exc: BaseException | None = None
        while True:
            t = clk()
            try:
                if exc is None:
                    y = send(value)
                else:
                    throw = getattr(it, "throw", None)
                    if throw is None:
                        raise exc
                    y = throw(exc)
            except StopIteration:
                return
            finally:
                spent += clk() - t
                exc = None
            try:
                value = yield y
            except GeneratorExit:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
                raise
            except BaseException as e:  # CancelledError and anything else thrown in: pass on
                exc = e
                value = None
    finally:
        acc = _own_acc(pwq.wq)
        if acc is not None:
            key = id(work)
            # Not running any more, even if no execute_end follows (a cancelled worker).
            acc.since.pop(key, None)
            # Charged only if execute_start counted the run (timing may have come on since).
            if acc.cpu0.pop(key, None) is not None:
                acc.cpu += spent


def enable_timing() -> None:
    """Start counting runs, their CPU time and their queue-to-start latency per workqueue.

    ``wq.stats()`` then reports ``started``, ``cpu_time`` and ``latency_*``; ``show_state()``
    how long each running item has been running. Enabling twice has no further effect; the
    numbers add up over every period timing was on.
    Context: any. The items already pending have no queue stamp: they are counted, without a
    latency.
    """
    with LOCK:
        if _STATE.instrument is None:
            inst = _STATE.instrument = _Timing()
            # The runner first: a worker that sees the instrument must see the runner too,
            # or its item's CPU time would be charged by nobody.
            HOOKS.run = run_timed
            add_instrument(inst)
    if INTR.pending:
        replay()


def disable_timing() -> None:
    """Stop counting; the numbers counted so far stay in ``wq.stats()``. Context: any."""
    with LOCK:
        inst = _STATE.instrument
        if inst is not None:
            _STATE.instrument = None
            HOOKS.run = None
            remove_instrument(inst)
            _STAMPS.clear()
            _STATE.prune_at = _PRUNE_MIN
            for acc in list(_ACCS):  # runs in progress are not charged any more
                acc.since.clear()
                acc.cpu0.clear()
    if INTR.pending:
        replay()


def timing_enabled() -> bool:
    """True while timing is on. Context: any."""
    return _STATE.instrument is not None


def _percentile(hist: list[int], n: int, q: float, top: float) -> float:
    rank = max(1, math.ceil(round(q * n, 9)))  # nearest rank; round: 0.99 * 100 is 99.000..01
    seen = 0
    for i, count in enumerate(hist):
        seen += count
        if seen >= rank:
            return min(EDGES[i], top) if i < BUCKETS - 1 else top
    return top


def summarize(accs: list[TimingAcc]) -> dict[str, Any]:
    """The ``WorkqueueStats`` timing fields, merged over ``accs`` (one per thread).

    Context: under LOCK (which keeps the set of accumulators still); the counters themselves
    are read as they are.
    """
    hist = [0] * BUCKETS
    started = 0
    cpu = 0.0
    top = 0.0
    for acc in accs:
        started += acc.started
        cpu += acc.cpu
        top = max(top, acc.lat_max)
        for i, count in enumerate(list(acc.hist)):
            hist[i] += count
    n = sum(hist)
    out: dict[str, Any] = {"started": started, "cpu_time": cpu}
    if n:
        out.update(
            latency_p50=_percentile(hist, n, 0.50, top),
            latency_p90=_percentile(hist, n, 0.90, top),
            latency_p99=_percentile(hist, n, 0.99, top),
            latency_max=top,
        )
    return out


def histogram(wq: Any) -> tuple[list[int], int, float] | None:
    """The merged latency histogram of ``wq``: (count per bucket, samples, sum of seconds), or
    None where timing was never on. Context: any."""
    with LOCK:
        accs = list(wq._timing.values()) if wq._timing is not None else None
    if INTR.pending:
        replay()
    if accs is None:
        return None
    hist = [0] * BUCKETS
    total = 0.0
    for acc in accs:
        total += acc.lat_sum
        for i, count in enumerate(list(acc.hist)):
            hist[i] += count
    return hist, sum(hist), total


def running_for(wq: Any, work: Work, tid: int, now: float) -> float | None:
    """How long ``work``'s run on thread ``tid`` has lasted, if timing saw it start.

    Context: any (``show_state``).
    """
    accs: dict[int, TimingAcc] | None = wq._timing
    acc = None if accs is None else accs.get(tid)
    since = None if acc is None else acc.since.get(id(work))
    return None if since is None else now - since
