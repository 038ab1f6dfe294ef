"""A client id is held once in the whole cluster: the CLAIM script against a real
Redis, and nodes (a hub and its :class:`RedisBus` in the test's own Trio run) that
close a connection with 4409 when another node's holds its id."""

from __future__ import annotations

import typing
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from protocol import CloseCode, Codec
from realtime._cluster import CLAIM, CLAIM_TTL_MS, CLIENT_PREFIX, NODE_PREFIX
from realtime._hub import Hub
from realtime._outbox import Outbox, OutboxLimits
from realtime._redis_bus import RedisBus, control_channel, open_redis

from .redis_server import RedisServer
from .test_redis_bus import UNIVERSE

TIMEOUT = 20.0


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``; the caller's ``fail_after`` bounds it."""
    while not condition():
        await trio.sleep(0.01)


@asynccontextmanager
async def claims(url: str) -> AsyncIterator[tuple[Callable[..., Any], list[bytes], Any]]:
    """``claim(op, client_id, value)``: one call of the script; the control messages
    it publishes, in order; and the client, to read the keys."""
    heard: list[bytes] = []
    async with open_redis(url) as client, trio.open_nursery() as nursery:
        script = client.register_script(CLAIM)
        channel = control_channel(url)
        subscribed = trio.Event()

        async def listen() -> None:
            async with client.pubsub(channels=[channel], ignore_subscribe_messages=True) as sub:
                subscribed.set()
                async for message in sub:
                    heard.append(typing.cast(bytes, message["data"]))

        nursery.start_soon(listen)
        await subscribed.wait()

        async def claim(op: str, client_id: str, value: str) -> None:
            await script(
                keys=[CLIENT_PREFIX + client_id],
                args=[channel, CLAIM_TTL_MS, NODE_PREFIX, op, client_id, value],
            )
            await client.publish(channel, b"end")  # everything before it is heard first
            await until(lambda: heard[-1:] == [b"end"])
            heard.pop()

        yield claim, heard, client
        nursery.cancel_scope.cancel()


async def test_the_claim_script_follows_one_hub_s_rules(redis_server: RedisServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with claims(redis_server.url) as (claim, heard, client):
            for node in ("a", "b"):  # both alive
                await client.set(NODE_PREFIX + node, b"{}")
            await claim("c", "x", "100 a 1 alice")
            await claim("c", "x", "100 a 1 alice")  # a refresh: nothing to say
            assert heard == []
            # The same user, later, on another node: the earlier one is replaced.
            await claim("c", "x", "200 b 7 alice")
            assert heard.pop() == b"replaced x 100 a 1 alice"
            # A claim that arrives late for a connection that came first: it loses.
            await claim("c", "x", "150 a 2 alice")
            assert heard.pop() == b"replaced x 150 a 2 alice"
            assert await client.get(CLIENT_PREFIX + "x") == b"200 b 7 alice"
            # Another user's connection: refused, whenever it came; the holder stays.
            await claim("c", "x", "300 a 3 bob")
            assert heard.pop() == b"refused x 300 a 3 bob"
            # A release of a connection that no longer holds it changes nothing ...
            await claim("r", "x", "100 a 1 alice")
            assert await client.get(CLIENT_PREFIX + "x") == b"200 b 7 alice"
            # ... the holder's frees it.
            await claim("r", "x", "200 b 7 alice")
            assert await client.get(CLIENT_PREFIX + "x") is None
            # A holder whose node is gone (no heartbeat) holds nothing.
            await claim("c", "y", "100 gone 1 alice")
            await claim("c", "y", "200 a 2 bob")
            assert heard == []
            assert await client.get(CLIENT_PREFIX + "y") == b"200 a 2 bob"


@pytest.fixture
def start_node(nursery: trio.Nursery) -> Callable[..., Any]:
    """A hub following Redis, reporting often."""

    async def start(url: str) -> Hub:
        hub = Hub(universe=UNIVERSE, clock=trio.current_time)
        bus = RedisBus(url, history_messages=100, history_seconds=600, heartbeat=0.2)
        bus.attach(hub)
        await nursery.start(bus.run)
        return hub

    return start


def connection(client_id: str, user: str | None = "alice") -> Outbox:
    return Outbox(client_id, Codec.JSON, OutboxLimits(), user=user)


async def test_a_client_id_is_held_once_across_nodes(
    redis_server: RedisServer, start_node: Callable[..., Any]
) -> None:
    with trio.fail_after(TIMEOUT):
        first, second = await start_node(redis_server.url), await start_node(redis_server.url)
        async with open_redis(redis_server.url) as client:

            async def held(client_id: str) -> bytes | None:
                return await client.get(CLIENT_PREFIX + client_id)

            older = connection("desk-1")
            first.register(older)
            while await held("desk-1") is None:
                await trio.sleep(0.01)
            newer = connection("desk-1")
            second.register(newer)  # the same user, later, elsewhere: replaces it
            await until(lambda: older.close_code is not None)
            assert older.close_code == CloseCode.REPLACED
            assert newer.close_code is None

            theirs = connection("shared", user="alice")
            first.register(theirs)
            while await held("shared") is None:
                await trio.sleep(0.01)
            mine = connection("shared", user="bob")
            second.register(mine)  # another user's id: refused, the holder stays
            await until(lambda: mine.close_code is not None)
            assert mine.close_code == CloseCode.REPLACED
            assert mine.close_reason == "Client id in use by another user: choose another"
            assert theirs.close_code is None

            second.unregister(newer, ())  # leaving frees the id
            while await held("desk-1") is not None:
                await trio.sleep(0.01)
