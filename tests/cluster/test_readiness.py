"""A node's ``/readyz`` follows its Redis: unready while Redis is gone, ready once the
bus has reconnected and caught up; ``/livez`` stays 200 throughout."""

from __future__ import annotations

import json

import trio

from tests.realtime.helpers import http_get, start_gateway

from .redis_server import RedisServer

#: Long enough for a reconnect backoff (1 s, doubling) and a catch-up on a busy machine.
TIMEOUT = 30.0


async def _readyz(port: int) -> tuple[int, dict[str, object]]:
    status, body = await http_get(port, "/readyz")
    return status, json.loads(body)


async def test_readiness_flips_while_redis_is_stopped(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    node = await start_gateway(nursery, bus=redis_server.url)
    with trio.fail_after(TIMEOUT):
        assert (await _readyz(node.port))[0] == 200
        port = redis_server.port
        await trio.to_thread.run_sync(redis_server.stop)
        while (probe := await _readyz(node.port))[0] == 200:
            await trio.sleep(0.05)
        assert probe == (
            503,
            {
                "status": "not ready",
                "checks": {
                    "draining": "ok",
                    "bus": "not connected to Redis; reconnecting",
                    "feeds": "ok",
                },
                "failed": ["bus"],
            },
        )
        status, _ = await http_get(node.port, "/livez")
        assert status == 200
        await trio.to_thread.run_sync(lambda: redis_server.start(port=port))
        while (await _readyz(node.port))[0] != 200:
            await trio.sleep(0.05)
