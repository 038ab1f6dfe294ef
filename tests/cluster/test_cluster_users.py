"""A user across a cluster, with real nodes: ``POST /api/disconnect`` on one node closes
the user's connections on every node, and ``--max-connections-per-user`` counts them
across the nodes."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from typing import Any

import jwt
import pytest
import trio
from trio_websocket import ConnectionClosed

from realtime._cluster import USER_PREFIX
from realtime._redis_bus import open_redis
from tests.realtime.helpers import close_of, http_requests, open_ws

from .conftest import Cluster, Process
from .redis_server import RedisServer
from .test_cluster import KEY, SECRET, connect_as
from .test_cluster_rules import closed

TIMEOUT = 60.0  # a hang guard for processes on a busy machine; nothing is timed
SETTINGS = ("--api-key", KEY, "--jwt-secret", SECRET)
FORBIDDEN = (4403, "Disconnected by the gateway's administrator")


async def disconnect(node: Process, **body: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    """``POST /api/disconnect`` on ``node``: the status, headers and JSON answer."""
    ((status, headers, answer),) = await http_requests(
        node.port,
        [("POST", "/api/disconnect", json.dumps(body).encode())],
        headers=[("Authorization", f"Bearer {KEY}")],
    )
    return status, headers, json.loads(answer)


async def refused(node: Process, sub: str, client_id: str) -> tuple[int, str]:
    """The close code and reason a connection of ``sub`` gets before any welcome."""
    token = jwt.encode({"sub": sub, "exp": time.time() + 600}, SECRET, algorithm="HS256")
    headers = [(b"Authorization", f"Bearer {token}".encode())]
    async with open_ws(f"ws://127.0.0.1:{node.port}/ws/{client_id}", extra_headers=headers) as ws:
        with pytest.raises(ConnectionClosed) as close:
            await ws.get_message()
    return close_of(close.value)


async def seats(redis: RedisServer, user: str) -> int:
    """The user's connections Redis counts across the cluster."""
    async with open_redis(redis.url) as client:
        total = await client.hget(USER_PREFIX + user, "total")
    return 0 if total is None else int(total)


async def until_seats(redis: RedisServer, user: str, count: int) -> None:
    """Wait until Redis counts ``count`` connections of ``user`` (the nodes tell it
    after each connect and disconnect); the caller's ``fail_after`` bounds it."""
    while await seats(redis, user) != count:
        await trio.sleep(0.02)


async def test_a_disconnect_on_one_node_closes_the_user_s_connections_on_every_node(
    cluster: Cluster,
) -> None:
    with trio.fail_after(TIMEOUT):
        node_a, node_b, node_c = [await cluster.start_node(*SETTINGS) for _ in range(3)]
        async with (
            connect_as(node_b, "alice", "a1") as a1,
            connect_as(node_c, "alice", "a2") as a2,
            connect_as(node_b, "bob", "b1") as b1,
            connect_as(node_c, "bob", "b2") as b2,
        ):
            status, _, answer = await disconnect(node_a, user="alice")
            assert (status, answer) == (200, {"disconnected": ["a1", "a2"], "nodes": 3})
            assert await closed(a1) == FORBIDDEN
            assert await closed(a2) == FORBIDDEN
            for bob in (b1, b2):  # the others stay
                assert (await bob.request({"type": "ping", "id": 1}, "pong"))["id"] == 1
            # One client id, held on node B, through node C.
            status, _, answer = await disconnect(node_c, client_id="b1")
            assert (status, answer) == (200, {"disconnected": ["b1"], "nodes": 3})
            assert await closed(b1) == FORBIDDEN
            # Both given: that client, if it is that user's; nobody matches here.
            status, _, answer = await disconnect(node_a, user="alice", client_id="b2")
            assert (status, answer) == (200, {"disconnected": [], "nodes": 3})
            assert (await b2.request({"type": "ping", "id": 2}, "pong"))["id"] == 2
    assert "Disconnecting a1 (user alice) by request (4403)" in node_b.text
    assert "Disconnecting a2 (user alice) by request (4403)" in node_c.text


