"""The live monitor: ``Runtime(monitor=ADDRESS)`` serves statistics, ``aioworkqueue monitor``
prints them as the kernel's ``tools/workqueue/wq_monitor.py`` does.

The server runs in its own thread with blocking sockets, not on a pool loop, so it still answers
when a loop is stuck — when it is needed most. The protocol is one JSON document per connection:
the client connects, the server writes a snapshot and closes. ADDRESS is a Unix socket path or
``127.0.0.1:PORT`` (loopback only; port 0 picks a free one, see ``Runtime.monitor_address``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TextIO

__all__ = ("MonitorServer", "parse_address", "run_monitor")

_COLUMNS = (
    ("total", "queued"),
    ("infl", "in_flight"),
    ("pend", "pending"),
    ("run", "running"),
    ("armed", "armed"),
    ("CPUhog", "cpu_hogs"),
    ("failed", "failed"),
    ("cancel", "cancelled"),
    ("maxact", "max_active_hits"),
    ("mayday", "mayday"),
    ("rescued", "rescued"),
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
    """Serves ``snapshot()`` as JSON to every connection, from its own thread."""

    def __init__(self, address: str, snapshot: Callable[[], dict[str, Any]]) -> None:
        family, sockaddr = parse_address(address)
        self._snapshot = snapshot
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_UNIX and os.path.exists(sockaddr):
            os.unlink(sockaddr)  # a stale socket from a process that died
        self._sock.bind(sockaddr)
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self._path = sockaddr if family == socket.AF_UNIX else None
        bound = self._sock.getsockname()
        #: Where it listens (the real port when asked for port 0).
        self.address = bound if isinstance(bound, str) else f"{bound[0]}:{bound[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="aiowq-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and remove the socket file. Context: any thread but the server's."""
        self._stop.set()
        self._thread.join()
        self._sock.close()
        if self._path is not None and os.path.exists(self._path):
            os.unlink(self._path)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                try:
                    conn.sendall(json.dumps(self._snapshot()).encode() + b"\n")
                except OSError:
                    pass  # the client went away


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


def _table(doc: dict[str, Any], pattern: re.Pattern[str] | None) -> str:
    rows = [q for q in doc["workqueues"] if pattern is None or pattern.search(q["name"])]
    width = max([24] + [len(q["name"]) for q in rows])
    head = f"{'':<{width}} " + " ".join(f"{title:>8}" for title, _ in _COLUMNS)
    lines = [head]
    for q in rows:
        lines.append(f"{q['name']:<{width}} " + " ".join(f"{q[key]:>8}" for _, key in _COLUMNS))
    pools = " ".join(f"cpu{p['cpu']}:{p['running']}/{p['workers']}" for p in doc["pools"])
    lines.append(f"pools (running/workers): {pools}  unbound waiting: {doc['unbound_waiting']}")
    return "\n".join(lines)


def run_monitor(
    address: str,
    *,
    interval: float | None,
    json_lines: bool,
    regex: str | None,
    count: int | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """The ``aioworkqueue monitor`` command.

    Returns: the exit status: 0, 1 when the process cannot be read, 2 for a bad argument.
    """
    try:
        parse_address(address)
        pattern = re.compile(regex) if regex else None
    except (ValueError, re.error) as exc:
        print(f"aioworkqueue monitor: {exc}", file=sys.stderr)
        return 2
    shown = 0
    while True:
        try:
            doc = _fetch(address)
        except (OSError, ValueError) as exc:
            print(
                f"aioworkqueue monitor: cannot read {address}: {exc} "
                f"(is the process running with Runtime(monitor={address!r})?)",
                file=sys.stderr,
            )
            return 1
        if json_lines:
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
