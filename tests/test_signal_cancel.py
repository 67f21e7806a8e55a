"""cancel / disable / enable from interrupt context that interrupted our own section.

Each test lands the handler's call at every opcode of the interrupted code that runs under the
lock (``sys.settrace`` with opcode events, the handler called from the trace function, which runs
on the interrupted thread between two bytecodes, as a signal handler or a finalizer does), one
point per run, and checks the run against the two sequential orders, measured by running them:
the handler's answer, the interrupted call's result and the final state must be those of the
handler's call before the section or after it (linearizability; no other order exists for two
calls on one thread). Plus a storm of real signals with a ledger.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import aioworkqueue as aw
from aioworkqueue import _lock

_SRC = str(Path(aw.__file__).parent)


class _Inject:
    """Call ``op`` once, at the ``n``-th opcode run under the lock by library code."""

    def __init__(
        self,
        n: int,
        op: Callable[[], object],
        within: set[Any] | None = None,
        start: Any = None,
    ) -> None:
        self.n = n
        self.op = op
        self.within = within  # only inside these functions (code objects) and their callees
        self.start = start  # only from the first call of this function (a code object) on
        self.count = 0
        self.fired = False
        self.result: object = None

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode" and not self.fired and _lock.LOCK._is_owned():  # type: ignore[attr-defined]
            self.count += 1
            if self.count == self.n:
                self.fired = True
                try:
                    self.result = self.op()
                except Exception as exc:  # compared like an answer
                    self.result = type(exc)
        return self._local

    def _global(self, frame: FrameType, event: str, arg: Any) -> Any:
        if self.fired or not frame.f_code.co_filename.startswith(_SRC):
            return None
        if self.start is not None:
            if frame.f_code is not self.start:
                return None
            self.start = None
        if self.within is not None:
            f: FrameType | None = frame
            while f is not None and f.f_code not in self.within:
                f = f.f_back
            if f is None:
                return None
        frame.f_trace_opcodes = True
        return self._local

    def __enter__(self) -> _Inject:
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(None)


Scenario = Callable[[Callable[[], Any]], Any]


def _explore(
    scenario: Callable[[str, int], tuple[Any, ...]], *, at_least: int = 5
) -> tuple[int, set[str]]:
    """Run ``scenario`` with the handler before, after, and at every point of the section.

    Returns the number of points and which orders explained them.
    """
    before = scenario("before", 0)
    after = scenario("after", 0)
    orders: set[str] = set()
    n = 1
    while True:
        obs = scenario("inject", n)
        if obs[0] == "not fired":
            break
        assert obs[1:] in (before[1:], after[1:]), (n, obs, before, after)
        orders.add("before" if obs[1:] == before[1:] else "after")
        n += 1
    assert n > at_least, n  # the section was really run under injection
    return n - 1, orders


def _run(
    mode: str,
    n: int,
    setup: Callable[[aw.Workqueue, aw.Work], Awaitable[None] | None],
    section: Callable[[aw.Workqueue, aw.Work], Any],
    op: Callable[[aw.Work], Any],
    *,
    delayed: bool = False,
    async_section: bool = False,
    max_pending: int = 0,
) -> tuple[Any, ...]:
    """One run: ``setup``, then ``section`` with ``op`` before, after or injected into it."""
    runs: list[int] = []

    async def main() -> tuple[Any, ...]:
        async with aw.alloc_workqueue(f"sig-{mode}-{n}", max_pending=max_pending) as wq:
            w: aw.Work = (aw.DelayedWork if delayed else aw.Work)(lambda _w: runs.append(1))
            r = setup(wq, w)
            if r is not None:
                await r
            ans: object = None

            def call() -> object:
                try:
                    return op(w)
                except Exception as exc:
                    return type(exc)

            if mode == "before":
                ans = call()
            inj = _Inject(n, lambda: op(w))
            try:
                if mode == "inject":
                    with inj:
                        res = section(wq, w)
                        if async_section:
                            res = await res
                else:
                    res = section(wq, w)
                    if async_section:
                        res = await res
            except Exception as exc:
                res = type(exc)
            if mode == "inject":
                if not inj.fired:
                    return ("not fired",)
                ans = inj.result
            if mode == "after":
                ans = call()
            assert not _lock.LOCK._is_owned()  # type: ignore[attr-defined]
            await wq.flush()
            await aw.flush_work(w)
            st = w._state
            disabled = st >> 12
            while w._state >> 12:  # leave it enabled, so the queue can be destroyed cleanly
                aw.enable_work(w)
            aw.cancel_work(w)
            stats = wq.stats()
            return ("ok", ans, res, len(runs), bool(st & 1), disabled, stats.cancelled)

    return asyncio.run(main())


def _idle(wq: aw.Workqueue, w: aw.Work) -> None:
    pass


def _queued(wq: aw.Workqueue, w: aw.Work) -> None:
    assert aw.queue_work(wq, w)


def _disabled(wq: aw.Workqueue, w: aw.Work) -> None:
    aw.disable_work(w)


def _armed(wq: aw.Workqueue, w: aw.Work) -> None:
    assert aw.queue_delayed_work(wq, w, 30.0)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_errors(caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest) -> Any:
    """A prediction the replay disagrees with is logged at ERROR: none may be (a test that
    expects other reports claims them with ``expect_errors`` and checks them itself)."""
    with caplog.at_level(logging.ERROR, logger="aioworkqueue"):
        yield
    if "expect_errors" not in request.fixturenames:
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("op", [aw.cancel_work, aw.disable_work], ids=["cancel", "disable"])
@pytest.mark.parametrize("setup", [_idle, _queued], ids=["idle", "pending"])
def test_handler_call_inside_the_items_own_queue_section(
    op: Callable[[aw.Work], bool], setup: Any
) -> None:
    """The interrupted code queues the item (queue_work's inline path)."""
    _explore(lambda mode, n: _run(mode, n, setup, lambda wq, w: aw.queue_work(wq, w), op))


def _full(wq: aw.Workqueue, w: aw.Work) -> None:
    assert aw.queue_work(wq, aw.Work(lambda _w: None))  # the one room of the bound, taken


@pytest.mark.parametrize("op", [aw.cancel_work, aw.disable_work], ids=["cancel", "disable"])
@pytest.mark.parametrize("setup", [_idle, _full], ids=["room", "full"])
def test_handler_call_inside_the_items_queue_on_a_bounded_queue(
    op: Callable[[aw.Work], bool], setup: Any
) -> None:
    """R21: the interrupted queue takes the last room (True) or is refused (WorkqueueFullError)."""
    _explore(
        lambda mode, n: _run(mode, n, setup, lambda wq, w: aw.queue_work(wq, w), op, max_pending=1)
    )


@pytest.mark.parametrize("op", [aw.cancel_work, aw.disable_work], ids=["cancel", "disable"])
def test_handler_call_inside_the_items_queue_on_cpu(op: Callable[[aw.Work], bool]) -> None:
    """The general path (``_queue``), as queue_work_on takes it."""
    _explore(lambda mode, n: _run(mode, n, _idle, lambda wq, w: aw.queue_work_on(0, wq, w), op))


@pytest.mark.parametrize("op", [aw.cancel_work, aw.disable_work], ids=["cancel", "disable"])
def test_handler_call_inside_another_items_queue_section(op: Callable[[aw.Work], bool]) -> None:
    """A section that does not touch the item: the calls commute."""
    other = aw.Work(lambda w: None)
    _explore(lambda mode, n: _run(mode, n, _queued, lambda wq, w: aw.queue_work(wq, other), op))


@pytest.mark.parametrize(
    "op", [aw.cancel_work, aw.disable_work, aw.enable_work], ids=["cancel", "disable", "enable"]
)
@pytest.mark.parametrize("setup", [_queued, _disabled], ids=["pending", "disabled"])
def test_handler_call_inside_the_interrupted_threads_own_cancel(
    op: Callable[[aw.Work], bool], setup: Any
) -> None:
    """The interrupted code cancels the same item: exactly one of the two gets True."""
    _explore(lambda mode, n: _run(mode, n, setup, lambda wq, w: aw.cancel_work(w), op))


@pytest.mark.parametrize(
    "section",
    [aw.disable_work, aw.enable_work],
    ids=["disable", "enable"],
)
@pytest.mark.parametrize(
    "op", [aw.cancel_work, aw.disable_work, aw.enable_work], ids=["cancel", "disable", "enable"]
)
def test_handler_call_inside_the_interrupted_threads_disable_or_enable(
    op: Callable[[aw.Work], bool], section: Callable[[aw.Work], bool]
) -> None:
    """The disable count: the handler's enable sees the interrupted disable either before or
    after, never half-way (the answer and the count agree)."""
    _explore(lambda mode, n: _run(mode, n, _disabled, lambda wq, w: section(w), op))


def test_handler_cancel_inside_the_workers_take_and_end_of_run() -> None:
    """The worker's section takes the item (linearized before it: the instance is taken back
    before its function runs, True) or ends its run (after: False, it ran)."""

    def section(wq: aw.Workqueue, w: aw.Work) -> Any:
        return wq.flush()

    _npoints, orders = _explore(
        lambda mode, n: _run(mode, n, _queued, section, aw.cancel_work, async_section=True)
    )
    assert orders == {"before", "after"}, orders


def test_handler_cancel_inside_the_workers_take_of_a_deferred_instance() -> None:
    """Queued again while it runs: the end of the run starts the next instance on the same
    worker (R3); a cancel landing there takes that instance back before it runs."""
    gate: list[asyncio.Event] = []

    async def setup(wq: aw.Workqueue, w: aw.Work) -> None:
        ev = asyncio.Event()
        gate.append(ev)

        async def fn(_w: aw.Work) -> None:
            await ev.wait()

        w.func = fn  # type: ignore[assignment]
        w._state |= 1 << 3  # ASYNC_FN, as Work() sets it for a coroutine function
        assert aw.queue_work(wq, w)
        for _ in range(3):
            await asyncio.sleep(0)
        assert w.busy == aw.WorkBusy.RUNNING
        assert aw.queue_work(wq, w)  # the next instance, pending behind the run

    async def section(wq: aw.Workqueue, w: aw.Work) -> None:
        gate[-1].set()
        await wq.flush()

    _explore(
        lambda mode, n: _run(
            mode, n, setup, lambda wq, w: section(wq, w), aw.cancel_work, async_section=True
        )
    )


def test_handler_cancel_inside_mod_delayed_work_of_the_same_item() -> None:
    """mod_delayed_work steals and re-arms a pending item (its pending bit is cleared and set
    again inside the section): the cancel sees it pending throughout."""
    _explore(
        lambda mode, n: _run(
            mode,
            n,
            _armed,
            lambda wq, w: aw.mod_delayed_work(wq, w, 20.0),  # type: ignore[arg-type]
            aw.cancel_delayed_work,
            delayed=True,
        )
    )


def test_handler_cancel_inside_the_timer_firing() -> None:
    """The timer fires (armed → queued, still pending): the cancel takes it back either way."""

    async def setup(wq: aw.Workqueue, w: aw.Work) -> None:
        assert aw.queue_delayed_work(wq, w, 0.001)  # type: ignore[arg-type]

    async def section(wq: aw.Workqueue, w: aw.Work) -> None:
        deadline = time.monotonic() + 10
        while w.busy == aw.WorkBusy.PENDING and w._state & (1 << 5) and time.monotonic() < deadline:
            await asyncio.sleep(0.001)

    _explore(
        lambda mode, n: _run(
            mode,
            n,
            setup,
            lambda wq, w: section(wq, w),
            aw.cancel_delayed_work,
            delayed=True,
            async_section=True,
        ),
        at_least=1,
    )


def test_signal_storm_cancel_ledger() -> None:
    """Real signals at random moments of a busy loop: every handler call answers (no
    WorkqueueError), and every queued instance either ran once or was cancelled by a True."""
    items = [aw.Work(lambda w: ran.__setitem__(id(w), ran.get(id(w), 0) + 1)) for _ in range(32)]
    ran: dict[int, int] = {}
    queued: dict[int, int] = {}
    cancelled: dict[int, int] = {}
    errors: list[BaseException] = []
    calls = [0]

    async def main() -> None:
        async with aw.alloc_workqueue("storm") as wq:
            i = 0

            def handler(signum: int, frame: object) -> None:
                w = items[calls[0] % len(items)]
                calls[0] += 1
                try:
                    if aw.queue_work(wq, w):
                        queued[id(w)] = queued.get(id(w), 0) + 1
                    w2 = items[(calls[0] * 7) % len(items)]
                    if aw.cancel_work(w2):
                        cancelled[id(w2)] = cancelled.get(id(w2), 0) + 1
                except BaseException as exc:
                    errors.append(exc)

            old = signal.signal(signal.SIGUSR1, handler)
            stop = threading.Event()

            def sender() -> None:
                pid = os.getpid()
                while not stop.is_set():
                    os.kill(pid, signal.SIGUSR1)
                    time.sleep(0.0002)

            t = threading.Thread(target=sender, daemon=True)
            t.start()
            try:
                # 2 s, and on until the handler has run 100 times (a loaded machine delivers
                # fewer: the sender needs the GIL for each kill), 8 s at most
                start = time.monotonic()
                while (t_now := time.monotonic() - start) < 2.0 or (calls[0] < 100 and t_now < 8.0):
                    w = items[i % len(items)]
                    i += 1
                    if aw.queue_work(wq, w):
                        queued[id(w)] = queued.get(id(w), 0) + 1
                    if i % 3 == 0 and aw.cancel_work(items[(i * 5) % len(items)]):
                        x = items[(i * 5) % len(items)]
                        cancelled[id(x)] = cancelled.get(id(x), 0) + 1
                    if i % 64 == 0:
                        time.sleep(0)  # noqa: ASYNC251 - hands the GIL to the sender thread
                        await asyncio.sleep(0)
            finally:
                stop.set()
                t.join()
                signal.signal(signal.SIGUSR1, old)
            await wq.flush()
            for w in items:
                await aw.flush_work(w)
            await wq.flush()
            st = wq.stats()
            assert st.cancelled == sum(cancelled.values())

    asyncio.run(main())
    assert not errors, errors[:3]
    assert calls[0] > 100, calls[0]
    for w in items:
        k = id(w)
        assert ran.get(k, 0) + cancelled.get(k, 0) == queued.get(k, 0), (
            ran.get(k),
            cancelled.get(k),
            queued.get(k),
        )


# -- a shutdown taking the item back in the interrupted section itself ------------------------
#
# Exactly one of the two reports the item: the handler's True (its call is placed before the
# shutdown, which then leaves the item out of its report) or the shutdown's report (placed
# after it: the handler answers False). Never both, never neither.


class _Reports(logging.Handler):
    """The items a shutdown reports as unfinished (R20: each one at DEBUG)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.items: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "did not finish" in record.msg and record.levelno == logging.DEBUG:
            self.items.append(str(record.args[1]))  # type: ignore[index]
        elif "when its event loop closed" in record.msg:
            self.items.append(repr(record.args[1]))  # type: ignore[index]


def _reported(fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    rep = _Reports()
    log = logging.getLogger("aioworkqueue")
    old = log.level
    log.addHandler(rep)
    log.setLevel(logging.DEBUG)
    try:
        return fn(), rep.items
    finally:
        log.removeHandler(rep)
        log.setLevel(old)


def _target(_w: aw.Work) -> None:
    pass


async def _blocker(_w: aw.Work) -> None:
    await asyncio.Event().wait()  # until the shutdown cancels it (given to _cut)


def _cut(wq: aw.Workqueue, work: aw.Work, exc: BaseException) -> None:
    """The exception handler of these queues: the cut blocker is the only error they see."""
    assert isinstance(exc, asyncio.CancelledError), exc


def _answer(op: Callable[[aw.Work], Any], x: aw.Work) -> object:
    """``op(x)``'s answer, an exception counting as its type (compared like an answer)."""
    try:
        return op(x)
    except Exception as exc:
        return type(exc)


class _Around:
    """``with _Around(mode, n, op, x, **at) as got:`` run the section (called or awaited):
    ``op(x)`` runs before it, at its ``n``-th point (``at``: where points count, as ``_Inject``
    takes them), or after it. After the block: ``got.fired`` (False when the section has fewer
    than ``n`` points) and ``got.answer``."""

    def __init__(
        self, mode: str, n: int, op: Callable[[aw.Work], Any], x: aw.Work, **at: Any
    ) -> None:
        self.mode, self.op, self.x = mode, op, x
        self.inj = _Inject(n, lambda: op(x), **at)
        self.fired = mode != "inject"
        self.answer: object = None

    def __enter__(self) -> _Around:
        if self.mode == "before":
            self.answer = _answer(self.op, self.x)
        elif self.mode == "inject":
            self.inj.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.mode == "inject":
            self.inj.__exit__(*exc)
            self.fired, self.answer = self.inj.fired, self.inj.result
        elif self.mode == "after" and exc[0] is None:
            self.answer = _answer(self.op, self.x)


def _final(x: aw.Work) -> tuple[bool, int]:
    """The target's pending bit and disable count at the end (it is enabled again after)."""
    st = x._state
    while x._state >> 12:
        aw.enable_work(x)
    return bool(st & 1), st >> 12


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """What asyncio.Runner.close does first: every task cancelled and run to its end (outside
    the explored sections: the runs it cuts are the cancel tests' business above)."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _shutdown_run(
    mode: str,
    n: int,
    op: Callable[[aw.Work], Any],
    build: _Build,
    section: Callable[[asyncio.Runner, aw.Workqueue], Any],
) -> tuple[Any, ...]:
    """``build`` leaves the target pending on a loop; ``section`` ends it (or the queue)."""
    runner = asyncio.Runner()
    wq, x = runner.run(build())
    name = repr(x)
    _cancel_all_tasks(runner.get_loop())
    got = _Around(mode, n, op, x)

    def run_section() -> None:
        with got:
            section(runner, wq)

    _, items = _reported(run_section)
    runner.close()
    if not got.fired:
        return ("not fired",)
    return ("ok", got.answer, name in items, len(items), *_final(x))


_Build = Callable[[], Awaitable[tuple[aw.Workqueue, aw.Work]]]


def _pending_behind_a_blocker(delayed: bool) -> _Build:
    async def build() -> tuple[aw.Workqueue, aw.Work]:
        wq = aw.alloc_workqueue("sig-end", max_active=1, exception_handler=_cut)
        x: aw.Work = aw.DelayedWork(_target) if delayed else aw.Work(_target)
        b = aw.Work(_blocker)
        assert aw.queue_work(wq, b)
        if delayed:
            assert aw.queue_delayed_work(wq, x, 30.0)  # type: ignore[arg-type]
        else:
            assert aw.queue_work(wq, x)  # behind the blocker: inactive (R7)
        for _ in range(5):
            await asyncio.sleep(0)
        assert b.busy == aw.WorkBusy.RUNNING and x.busy == aw.WorkBusy.PENDING
        return wq, x

    return build


@pytest.mark.parametrize("delayed", [False, True], ids=["inactive", "armed"])
@pytest.mark.parametrize("op", [aw.cancel_work, aw.disable_work], ids=["cancel", "disable"])
def test_handler_call_inside_the_loops_end_taking_the_item_back(
    op: Callable[[aw.Work], bool], delayed: bool
) -> None:
    """The loop ends (``asyncio.Runner.close``: its tasks cancelled, then the take-back of what
    is left, R20) while the item waits behind a running one."""

    def section(runner: asyncio.Runner, wq: aw.Workqueue) -> None:
        runner.close()  # its task cancelling is done in _shutdown_run: this is what is left

    _npoints, orders = _explore(
        lambda mode, n: _shutdown_run(mode, n, op, _pending_behind_a_blocker(delayed), section)
    )
    assert orders == {"before", "after"}, orders


# Where running()'s end takes a deferred instance back: the end of the run it cut (the rest of
# the shutdown's sections are explored by the tests above, and cost 5 ms a point).
_TAKE_BACK = {aw._pool.Pool._end_on_exit.__code__, aw._pool.Pool._finish.__code__}


def _running_exit_run(mode: str, n: int, op: Callable[[aw.Work], Any]) -> tuple[Any, ...]:
    """``running()`` ends while the target runs with its next instance deferred behind the run
    (R3): the shutdown cuts the run and takes that instance back (``Pool._finish``)."""

    async def main() -> tuple[Any, ...]:
        ctx = aw.running(timeout=0)
        await ctx.__aenter__()
        wq = aw.alloc_workqueue(f"sig-exit-{mode}-{n}", exception_handler=_cut)
        x = aw.Work(_blocker)
        assert aw.queue_work(wq, x)
        for _ in range(3):
            await asyncio.sleep(0)
        assert aw.queue_work(wq, x)  # the next instance: a second worker defers it (R3)
        for _ in range(5):
            await asyncio.sleep(0)
        assert x._state & (1 << 7), x._state  # DEFERRED behind the run
        with _Around(mode, n, op, x, within=_TAKE_BACK) as got:
            await ctx.__aexit__(None, None, None)
        if not got.fired:
            return ("not fired",)
        left = [(w is x, state) for w, _wq, state in ctx.unfinished]
        return ("ok", got.answer, sorted(left), *_final(x), wq.stats().cancelled)

    return asyncio.run(main())


@pytest.mark.parametrize("op", [aw.cancel_work, aw.disable_work], ids=["cancel", "disable"])
def test_handler_call_inside_a_shutdown_taking_back_a_deferred_instance(
    op: Callable[[aw.Work], bool],
) -> None:
    """``running()``'s end cuts a run whose next instance waits behind it: the shutdown takes
    that instance back and reports it, or the handler's True does, never both."""
    _npoints, orders = _explore(lambda mode, n: _running_exit_run(mode, n, op))
    assert orders == {"before", "after"}, orders


def _rebind_run(mode: str, n: int, op: Callable[[aw.Work], Any]) -> tuple[Any, ...]:
    """A loop closed without its hooks seeing it (``close`` called on the class): the next
    use of the queue from another loop rebinds it, and reports what the dead loop left."""
    first = asyncio.Runner()
    wq, x = first.run(_pending_behind_a_blocker(False)())
    loop = first.get_loop()
    _cancel_all_tasks(loop)
    type(loop).close(loop)  # past the instance's close(): nothing is taken back yet
    name = repr(x)

    got = _Around(mode, n, op, x, within=_REBIND)

    async def requeue() -> None:
        y = aw.Work(_target)
        with got:
            aw.queue_work(wq, y)
        await aw.flush_work(y)

    with asyncio.Runner() as second:
        _, items = _reported(lambda: second.run(requeue()))
    if not got.fired:
        return ("not fired",)
    return ("ok", got.answer, name in items, len(items), *_final(x))


_REBIND = {aw.Workqueue._abandon.__code__, aw.Workqueue._strand.__code__}


@pytest.mark.parametrize("op", [aw.cancel_work, aw.disable_work], ids=["cancel", "disable"])
def test_handler_call_inside_a_rebind_taking_back_what_a_closed_loop_left(
    op: Callable[[aw.Work], bool], expect_errors: Any
) -> None:
    """The rebind reports the item at ERROR (its loop closed behind our back), or the handler's
    True does: never both."""
    _npoints, orders = _explore(lambda mode, n: _rebind_run(mode, n, op))
    assert orders == {"before", "after"}, orders
    bad = [m for m in expect_errors.messages if "when its event loop closed" not in m]
    assert not bad, bad[:3]


def _runtime_shutdown_run(
    mode: str, n: int, op: Callable[[aw.Work], Any], *, again: bool = False
) -> tuple[Any, ...]:
    """A runtime's shutdown cuts the running blocker and takes back the item queued behind it,
    on the host loop's thread (``Runtime._collect``). With ``again`` the target is the blocker
    itself, queued again while it runs: the cut run is reported whatever the handler does."""

    async def main() -> tuple[Any, ...]:
        rt = aw.Runtime(cpus=1, loop_factory="asyncio")
        await rt.start()
        wq = aw.alloc_workqueue(f"sig-rt-{mode}-{n}", max_active=1, exception_handler=_cut)
        b = aw.Work(_blocker)
        x = b if again else aw.Work(_target)
        assert aw.queue_work(wq, b)
        deadline = time.monotonic() + 10  # it starts on the pool's thread: a bounded wait
        while b.busy != aw.WorkBusy.RUNNING:
            assert time.monotonic() < deadline, "the blocker never started"
            await asyncio.sleep(0.001)
        assert aw.queue_work(wq, x)  # behind the blocker (R7)
        # From the first take-back on (the lists before it are the same for every item).
        start = aw._runtime._take_back.__code__
        with _Around(mode, n, op, x, within=_COLLECT, start=start) as got:
            left = await rt.shutdown(timeout=0)
        if not got.fired:
            return ("not fired",)
        return ("ok", got.answer, sorted((w is x, s) for w, _q, s in left), *_final(x))

    return asyncio.run(main())


_COLLECT = {aw.Runtime._collect.__code__}


@pytest.mark.parametrize("op", [aw.cancel_work, aw.disable_work], ids=["cancel", "disable"])
@pytest.mark.parametrize("again", [False, True], ids=["behind", "running-and-pending"])
def test_handler_call_inside_a_runtime_shutdown_taking_the_item_back(
    op: Callable[[aw.Work], bool], again: bool
) -> None:
    """The shutdown's list of unfinished items has the pending instance, or the handler's True
    does; a run the shutdown cut is in the list either way."""
    _npoints, orders = _explore(lambda mode, n: _runtime_shutdown_run(mode, n, op, again=again))
    assert orders == {"before", "after"}, orders
