"""Cluster-wide rules with real nodes: 4409 across nodes, and ``/ws/stats`` for the
cluster beside each node's own."""

from __future__ import annotations

import json

import trio
from trio_websocket import ConnectionClosed

from tests.realtime.helpers import Client, close_of, http_get, start_gateway

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


async def test_ws_stats_answers_per_node_and_for_the_cluster(cluster: Cluster) -> None:
    with trio.fail_after(TIMEOUT):
        node_a, node_b = await cluster.start_node(), await cluster.start_node()
        async with (
            connect(node_a, "one") as _,
            connect(node_a, "two") as _,
            connect(node_b, "three") as _,
        ):
            status, body = await http_get(node_a.port, "/ws/stats")
            assert status == 200
            assert json.loads(body)["clients"] == ["one", "two"]  # the node's own
            # The cluster, as of each node's last report (every 2 s).
            while True:
                status, body = await http_get(node_b.port, "/ws/stats?scope=cluster")
                assert status == 200, body
                view = json.loads(body)
                if view["total_connections"] == 3:
                    break
                await trio.sleep(0.1)
    assert view["scope"] == "cluster"
    assert sorted(node["total_connections"] for node in view["nodes"]) == [1, 2]


async def test_a_lone_gateway_has_no_cluster_to_show(cluster: Cluster) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_gateway(nursery, feeds=False)
        status, body = await http_get(server.port, "/ws/stats?scope=cluster")
        assert status == 400
        assert b"scope=cluster is for a node of a cluster" in body
        status, body = await http_get(server.port, "/ws/stats?scope=everything")
        assert status == 400
        server.shutdown()
