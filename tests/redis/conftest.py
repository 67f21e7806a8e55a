"""A real ``redis-server`` for the Redis backend's tests (issue 14).

One server per test session on 127.0.0.1 and a free port, with no persistence (``--save ''``,
``--appendonly no``), stopped at the end (the helpers live in ``aioworkqueue._tools.redis_server``,
which ``aioworkqueue bench --only redis`` uses too). ``.ci/run`` installs Debian's package when it
is missing, so in CI these tests run, never skip; on a machine without the binary they fail with
a message that says how to get it. Each test gets its own key prefix, so tests never see each
other's keys and nothing needs flushing between them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from aioworkqueue._tools.redis_server import RedisServer, start_redis_server, stop_redis_server

__all__ = ("RedisServer", "start_redis_server", "stop_redis_server")

_PREFIXES = itertools.count()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis_server()
    try:
        yield server
    finally:
        stop_redis_server(server)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's server."""
    return redis_server.url


@pytest.fixture
def key_prefix() -> str:
    """A prefix no other test of this session uses (keys of a test never meet another's)."""
    return f"t{os.getpid()}x{next(_PREFIXES)}"
