"""The live monitor: ``Runtime(monitor=ADDRESS)`` serves statistics, ``aioworkqueue monitor``
prints them as the kernel's ``tools/workqueue/wq_monitor.py`` does.

The table has the kernel tool's columns and ours; the CPU time and latency columns (``CPUtime``
in seconds, ``p50ms``/``p99ms``) come from ``enable_timing()`` and read ``-`` when the process does
not time its queues. ``--rich`` draws the table with rich (the ``monitor`` extra), redrawn in place
on a terminal; it is a flag, not automatic, so that the output of the command never depends on
which optional packages happen to be installed.

The server runs in its own thread, not on a pool loop, so it still answers when a loop is stuck —
when it is needed most. The protocol is one JSON document per connection: the client connects,
the server writes a snapshot and closes. The thread serves every client with non-blocking sockets:
a client that does not read is dropped after ``send_timeout`` and never delays the other clients
or the server's ``stop()``. ADDRESS is a Unix socket path or ``127.0.0.1:PORT`` (loopback only;
port 0 picks a free one, see ``Runtime.monitor_address``). A Unix socket is created owner-only
(0600), and the only thing ever removed to make room for it is a stale socket (nothing listening).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import selectors
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any, TextIO

__all__ = ("MISSING_RICH", "MonitorServer", "parse_address", "run_monitor")

_log = logging.getLogger("aioworkqueue")


def _count(v: Any) -> str:
    return "-" if v is None else str(v)


def _seconds(v: Any) -> str:
    if v is None:
        return "-"  # timing was never on for this queue
    # Microseconds while they matter; eight characters at most below 10,000 s.
    return f"{v:.6f}" if v < 10 else f"{v:.3f}" if v < 10_000 else f"{v:.0f}"


def _millis(v: Any) -> str:
    if v is None:
        return "-"  # timing never on, or nothing started since
    ms = v * 1000.0
    return f"{ms:.3f}" if ms < 1000 else f"{ms:.0f}"


#: (title, key in the JSON document, format): the kernel's wq_monitor columns (total, infl,
#: CPUtime, CPUhog, mayday, rescued) and ours. CPUtime is in seconds, p50ms/p99ms are the
#: queue-to-start latency percentiles in milliseconds; all three are '-' unless the process
#: runs with aioworkqueue.enable_timing().
_COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("total", "queued", _count),
    ("infl", "in_flight", _count),
    ("pend", "pending", _count),
    ("run", "running", _count),
    ("armed", "armed", _count),
    ("CPUtime", "cpu_time", _seconds),
    ("CPUhog", "cpu_hogs", _count),
    ("p50ms", "latency_p50", _millis),
    ("p99ms", "latency_p99", _millis),
    ("failed", "failed", _count),
    ("cancel", "cancelled", _count),
    ("maxact", "max_active_hits", _count),
    ("mayday", "mayday", _count),
    ("rescued", "rescued", _count),
)

_BACKLOG = 64  # connections waiting for accept(); a burst of monitors must not be refused
_FILE_WIDTH = 240  # the rich table's width when it is not drawn on a terminal

#: What ``--rich`` says when rich is not installed.
MISSING_RICH = (
    "--rich needs the rich package, which is not installed here; install the monitor extra "
    "(pip install 'aioworkqueue[monitor]') or run without --rich for the plain table"
)


def parse_address(address: str) -> tuple[int, Any]:
    """Return (family, sockaddr) for ``address``; raise ValueError naming what is wrong."""
    if not isinstance(address, str) or not address:
        raise ValueError(
            f"monitor address must be a Unix socket path or 127.0.0.1:PORT, got {address!r}"
        )
    if address.startswith(("/", ".")) or os.sep in address:
        return socket.AF_UNIX, address
    host, sep, port = address.rpartition(":")
    if not sep or host not in ("127.0.0.1", "localhost") or not port.isdigit():
        raise ValueError(
            f"monitor address {address!r}: use a Unix socket path or 127.0.0.1:PORT (loopback only)"
        )
    return socket.AF_INET, ("127.0.0.1", int(port))


class MonitorServer:
    """Serves ``snapshot()`` as JSON to every connection, from its own thread.

    One thread multiplexes every client with non-blocking sockets: a client that connects and
    never reads holds only its own buffer, never the thread, and is dropped once it has not taken
    its document within ``send_timeout`` seconds. At most ``max_clients`` are served at once;
    beyond that a new connection is closed at once (the monitor must not become the way to
    exhaust the process's memory or descriptors).

    Owner: the server thread, except ``_stop`` and ``_wake`` (any thread).
    """

    def __init__(
        self,
        address: str,
        snapshot: Callable[[], dict[str, Any]],
        *,
        send_timeout: float = 2.0,
        max_clients: int = 32,
    ) -> None:
        family, sockaddr = parse_address(address)
        # I, all but the socket's state (T: the server thread, after start()).
        self._snapshot = snapshot
        self._send_timeout = send_timeout
        self._max_clients = max_clients
        self._path: str | None = None
        self._inode: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket file we made
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family == socket.AF_UNIX:
                self._bind_unix(sockaddr)
            else:
                self._sock.bind(sockaddr)
            self._sock.listen(_BACKLOG)
            self._sock.setblocking(False)
            bound = self._sock.getsockname()
        except BaseException:
            self._sock.close()
            raise
        #: Where it listens (the real port when asked for port 0).
        self.address: str = bound if isinstance(bound, str) else f"{bound[0]}:{bound[1]}"
        self._stop = threading.Event()
        self._wake_r, self._wake = socket.socketpair()  # stop() writes one byte: the thread wakes
        self._thread = threading.Thread(target=self._serve, name="aiowq-monitor", daemon=True)

    def _bind_unix(self, path: str) -> None:
        _clear_stale_socket(path)
        # The file must be 0600 whatever the umask, and nobody else may connect in between.
        # os.umask() would do it but is process-wide: another thread creating a file at that
        # moment would get our mask. Instead: on Linux, bind() creates the file with the mode of
        # the socket's inode minus the umask, so fchmod() before bind() never lets it be more
        # than 0600; chmod() after bind() makes it exactly 0600 (a umask of 0o200 would leave
        # 0400 and lock the owner out). The window between bind() and chmod() is harmless:
        # a socket that is not listening yet refuses every connect(), so the first client can
        # arrive only after listen(), when the mode is already right.
        try:
            os.fchmod(self._sock.fileno(), 0o600)
        except OSError:
            pass  # not Linux: chmod() before listen() below still closes the window
        self._sock.bind(path)
        self._path = path
        os.chmod(path, 0o600)
        st = os.stat(path)
        self._inode = (st.st_dev, st.st_ino)

    def start(self) -> None:
        """Start serving. Context: any thread, once."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, drop every client, remove the socket file. Returns promptly: the thread
        waits for nothing but the select() that this call wakes. Context: any thread but the
        server's."""
        self._stop.set()
        try:
            self._wake.send(b"x")
        except OSError:
            pass  # its buffer is full: the thread is being woken already
        if self._thread.is_alive():
            self._thread.join()
        self._sock.close()
        self._wake.close()
        self._wake_r.close()
        if self._path is not None and self._inode is not None:
            try:
                st = os.lstat(self._path)
            except FileNotFoundError:
                return
            # Only our own socket file: if it was replaced (another server that took over a path
            # we left, say), it is not ours to remove.
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self._path)

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        clients: dict[socket.socket, tuple[memoryview, float]] = {}  # conn -> (unsent, deadline)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                timeout = min((d for _, d in clients.values()), default=now + 1.0) - now
                for key, _ in sel.select(max(0.0, timeout)):
                    if key.fileobj is self._sock:
                        self._accept(sel, clients)
                    elif key.fileobj is self._wake_r:
                        pass  # stop() was called; the loop test ends it
                    else:
                        conn = key.fileobj
                        assert isinstance(conn, socket.socket)
                        self._send(sel, clients, conn)
                now = time.monotonic()
                for conn in [c for c, (_, d) in clients.items() if d <= now]:
                    self._drop(sel, clients, conn)  # too slow a reader: it holds others' share
        finally:
            for conn in list(clients):
                self._drop(sel, clients, conn)
            sel.close()

    def _accept(
        self, sel: selectors.BaseSelector, clients: dict[socket.socket, tuple[memoryview, float]]
    ) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError:
            return  # the client went away before we took it (or a spurious wake-up)
        if len(clients) >= self._max_clients:
            conn.close()
            return
        try:
            data = json.dumps(self._snapshot()).encode() + b"\n"
        except Exception:
            conn.close()
            # The monitor goes on serving: the next snapshot may work, and it is most wanted
            # when something is already wrong.
            _log.exception("monitor %s: taking the statistics snapshot failed", self.address)
            return
        conn.setblocking(False)
        clients[conn] = (memoryview(data), time.monotonic() + self._send_timeout)
        sel.register(conn, selectors.EVENT_WRITE)
        self._send(sel, clients, conn)  # most documents fit the socket buffer: done at once

    def _send(
        self,
        sel: selectors.BaseSelector,
        clients: dict[socket.socket, tuple[memoryview, float]],
        conn: socket.socket,
    ) -> None:
        unsent, deadline = clients[conn]
        try:
            sent = conn.send(unsent)
        except BlockingIOError:
            return
        except OSError:
            self._drop(sel, clients, conn)  # the client went away
            return
        if sent == len(unsent):
            self._drop(sel, clients, conn)  # done: closing is the end of the document
        else:
            clients[conn] = (unsent[sent:], deadline)

    @staticmethod
    def _drop(
        sel: selectors.BaseSelector,
        clients: dict[socket.socket, tuple[memoryview, float]],
        conn: socket.socket,
    ) -> None:
        del clients[conn]
        sel.unregister(conn)
        conn.close()


