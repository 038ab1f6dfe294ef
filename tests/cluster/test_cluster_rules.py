"""Cluster-wide rules with real nodes: 4409 across nodes."""

from __future__ import annotations

import trio
from trio_websocket import ConnectionClosed

from tests.realtime.helpers import Client, close_of

from .conftest import Cluster
from .test_cluster import connect

TIMEOUT = 60.0  # a hang guard for processes on a busy machine; nothing is timed


async def closed(client: Client) -> tuple[int, str]:
    """Read until the server closes ``client``: its close code and reason."""
    try:
        while True:
            await client.receive()
    except ConnectionClosed as close:
        return close_of(close)


async def test_a_newer_connection_on_another_node_replaces_the_older_with_4409(
    cluster: Cluster,
) -> None:
    with trio.fail_after(TIMEOUT):
        node_a, node_b = await cluster.start_node(), await cluster.start_node()
        async with connect(node_a, "desk-7") as older:
            await older.request({"type": "ping", "id": 1}, "pong")
            async with connect(node_b, "desk-7") as newer:
                code, reason = await closed(older)
                # The newer one stays.
                pong = await newer.request({"type": "ping", "id": 2}, "pong")
    assert (code, reason) == (4409, "Replaced by a newer connection with the same client id")
    assert pong["id"] == 2
