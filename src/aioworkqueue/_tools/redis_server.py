"""A private ``redis-server`` for the Redis backend's tests and for ``aioworkqueue bench --only
redis``: 127.0.0.1 on a free port, no persistence (``--save ''``, ``--appendonly no``), its
working directory a fresh temporary one. The caller stops it with :func:`stop_redis_server`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

__all__ = ("RedisServer", "start_redis_server", "stop_redis_server")


@dataclass(frozen=True)
class RedisServer:
    """A running server: its ``url`` and ``port``, and the process."""

    port: int
    proc: subprocess.Popen[bytes]
    workdir: str = ""  # removed by stop_redis_server

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited at start with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"redis-server did not answer on port {port}")


def start_redis_server() -> RedisServer:
    """Start a private server; the caller stops it with :func:`stop_redis_server`."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError(
            "redis-server is not installed: `apt-get install -y redis-server` "
            "(bash .ci/run does it when it runs as root)"
        )
    workdir = tempfile.mkdtemp(prefix="awq-redis-")
    for _attempt in range(5):  # a free port can be taken between the probe and the bind
        port = _free_port()
        proc = subprocess.Popen(
            [
                exe,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", workdir,
                "--daemonize", "no",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_ready(port, proc, time.monotonic() + 10)
        except RuntimeError:
            proc.kill()
            proc.wait()
            continue
        return RedisServer(port, proc, workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    raise RuntimeError("could not start redis-server on a free port")


def stop_redis_server(server: RedisServer) -> None:
    """Stop the server (SIGTERM, then SIGKILL after 10 s) and remove its working directory."""
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
    if server.workdir:
        shutil.rmtree(server.workdir, ignore_errors=True)