def _clear_stale_socket(path: str) -> None:
    """Make way for a new socket at ``path``: remove a stale socket file, and nothing else.

    Context: the thread that creates the server. Raises: OSError (EADDRINUSE) naming the path
    when a server answers there; FileExistsError when the path is not a socket at all.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(
            errno.EEXIST,
            f"monitor: {path!r} exists and is not a socket; not removing it "
            f"(choose another monitor address)",
            path,
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # nothing listens: a socket left behind by a process that died
            return
        except FileNotFoundError:
            return  # removed meanwhile: the path is free
        except OSError as exc:
            raise OSError(
                errno.EADDRINUSE,
                f"monitor: cannot tell whether the socket {path!r} is in use ({exc}); "
                f"not removing it",
                path,
            ) from exc
    raise OSError(
        errno.EADDRINUSE,
        f"monitor: another server is listening on {path!r}; not taking it over "
        f"(stop it or choose another monitor address)",
        path,
    )


def runtime_snapshot(rt: Any) -> dict[str, Any]:
    """The JSON document a runtime's monitor serves."""
    st = rt.stats()
    return {
        "pid": os.getpid(),
        "time": time.time(),
        "pools": [asdict(p) for p in st.pools],
        "unbound_waiting": st.unbound_waiting,
        "workqueues": [asdict(q) for q in st.workqueues],
    }


