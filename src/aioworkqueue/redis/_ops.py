"""The operations of the Redis backend, as coroutines (docs/redis.md, "The scripts").

Each one that a rule is about is one script call, so no interleaving of clients splits it; the
waits (flushes, drain, cancel_sync) re-check a script's answer after each message on the
queue's ``done`` channel, or every 100 ms when a message was lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.exceptions import ResponseError

from aioworkqueue import (
    WorkBusy,
    WorkqueueDestroyedError,
    WorkqueueDrainingError,
    WorkqueueFullError,
)

from . import _app
from ._app import RUNNING_IN, RemoteWork, RemoteWorkqueue, delay_ms

#: The fallback re-check of every wait, for a lost ``done`` message (seconds).
POLL = 0.1


def _check_wq(call: str, wq: object) -> RemoteWorkqueue:
    if not isinstance(wq, RemoteWorkqueue):
        raise TypeError(f"{call}: expected a RemoteWorkqueue (app.workqueue()), got {wq!r}")
    return wq


def _check_work(call: str, work: object) -> RemoteWork:
    if not isinstance(work, RemoteWork):
        raise TypeError(f"{call}: expected a RemoteWork (app.work()), got {work!r}")
    return work


def _chained(wq: RemoteWorkqueue) -> str:
    return "1" if RUNNING_IN.get() == (wq.app.prefix, wq.name) else "0"


def _syncing(wq: RemoteWorkqueue, work: RemoteWork) -> bool:
    """Whether a ``cancel_work_sync`` of ``work`` on ``wq`` from this App is in progress (R11)."""
    return (wq.name, work.key) in wq.app._syncing


def _raise_mapped(call: str, wq: RemoteWorkqueue, work: RemoteWork | str, e: ResponseError) -> None:
    msg = str(e)
    which = f"work {work.key!r}" if isinstance(work, RemoteWork) else work
    what = f"workqueue {wq.name!r} (prefix {wq.app.prefix!r}), {which}"
    if "AWQ destroyed" in msg:
        raise WorkqueueDestroyedError(f"{call}: {what}: the workqueue is destroyed") from None
    if "AWQ draining" in msg:
        raise WorkqueueDrainingError(
            f"{call}: {what}: the workqueue is draining; only its own items may queue on it"
        ) from None
    if "AWQ full" in msg:
        raise WorkqueueFullError(
            f"{call}: {what}: the workqueue is full (max_pending {wq.max_pending})"
        ) from None
    raise e


async def queue_work(wq: RemoteWorkqueue, work: RemoteWork) -> bool:
    """Queue ``work`` on ``wq`` unless it is pending already (R1).

    Context: a coroutine (one script). Returns: True if it was queued, False if it was pending
    (nothing changed). Raises: TypeError for wrong arguments, WorkqueueDestroyedError,
    WorkqueueDrainingError (draining and not called from one of its items), WorkqueueFullError
    (``max_pending`` reached, R21).
    """
    wq = _check_wq("queue_work", wq)
    work = _check_work("queue_work", work)
    if _syncing(wq, work):
        return False  # R11: this App's cancel_work_sync of it is waiting
    try:
        r = await wq.call("queue", work.key, work.func_name, work.args, _chained(wq))
    except ResponseError as e:
        _raise_mapped("queue_work", wq, work, e)
    work.workqueue = wq
    return bool(r)


async def queue_work_many(wq: RemoteWorkqueue, works: Iterable[RemoteWork]) -> list[bool]:
    """Queue each of ``works`` on ``wq`` as :func:`queue_work` would, in one script call.

    R1 holds per item, in order: a work already pending, or whose key came earlier in the same
    batch, answers False and changes nothing. The batch is one critical section: the queue's
    state and ``max_pending`` are checked for the whole of it, and when either refuses nothing
    is queued (so ``max_pending`` counts every new item of the batch). The server runs nothing
    else while the script runs, so split batches of many thousands.
    Context: a coroutine (one script; none for an empty batch, or one whose works all
    wait for this App's ``cancel_work_sync``, R11). Returns: one bool per work, in
    order. Raises: TypeError for wrong arguments, WorkqueueDestroyedError,
    WorkqueueDrainingError, WorkqueueFullError, as :func:`queue_work` but for the whole batch.
    """
    wq = _check_wq("queue_work_many", wq)
    if isinstance(works, RemoteWork):
        raise TypeError("queue_work_many: expected an iterable of RemoteWork, got one RemoteWork")
    given = [_check_work("queue_work_many", w) for w in works]
    sent = [not _syncing(wq, w) for w in given]  # R11: the others answer False
    items = [w for w, s in zip(given, sent, strict=True) if s]
    if not items:
        return [False] * len(given)
    args: list[str | bytes] = [_chained(wq)]
    for w in items:
        args += (w.key, w.func_name, w.args)
    try:
        r = await wq.call("queue_many", *args)
    except ResponseError as e:
        _raise_mapped("queue_work_many", wq, f"a batch of {len(items)}", e)
    for w in items:
        w.workqueue = wq
    answers = iter(r)
    return [bool(next(answers)) if s else False for s in sent]


async def queue_delayed_work(wq: RemoteWorkqueue, work: RemoteWork, delay: float) -> bool:
    """Queue ``work`` on ``wq`` once ``delay`` seconds have passed on the server's clock (R8).

    A ``delay`` of 0 queues at once. Context: a coroutine (one script). Returns: True if it was
    armed (or queued), False if it was pending. Raises: as :func:`queue_work`, and TypeError /
    ValueError for a delay that is not a finite number >= 0.
    """
    wq = _check_wq("queue_delayed_work", wq)
    work = _check_work("queue_delayed_work", work)
    ms = delay_ms("queue_delayed_work", delay, work)
    if _syncing(wq, work):
        return False  # R11: this App's cancel_work_sync of it is waiting
    if ms == 0:
        return await queue_work(wq, work)
    try:
        r = await wq.call("queue_delayed", work.key, work.func_name, work.args, ms, _chained(wq))
    except ResponseError as e:
        _raise_mapped("queue_delayed_work", wq, work, e)
    work.workqueue = wq
    return bool(r)


async def mod_delayed_work(wq: RemoteWorkqueue, work: RemoteWork, delay: float) -> bool:
    """Move the due time of pending ``work`` to now + ``delay``, or arm an idle one (R9).

    Context: a coroutine (one script). Returns: True if it was pending (armed, or queued and
    not started), False if it was idle and is armed now. Raises: as :func:`queue_delayed_work`.
    """
    wq = _check_wq("mod_delayed_work", wq)
    work = _check_work("mod_delayed_work", work)
    ms = delay_ms("mod_delayed_work", delay, work)
    if _syncing(wq, work):
        return False  # R11: this App's cancel_work_sync of it is waiting
    try:
        r = await wq.call("mod_delayed", work.key, work.func_name, work.args, ms, _chained(wq))
    except ResponseError as e:
        _raise_mapped("mod_delayed_work", wq, work, e)
    work.workqueue = wq
    return bool(r)


async def cancel_work(work: RemoteWork) -> bool:
    """Take pending ``work`` back: off the stream, or its timer disarmed (R10).

    It does not wait for a run in progress. Context: a coroutine (one script). Returns: True if
    it was pending, False otherwise. Raises: TypeError for a wrong argument.
    """
    work = _check_work("cancel_work", work)
    wq = work.workqueue
    if wq is None:
        return False
    return bool(await wq.call("cancel", work.key))


async def _wait_until(wq: RemoteWorkqueue, done: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``done()`` answers True, re-checking on each ``done`` message of ``wq``."""
    ps = wq.app.client.pubsub()
    try:
        await ps.subscribe(wq.keys.done)  # before the first check: no message falls between
        while not await done():
            if await ps.get_message(ignore_subscribe_messages=True, timeout=POLL) is None:
                continue
            # Every message that came during the check is answered by one check, not one each:
            # busy workers publish once per finish batch, and a check per message would cost
            # the server and this client as much as the finishes themselves.
            while await ps.get_message(ignore_subscribe_messages=True, timeout=0) is not None:
                pass
    finally:
        await ps.aclose()  # type: ignore[no-untyped-call]


async def _entries_gone(wq: RemoteWorkqueue, ids: list[Any]) -> None:
    async def gone() -> bool:
        return int(await wq.call("entries_left", *ids)) == 0

    await _wait_until(wq, gone)


async def flush_work(work: RemoteWork) -> bool:
    """Wait until the instances of ``work`` pending or running at the call have finished (R12).

    Context: a coroutine. Returns: True if it had to wait, False if the item was idle (or only
    armed: a timer that has not fired is not queued yet).
    Raises: TypeError for a wrong argument.
    """
    work = _check_work("flush_work", work)
    wq = work.workqueue
    if wq is None:
        return False
    ids = list(await wq.call("work_ids", work.key))
    if not ids:
        return False
    await _entries_gone(wq, ids)
    return True


async def cancel_work_sync(work: RemoteWork) -> bool:
    """Cancel ``work`` as :func:`cancel_work`, then wait until a run in progress has ended (R11).

    Context: a coroutine. Returns: True if it was pending. Raises: TypeError for a wrong
    argument. While it waits, ``queue_*`` of the item from the same App answer False (R11);
    unlike in one process, other clients may queue it again meanwhile (see docs/redis.md).
    """
    work = _check_work("cancel_work_sync", work)
    wq = work.workqueue
    if wq is None:
        return False
    mark = (wq.name, work.key)
    syncing = wq.app._syncing
    syncing[mark] = syncing.get(mark, 0) + 1  # before the cancel: no queue_* of ours slips in
    try:
        was = bool(await wq.call("cancel", work.key))
        ids = list(await wq.call("work_ids", work.key))
        if ids:
            await _entries_gone(wq, ids[:1])  # the running one (a pending one was just cancelled)
    finally:
        if syncing[mark] == 1:
            del syncing[mark]
        else:
            syncing[mark] -= 1
    return was


async def work_pending(work: RemoteWork) -> bool:
    """Return whether ``work`` is pending (queued or armed) in the server.

    Context: a coroutine (one script). Returns: the pending bit (R1).
    Raises: TypeError for a wrong argument.
    """
    return bool(await work_busy(work) & WorkBusy.PENDING)


async def work_busy(work: RemoteWork) -> WorkBusy:
    """Return the :class:`aioworkqueue.WorkBusy` flags of ``work`` in the server.

    Context: a coroutine (one script). Returns: PENDING and/or RUNNING (a run whose lease has
    expired does not count). Raises: TypeError for a wrong argument.
    """
    work = _check_work("work_busy", work)
    wq = work.workqueue
    if wq is None:
        return WorkBusy(0)
    p, r = await wq.call("busy", work.key)
    return WorkBusy((WorkBusy.PENDING if p else 0) | (WorkBusy.RUNNING if r else 0))


async def flush_workqueue(wq: RemoteWorkqueue) -> None:
    """Wait for every item queued on ``wq`` before the call (R13); not for later ones or timers.

    Context: a coroutine. Raises: TypeError for a wrong argument.
    """
    wq = _check_wq("flush_workqueue", wq)
    barrier = await wq.call("barrier")

    async def done() -> bool:
        return bool(await wq.call("barrier_done", barrier))

    await _wait_until(wq, done)


async def drain_workqueue(wq: RemoteWorkqueue) -> None:
    """Wait until ``wq`` has no queued item left; meanwhile only its own items may queue (R14).

    Armed timers are not waited for (docs/spec.md, "Drain and timers").
    Context: a coroutine. Raises: TypeError for a wrong argument, WorkqueueDestroyedError for a
    destroyed queue.
    """
    wq = _check_wq("drain_workqueue", wq)
    old = await wq.call("set_state", "draining")
    if old == b"destroyed":
        raise WorkqueueDestroyedError(f"drain_workqueue: workqueue {wq.name!r} is destroyed")
    try:
        await _drained(wq)
    finally:
        await wq.call("set_state", "live")


async def _drained(wq: RemoteWorkqueue) -> None:
    async def empty() -> bool:
        return int(await wq.call("stream_len")) == 0

    await _wait_until(wq, empty)


async def destroy_workqueue(wq: RemoteWorkqueue) -> None:
    """Fire ``wq``'s armed items at once, drain it, and refuse all queueing from then on (R14).

    Destroying it again returns at once. Context: a coroutine. Raises: TypeError for a wrong
    argument.
    """
    wq = _check_wq("destroy_workqueue", wq)
    old = await wq.call("set_state", "draining")
    if old == b"destroyed":
        return
    await wq.call("promote", "1")
    await _drained(wq)
    await wq.call("set_state", "destroyed")


def _fill_forms() -> None:
    f = _app.FORMS
    f.queue_work = queue_work
    f.queue_work_many = queue_work_many
    f.queue_delayed_work = queue_delayed_work
    f.mod_delayed_work = mod_delayed_work
    f.cancel_work = cancel_work
    f.cancel_work_sync = cancel_work_sync
    f.flush_work = flush_work
    f.flush_workqueue = flush_workqueue
    f.drain_workqueue = drain_workqueue
    f.destroy_workqueue = destroy_workqueue
    f.work_pending = work_pending
    f.work_busy = work_busy


_fill_forms()
