"""coredis, the Redis client of the bus, runs under Trio: commands, Lua, pub/sub."""

from __future__ import annotations

from pathlib import Path

import coredis
import sniffio
import trio

from .redis_server import RedisServer

TIMEOUT = 10.0


async def test_commands_scripts_and_pub_sub_under_trio_with_a_password(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="pass-word")
    server.start()
    try:
        with trio.fail_after(TIMEOUT):
            assert sniffio.current_async_library() == "trio"
            async with coredis.Redis.from_url(server.url) as client:
                assert await client.ping() == b"PONG"
                incr = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
                assert await incr(keys=["counter"], args=[5]) == 5
                async with client.pubsub(
                    channels=["news"], ignore_subscribe_messages=True
                ) as pubsub:
                    assert await client.publish("news", "hello") == 1
                    async for message in pubsub:
                        assert message["data"] == b"hello"
                        break
    finally:
        server.stop()