def _fetch(address: str) -> dict[str, Any]:
    family, sockaddr = parse_address(address)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5.0)
        s.connect(sockaddr)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    doc: dict[str, Any] = json.loads(b"".join(chunks))
    return doc


def _rows(doc: dict[str, Any], pattern: re.Pattern[str] | None) -> list[dict[str, Any]]:
    return [q for q in doc["workqueues"] if pattern is None or pattern.search(q["name"])]


def _cell(q: dict[str, Any], key: str, fmt: Callable[[Any], str]) -> str:
    return fmt(q.get(key))  # a process of an older version may not report every key


def _pools_line(doc: dict[str, Any]) -> str:
    pools = " ".join(f"cpu{p['cpu']}:{p['running']}/{p['workers']}" for p in doc["pools"])
    return f"pools (running/workers): {pools}  unbound waiting: {doc['unbound_waiting']}"


def _table(doc: dict[str, Any], pattern: re.Pattern[str] | None) -> str:
    rows = _rows(doc, pattern)
    width = max([24] + [len(q["name"]) for q in rows])
    head = f"{'':<{width}} " + " ".join(f"{title:>8}" for title, _, _ in _COLUMNS)
    lines = [head]
    for q in rows:
        cells = " ".join(f"{_cell(q, key, fmt):>8}" for _, key, fmt in _COLUMNS)
        lines.append(f"{q['name']:<{width}} {cells}")
    lines.append(_pools_line(doc))
    return "\n".join(lines)


