"""Helpers shared by the reliability tests: hang guards, thread checks, a host loop in a thread.

Waits on other threads poll a predicate with a generous limit that only guards against a hang;
no wall-clock sleep ever decides an outcome.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

try:
    import uvloop
except ImportError:  # pragma: no cover - platforms without uvloop
    uvloop = None  # type: ignore[assignment]

T = TypeVar("T")

#: Hang guard for every wait on another thread (never reached when the library works).
GUARD = 15.0

#: The pool loop kinds a Runtime can use here.
LOOP_KINDS = ["asyncio"] + (["uvloop"] if uvloop is not None else [])


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        assert uvloop is not None
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def runtime_threads() -> list[str]:
    """Names of the threads a Runtime starts (pool loops, watchdog) that are alive now."""
    return sorted(
        t.name for t in threading.enumerate() if t.name.startswith(("aiowq/", "aiowq-watchdog"))
    )


async def wait_until(pred: Callable[[], bool], what: str, limit: float = GUARD) -> None:
    """Poll ``pred`` without blocking the loop; fail after ``limit`` seconds (a hang guard)."""
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await asyncio.sleep(0.001)


def wait_until_sync(pred: Callable[[], bool], what: str, limit: float = GUARD) -> None:
    """``wait_until`` for a plain thread."""
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        time.sleep(0.0002)


async def guarded(aw_: Awaitable[T], what: str, limit: float = GUARD) -> T:
    """Await with a hang guard that fails the test instead of hanging."""
    try:
        async with asyncio.timeout(limit):
            return await aw_
    except TimeoutError:
        raise AssertionError(f"{what} did not finish within {limit}s") from None


class HostLoop:
    """An event loop running in its own thread: the "host" of a Runtime driven from a plain
    (hypothesis) test thread. ``call`` runs a coroutine there and waits for its result."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.loop = new_loop(kind)
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name=f"host-{kind}", daemon=True)
        self.thread.start()
        self._ready.wait(GUARD)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], limit: float = GUARD) -> T:
        fut = self.submit(coro)
        try:
            return fut.result(limit)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise AssertionError(f"host call did not finish within {limit}s") from None

    def close(self) -> None:
        async def cancel_all() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.call(cancel_all(), 5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(GUARD)
            self.loop.close()


class Producer:
    """A plain thread that makes calls handed to it, one at a time, and hands back the result
    (or the exception): a foreign-thread caller whose calls are still serialised."""

    def __init__(self, name: str) -> None:
        self._jobs: list[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = []
        self._cv = threading.Condition()
        self._stop = False
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._stop:
                    self._cv.wait()
                if self._stop and not self._jobs:
                    return
                fn, fut = self._jobs.pop(0)
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

    def call(self, fn: Callable[[], T], limit: float = GUARD) -> T:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cv:
            self._jobs.append((fn, fut))
            self._cv.notify()
        return fut.result(limit)

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self.thread.join(GUARD)
