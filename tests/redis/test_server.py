"""The test server itself answers: the fixture every Redis test stands on."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from .conftest import RedisServer


@pytest.mark.asyncio
async def test_the_session_server_answers(redis_server: RedisServer, key_prefix: str) -> None:
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await r.ping()
        info = await r.info("server")
        assert int(str(info["redis_version"]).split(".")[0]) >= 7
        assert await r.config_get("save") == {"save": ""}
        await r.set(f"{key_prefix}:k", b"v")
        assert await r.get(f"{key_prefix}:k") == b"v"
    finally:
        await r.aclose()
