"""Who awaits whom: is a task part of a work item's run because the item awaits it?

R15 says a barrier must not wait for its own caller. Inside the item's own task that is easy to
see (``current_worker_work``). A work item may also await a barrier *in another task* —
``asyncio.gather(flush_workqueue(wq))``, ``asyncio.wait_for`` on 3.11 (which wraps the call in a
task), ``create_task(...)`` then ``await``, a ``TaskGroup`` — and wait for that task: the same
deadlock one task further away::

    worker task (runs item W)                 subtask
    ─────────────────────────                 ───────
    await gather(flush_workqueue(wq))
      waits for the subtask  ───────────▶     flush_workqueue(wq)
                                                waits for W's run to end  ──▶ never

A task spawned by W and *not* awaited by it (fire and forget) may flush W's queue: it waits for W
to end and W does not wait for it. So what matters is the await graph as it stands when the
barrier is called: does the worker's task, transitively, wait for the caller's task?

Asyncio keeps no such graph before 3.14, so :func:`awaits` rebuilds it from what futures hold:
a task waits on ``_fut_waiter``; ``gather``'s future on its ``_children``; a plain future (what
``wait_for``, ``wait``, ``shield`` and ``TaskGroup`` park on) is completed by done-callbacks of
other tasks, found by looking at what each task's callbacks reference (``functools.partial``
arguments, a bound method's object and its attributes, closure cells). It is a best-effort walk of
the loop's tasks, O(tasks), and runs only when a barrier is called from a task other than the
worker's own while that worker runs an item — never on the hot path.

Owner: none; reads the calling loop's tasks on its own thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from typing import Any

__all__ = ("awaits",)


def _referenced(cb: Any) -> Iterator[Any]:
    """What a done-callback may complete when it runs."""
    while isinstance(cb, functools.partial):
        yield from cb.args
        yield from cb.keywords.values()
        cb = cb.func
    owner = getattr(cb, "__self__", None)
    if owner is not None:
        yield owner
        attrs = getattr(owner, "__dict__", None)
        if attrs:
            yield from attrs.values()
    for cell in getattr(cb, "__closure__", None) or ():
        try:
            yield cell.cell_contents
        except ValueError:  # an empty cell
            pass


def _completers(loop: asyncio.AbstractEventLoop) -> dict[int, list[asyncio.Task[Any]]]:
    """id(future) -> tasks whose completion runs a callback that references that future."""
    found: dict[int, list[asyncio.Task[Any]]] = {}
    for task in asyncio.all_tasks(loop):
        for entry in getattr(task, "_callbacks", None) or ():
            cb = entry[0] if isinstance(entry, tuple) else entry
            for obj in _referenced(cb):
                if isinstance(obj, asyncio.Future):
                    found.setdefault(id(obj), []).append(task)
    return found


def awaits(root: asyncio.Task[Any], target: asyncio.Task[Any]) -> bool:
    """Return True if ``root`` is waiting, directly or through other tasks, for ``target``.

    Context: on the loop thread of both tasks.
    """
    completers: dict[int, list[asyncio.Task[Any]]] | None = None
    seen: set[int] = set()
    stack: list[Any] = [root]
    while stack:
        fut = stack.pop()
        if fut is target:
            return True
        if id(fut) in seen:
            continue
        seen.add(id(fut))
        if isinstance(fut, asyncio.Task):
            waiter = fut._fut_waiter  # type: ignore[attr-defined]
            if waiter is not None:
                stack.append(waiter)
            continue
        children = getattr(fut, "_children", None)  # asyncio.gather's future
        if children:
            stack.extend(children)
        if completers is None:
            completers = _completers(root.get_loop())
        stack.extend(completers.get(id(fut), ()))
    return False