async def test_a_disconnect_that_a_node_does_not_confirm_is_unconfirmed(
    cluster: Cluster,
) -> None:
    with trio.fail_after(TIMEOUT):
        node_a = await cluster.start_node(*SETTINGS, "--disconnect-wait", "0.5")
        node_b = await cluster.start_node(*SETTINGS)
        async with connect_as(node_a, "alice", "a1") as a1:
            node_b.process.send_signal(signal.SIGSTOP)  # alive to Redis, deaf to orders
            try:
                status, headers, answer = await disconnect(node_a, user="alice")
            finally:
                node_b.process.send_signal(signal.SIGCONT)
            assert await closed(a1) == FORBIDDEN
    assert (status, answer["code"]) == (503, "unconfirmed")
    assert answer["disconnected"] == ["a1"]  # what node A confirmed
    (silent,) = answer["unconfirmed"]
    assert silent.endswith(f":{node_b.process.pid}")
    assert "retry-after" not in headers
    assert "disconnecting again is safe" in answer["error"]


async def test_a_node_without_redis_disconnects_nobody(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    with trio.fail_after(TIMEOUT):
        node = await cluster.start_node(*SETTINGS)
        async with connect_as(node, "alice", "a1") as a1:
            redis_server.stop()
            # Until the node notices, an order may be sent and not confirmed.
            while True:
                status, headers, answer = await disconnect(node, user="alice")
                assert (status, answer["code"]) in {(503, "unavailable"), (503, "unconfirmed")}
                if answer["code"] == "unavailable":
                    break
                await trio.sleep(0.05)
            assert headers["retry-after"] == "2"
            assert "no connection was disconnected" in answer["error"]
            # Nothing closed here either: the answer says nothing was done, anywhere.
            assert (await a1.request({"type": "ping", "id": 1}, "pong"))["id"] == 1


async def test_a_user_s_connections_are_counted_across_nodes(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    limit = ("--max-connections-per-user", "2")
    too_many = (4429, "Too many connections for this user (at most 2): close one first")
    with trio.fail_after(TIMEOUT):
        node_a = await cluster.start_node(*SETTINGS, *limit)
        node_b = await cluster.start_node(*SETTINGS, *limit)
        async with connect_as(node_a, "alice", "a1"):
            async with connect_as(node_b, "alice", "a2") as a2:
                await until_seats(redis_server, "alice", 2)
                # The extra one is refused wherever it lands.
                assert await refused(node_a, "alice", "a3") == too_many
                assert await refused(node_b, "alice", "a3") == too_many
                # Another user is not affected; a replacement on another node adds none.
                async with connect_as(node_b, "bob", "b1"), connect_as(node_a, "alice", "a2"):
                    assert await closed(a2) == (
                        4409,
                        "Replaced by a newer connection with the same client id",
                    )
                    await until_seats(redis_server, "alice", 2)
            await until_seats(redis_server, "alice", 1)
            # The seat freed on node B is taken on node A.
            async with connect_as(node_a, "alice", "a3"):
                assert await refused(node_b, "alice", "a4") == too_many
    assert re.search(r"Refused a3 for user alice from .*across the cluster", node_a.text)


async def test_a_killed_node_s_seats_are_freed_once_its_lease_expires(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    settings = (*SETTINGS, "--max-connections-per-user", "1", "--node-heartbeat", "0.2")
    with trio.fail_after(TIMEOUT):
        node_a = await cluster.start_node(*settings)
        node_b = await cluster.start_node(*settings)
        async with connect_as(node_b, "alice", "a1"):
            await until_seats(redis_server, "alice", 1)
            assert (await refused(node_a, "alice", "a2"))[0] == 4429
            os.kill(node_b.process.pid, signal.SIGKILL)
            await until_seats(redis_server, "alice", 0)
        async with connect_as(node_a, "alice", "a2"):
            await until_seats(redis_server, "alice", 1)
