"""``aioworkqueue worker MODULE:APP``: worker processes for an App (docs/redis.md, "The command").

One process (``--processes 1``, the default) runs one :class:`Worker` on its own event loop
until SIGTERM or SIGINT; a second signal makes the stop deadline now. With ``--processes N``
this process is a supervisor: it starts N such processes (the same command with
``--processes 1``), forwards SIGTERM and SIGINT to them, reports a child that dies on its own,
restarts none, and exits non-zero if any child failed.

The command's arguments are declared in ``aioworkqueue._cli`` (so ``--help`` needs no redis);
this module is imported only when the subcommand runs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from ._app import App
from ._worker import Worker

__all__ = ("load_app", "run")

#: The environment variable a supervisor sets for its children: its pid. A child whose parent
#: is no longer that process (the supervisor was killed) stops as on SIGTERM.
SUPERVISOR_ENV = "AIOWORKQUEUE_WORKER_SUPERVISOR"

#: How often (s) a child checks that its supervisor is still its parent.
_ORPHAN_CHECK = 1.0


class SpecError(Exception):
    """A MODULE:APP that does not name an App; the message says why."""


def load_app(spec: str) -> App:
    """Import ``MODULE:APP`` and return the App it names (``APP`` may be dotted: ``mod:ns.app``).

    The current directory comes first on ``sys.path``, as for ``python -m``.
    Context: any, at start. Returns: the App. Raises: SpecError with a message for a malformed
    spec, a module that is not there, a missing attribute or an object that is not an App (an
    error raised by the module's own code while it is imported goes through as it is).
    """
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr or ":" in attr:
        raise SpecError(f"expected MODULE:APP (e.g. service:app), got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        # Only the module itself (or a package on its path) missing is the spec's fault; a
        # module that fails to import one of its own dependencies reports that one.
        if e.name is not None and (mod_name == e.name or mod_name.startswith(e.name + ".")):
            raise SpecError(f"no module named {mod_name!r} (from {spec!r})") from None
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SpecError(f"module {mod_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, App):
        raise SpecError(
            f"{spec!r} is {type(obj).__module__}.{type(obj).__qualname__}, "
            "not an aioworkqueue.redis.App"
        )
    return obj


def _queues(app: App, option: str | None) -> list[str]:
    if option is None:
        names = list(app._queues)
        if not names:
            raise SpecError(
                "the app declares no queue (app.workqueue(...)) and --queues names none"
            )
        return names
    names = [q.strip() for q in option.split(",") if q.strip()]
    if not names:
        raise SpecError(f"--queues names no queue: {option!r}")
    return names


def run(args: argparse.Namespace) -> int:
    """Run the ``worker`` subcommand with its parsed ``args``.

    Context: the main thread, no event loop running. Returns: the exit status (0: a clean stop;
    1: a worker failed or left runs to their lease; 2: a bad MODULE:APP or option).
    """
    try:
        app = load_app(args.app)
        queues = _queues(app, args.queues)
        if args.processes < 1:
            raise SpecError(f"--processes must be >= 1, got {args.processes}")
        # Check the numbers here, once, not in each child.
        Worker(
            app,
            queues,
            args.concurrency,
            lease=args.lease,
            stop_timeout=args.stop_timeout,
            exception_handler=None,
            consumer="check",
        )
    except (SpecError, TypeError, ValueError) as e:
        print(f"aioworkqueue worker: error: {e}", file=sys.stderr)
        return 2
    if args.processes > 1:
        return _supervise(args, queues)
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print(
                "aioworkqueue worker: error: --loop uvloop: uvloop is not installed",
                file=sys.stderr,
            )
            return 2
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_serve(app, queues, args))


async def _serve(app: App, queues: list[str], args: argparse.Namespace) -> int:
    """One worker until SIGTERM / SIGINT (a second one: the stop deadline is now)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    worker = Worker(
        app,
        queues,
        args.concurrency,
        lease=args.lease,
        stop_timeout=args.stop_timeout,
        exception_handler=None,
        consumer=None,
    )

    def on_signal() -> None:
        if stop.is_set():
            worker.stop_now()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    # A supervisor starts its children with these signals blocked (see _supervise): one sent
    # while this process was still importing waited, and is delivered to on_signal now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGTERM, signal.SIGINT))
    watch = None
    if (parent := os.environ.get(SUPERVISOR_ENV)) is not None:
        watch = asyncio.create_task(_orphan_watch(int(parent), stop))
    try:
        async with worker:
            print(
                f"aioworkqueue worker {worker.consumer}: serving {', '.join(queues)} "
                f"(concurrency {worker.concurrency}, lease {worker.lease:g}s)",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
    except Exception as e:  # the server unreachable at start, say: one line, not a traceback
        print(f"aioworkqueue worker: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        if watch is not None:
            watch.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await app.aclose()
    print(
        f"aioworkqueue worker {worker.consumer}: stopped: started {worker.started}, "
        f"redelivered {worker.redelivered}, handed back {worker.handed_back} "
        f"(+{worker.handed_back_unstarted} unstarted), left to the lease {worker.left}",
        file=sys.stderr,
        flush=True,
    )
    return 1 if worker.left else 0


async def _orphan_watch(parent: int, stop: asyncio.Event) -> None:
    # A supervisor killed with SIGKILL forwards nothing: its children would serve on forever.
    # (a poll: no event says that a parent died; an exit of the parent changes getppid())
    while True:
        await asyncio.sleep(_ORPHAN_CHECK)
        if os.getppid() != parent:
            break
    print("aioworkqueue worker: the supervisor is gone; stopping", file=sys.stderr, flush=True)
    stop.set()


def _child_argv(args: argparse.Namespace, queues: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "aioworkqueue",
        "worker",
        args.app,
        "--queues",
        ",".join(queues),
        "--concurrency",
        str(args.concurrency),
        "--processes",
        "1",
        "--lease",
        repr(args.lease),
        "--stop-timeout",
        repr(args.stop_timeout),
        "--loop",
        args.loop,
    ]


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _supervise(args: argparse.Namespace, queues: list[str]) -> int:
    """Start ``args.processes`` workers, forward signals, wait for all; restart none."""
    n = args.processes
    argv = _child_argv(args, queues)
    env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
    children: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}
    stopping: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        for _i, p in children.values():
            if p.returncode is None:
                try:
                    p.send_signal(signum)
                except ProcessLookupError:  # it has just exited: reaped below
                    pass

    sigs = (signal.SIGTERM, signal.SIGINT)
    old = {s: signal.signal(s, forward) for s in sigs}
    failed = 0
    try:
        # The children inherit a blocked SIGTERM / SIGINT across exec and unblock them once
        # their handlers are in place: a signal forwarded while a child still imports would
        # otherwise kill it (the default action) instead of stopping it. Blocked here too
        # meanwhile, so a signal that comes during the spawns is forwarded to all of them.
        signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
        try:
            for i in range(1, n + 1):
                # Its own process group: a terminal's Ctrl-C reaches only this process, which
                # forwards it once (the child would get it twice otherwise, and take the second
                # for "now").
                p = subprocess.Popen(argv, env=env, process_group=0)
                children[p.pid] = (i, p)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)
        print(
            f"aioworkqueue worker: supervising {len(children)} worker process(es): "
            f"{', '.join(str(pid) for pid in children)} (a process that dies is not restarted)",
            file=sys.stderr,
            flush=True,
        )
        running = len(children)
        while running:
            pid, wstatus = os.waitpid(-1, 0)  # PEP 475: a signal's handler runs, the wait goes on
            on_its_own = not stopping
            if pid not in children:
                continue
            i, p = children[pid]
            status = os.waitstatus_to_exitcode(wstatus)
            p.returncode = status  # reaped here: Popen must not wait for it again
            running -= 1
            if status != 0:
                failed += 1
            if status != 0 or on_its_own:
                print(
                    f"aioworkqueue worker: worker process {pid} ({i} of {n}) {_describe(status)}"
                    f"{' on its own' if on_its_own else ''}; not restarted, {running} left",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 1 if failed else 0
