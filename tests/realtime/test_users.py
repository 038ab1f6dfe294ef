"""Users on the real gateway, over real sockets: client ids scoped to their user, the
per-user connection limit, per-user data, and the administrator's side of the HTTP API
with authentication on."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
import trio
from trio_websocket import ConnectionClosed

from realtime import Server

from .helpers import TIMEOUT, Client, close_of, open_ws, start_gateway, ws_url

SECRET = "s" * 32


def token(sub: str, **extra: Any) -> str:
    return jwt.encode({"sub": sub, "exp": time.time() + 600, **extra}, SECRET, algorithm="HS256")


@asynccontextmanager
async def connect(server: Server, sub: str, client_id: str) -> AsyncIterator[Client]:
    """A connection of ``sub`` with ``client_id``, welcomed."""
    headers = [(b"Authorization", f"Bearer {token(sub)}".encode())]
    async with open_ws(ws_url(server, client_id), extra_headers=headers) as ws:
        welcome = json.loads(await ws.get_message())
        assert welcome["type"] == "welcome", welcome
        yield Client(ws, welcome)


async def refused(server: Server, sub: str, client_id: str) -> tuple[int, str]:
    """The close code and reason a connection of ``sub`` gets before any welcome."""
    headers = [(b"Authorization", f"Bearer {token(sub)}".encode())]
    async with open_ws(ws_url(server, client_id), extra_headers=headers) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    return close_of(closed.value)


async def closed_with(client: Client) -> tuple[int, str]:
    """The close code and reason ``client`` gets, after whatever comes before it."""
    with pytest.raises(ConnectionClosed) as closed:
        await client.collect_until(lambda _: False, lambda _: False)
    return close_of(closed.value)


async def until(condition: Any) -> None:
    """Wait until ``condition()`` holds: for what the server does after a client's
    close, which no message announces. The caller's ``fail_after`` bounds it."""
    while not condition():
        await trio.sleep(0.01)


async def gateway(nursery: trio.Nursery, **settings: Any) -> Server:
    settings.setdefault("jwt_secret", SECRET)
    return await start_gateway(nursery, feeds=False, **settings)


async def test_a_client_id_held_by_another_user_is_refused_and_the_holder_stays(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="realtime.websocket")
    server = await gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with connect(server, "alice", "desk-1") as alice:
            code, reason = await refused(server, "mallory", "desk-1")
            assert (code, reason) == (4409, "Client id in use by another user: choose another")
            # Alice's connection is untouched: it answers, and holds the id.
            assert (await alice.request({"type": "ping", "id": 1}, "pong"))["id"] == 1
            assert server.hub.holder("desk-1") is not None
            assert server.hub.connection_count_of("mallory") == 0
            # Her own newer connection replaces it, as before.
            async with connect(server, "alice", "desk-1"):
                assert await closed_with(alice) == (
                    4409,
                    "Replaced by a newer connection with the same client id",
                )
    assert server.sessions.refused_client_ids == 1
    assert "Refused desk-1 for user mallory from 127.0.0.1:" in caplog.text


async def test_a_user_has_at_most_max_connections_per_user(nursery: trio.Nursery) -> None:
    server = await gateway(nursery, max_connections_per_user=2)
    with trio.fail_after(TIMEOUT):
        async with connect(server, "alice", "a1"), connect(server, "alice", "a2") as second:
            code, reason = await refused(server, "alice", "a3")
            assert (code, reason) == (
                4429,
                "Too many connections for this user (at most 2): close one first",
            )
            # Another user is not affected, and a replacement adds no connection.
            async with connect(server, "bob", "b1"), connect(server, "alice", "a2"):
                assert await closed_with(second) == (
                    4409,
                    "Replaced by a newer connection with the same client id",
                )
        await until(lambda: server.hub.connection_count_of("alice") == 0)
        async with connect(server, "alice", "a3"):
            pass
    assert server.sessions.refused_over_user_limit == 1


async def test_without_authentication_there_is_no_per_user_limit(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False, max_connections_per_user=1)
    with trio.fail_after(TIMEOUT):
        async with open_ws(ws_url(server, "one")) as one, open_ws(ws_url(server, "two")) as two:
            for ws in (one, two):
                assert json.loads(await ws.get_message())["type"] == "welcome"


async def test_the_demo_portfolio_is_the_demo_user_s(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, jwt_secret=SECRET, tick_rate=20.0)
    with trio.fail_after(TIMEOUT):
        async with (
            connect(server, "demo", "demo-1") as demo,
            connect(server, "alice", "a1") as alice,
        ):
            for client in (demo, alice):
                await client.request({"type": "subscribe", "channel": "portfolio"}, "subscribed")
            for _ in range(2):
                assert (await demo.next("portfolio_update"))["data"]["positions"]
            # Offered to every addressee at once: had Alice been one, it would be queued.
            assert await alice.queued(lambda m: m["type"] == "portfolio_update") == []


async def test_without_authentication_every_connection_sees_the_demo_portfolio(
    nursery: trio.Nursery,
) -> None:
    server = await start_gateway(nursery, tick_rate=20.0)
    with trio.fail_after(TIMEOUT):
        async with open_ws(ws_url(server, "anyone")) as ws:
            client = Client(ws, json.loads(await ws.get_message()))
            await client.request({"type": "subscribe", "channel": "portfolio"}, "subscribed")
            assert (await client.next("portfolio_update"))["data"]["positions"]