def _rich_table(doc: dict[str, Any], pattern: re.Pattern[str] | None, address: str) -> Any:
    from rich.table import Table

    stamp = time.strftime("%H:%M:%S", time.localtime(doc.get("time", time.time())))
    table = Table(
        title=f"aioworkqueue monitor {address} (pid {doc.get('pid', '?')}, {stamp})",
        caption=_pools_line(doc),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("workqueue", no_wrap=True)
    for title, _, _ in _COLUMNS:
        table.add_column(title, justify="right", no_wrap=True)
    for q in _rows(doc, pattern):
        table.add_row(q["name"], *(_cell(q, key, fmt) for _, key, fmt in _COLUMNS))
    return table


def _cannot_read(address: str, exc: Exception) -> int:
    print(
        f"aioworkqueue monitor: cannot read {address}: {exc} "
        f"(is the process running with Runtime(monitor={address!r})?)",
        file=sys.stderr,
    )
    return 1


def run_monitor(
    address: str,
    *,
    interval: float | None,
    json_lines: bool,
    regex: str | None,
    count: int | None = None,
    out: TextIO | None = None,
    rich: bool = False,
    console: Any = None,
) -> int:
    """The ``aioworkqueue monitor`` command.

    Plain text (the shape of the kernel's ``wq_monitor.py``) is the default, on a terminal
    too: it is what scripts and logs can read and it needs nothing installed. ``rich=True``
    draws a table with rich instead, updated in place on a terminal (``console``: a rich
    Console to draw on; default: one on ``out``); elsewhere each table is printed in turn.
    Returns: the exit status: 0, 1 when the process cannot be read, 2 for a bad argument
    (``--rich`` without rich installed is one).
    """
    if out is None:
        out = sys.stdout  # looked up now, not at import: whatever stdout is when called
    try:
        parse_address(address)
        pattern = re.compile(regex) if regex else None
    except (ValueError, re.error) as exc:
        print(f"aioworkqueue monitor: {exc}", file=sys.stderr)
        return 2
    if rich and not json_lines:
        try:
            from rich.console import Console
        except ImportError:
            print(f"aioworkqueue monitor: {MISSING_RICH}", file=sys.stderr)
            return 2
        if console is None:
            console = Console(file=out)
            if not console.is_terminal:  # a pipe or a file: no screen to fit, never squeeze
                console = Console(file=out, width=_FILE_WIDTH)
        return _run_rich(address, pattern, interval, count, console)
    shown = 0
    while True:
        try:
            doc = _fetch(address)
        except (OSError, ValueError) as exc:
            return _cannot_read(address, exc)
        if json_lines:
            if pattern is not None:  # the same rows as the table: REGEX filters both
                doc = {**doc, "workqueues": _rows(doc, pattern)}
            print(json.dumps(doc), file=out, flush=True)
        else:
            print(_table(doc, pattern) + "\n", file=out, flush=True)
        shown += 1
        if interval is None or (count is not None and shown >= count):
            return 0
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return 0


def _run_rich(
    address: str,
    pattern: re.Pattern[str] | None,
    interval: float | None,
    count: int | None,
    console: Any,
) -> int:
    from rich.live import Live

    def tables() -> Iterator[Any]:
        shown = 0
        while True:
            yield _rich_table(_fetch(address), pattern, address)
            shown += 1
            if interval is None or (count is not None and shown >= count):
                return
            time.sleep(interval)

    try:
        if console.is_terminal and interval is not None:
            # One table redrawn in place; the last one stays on the screen.
            with Live(console=console, auto_refresh=False) as live:
                for table in tables():
                    live.update(table, refresh=True)
        else:
            for table in tables():
                console.print(table)
    except (OSError, ValueError) as exc:
        return _cannot_read(address, exc)
    except KeyboardInterrupt:
        pass
    return 0
