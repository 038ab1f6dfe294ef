"""A cluster as it runs: a real redis-server, one ``realtime feed``, two ``realtime
serve --bus`` nodes, and clients over real sockets."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import jwt
import trio

from realtime._redis_bus import EPOCH_KEY, open_redis
from tests.realtime.helpers import REALTIME, Client, http_requests, open_ws

from .conftest import Cluster, Process
from .redis_server import RedisServer

TIMEOUT = 30.0
KEY = "cluster-test-api-key"


@asynccontextmanager
async def connect(node: Process, client_id: str) -> AsyncIterator[Client]:
    async with open_ws(f"ws://127.0.0.1:{node.port}/ws/{client_id}") as ws:
        welcome = json.loads(await ws.get_message())
        assert welcome["type"] == "welcome"
        yield Client(ws, welcome)


async def signals_until(client: Client, seq: int) -> list[dict[str, Any]]:
    """The trading signals ``client`` receives, until one numbered ``seq`` or later."""
    return await client.collect_until(
        lambda kept: bool(kept) and kept[-1]["seq"] >= seq,
        lambda message: message["type"] == "trading_signal",
    )


def covers(symbols: set[str]) -> Callable[[list[dict[str, Any]]], bool]:
    """Done once the price updates kept are of exactly ``symbols``."""
    return lambda kept: {message["symbol"] for message in kept} == symbols


async def redis_epoch(redis: RedisServer) -> str:
    async with open_redis(redis.url) as client:
        epoch = await client.get(EPOCH_KEY)
    assert epoch is not None
    return epoch.decode()


async def test_every_node_delivers_the_same_seq_and_data_in_the_same_epoch(
    cluster: Cluster,
) -> None:
    with trio.fail_after(TIMEOUT):
        await cluster.start_feed()
        nodes = [await cluster.start_node(), await cluster.start_node()]
        async with connect(nodes[0], "on-a") as a, connect(nodes[1], "on-b") as b:
            epoch = await redis_epoch(cluster.redis)
            assert a.welcome["epoch"] == b.welcome["epoch"] == epoch
            for client in (a, b):
                await client.request({"type": "subscribe", "channel": "signals"}, "subscribed")
                await client.request(
                    {"type": "subscribe", "channel": "prices", "symbols": ["AAPL"]}, "subscribed"
                )
            seen: list[dict[tuple[str, int], Any]] = []
            for client in (a, b):
                messages = await client.collect_until(
                    lambda kept: sum(m["type"] == "trading_signal" for m in kept) >= 20,
                    lambda m: m["type"] in ("trading_signal", "price_update"),
                )
                seen.append({(m["type"], m["seq"]): m for m in messages})
    common = seen[0].keys() & seen[1].keys()
    assert sum(kind == "trading_signal" for kind, _ in common) >= 10
    assert any(kind == "price_update" for kind, _ in common)
    # Same seq, same data, same timestamp: Redis's, not each node's own.
    assert all(seen[0][key] == seen[1][key] for key in common)


async def test_the_last_prices_sent_on_subscribe_are_redis_s_on_any_node(
    cluster: Cluster,
) -> None:
    with trio.fail_after(TIMEOUT):
        feed = await cluster.start_feed()
        node_a = await cluster.start_node()
        async with connect(node_a, "watch") as client:
            await client.request({"type": "subscribe", "channel": "prices"}, "subscribed")
            await client.collect_until(
                lambda kept: len(kept) >= 40, lambda m: m["type"] == "price_update"
            )
        feed.process.terminate()  # the prices stop moving
        await feed.process.wait()
        # A node started now knows them only from Redis.
        node_b = await cluster.start_node()
        snapshots = []
        for node in (node_a, node_b):
            async with connect(node, "late") as client:
                await client.request({"type": "subscribe", "channel": "prices"}, "subscribed")
                snapshots.append(
                    await client.collect_until(
                        covers(set(client.welcome["symbols"])),
                        lambda m: m["type"] == "price_update",
                    )
                )
    by_symbol = [{m["symbol"]: m for m in snapshot} for snapshot in snapshots]
    assert len(snapshots[0]) == len(snapshots[1]) == 16  # one each, nothing moves now
    assert by_symbol[0] == by_symbol[1]  # same seq, data and timestamp per symbol


async def test_a_publish_through_one_node_reaches_a_subscriber_on_the_other(
    cluster: Cluster,
) -> None:
    with trio.fail_after(TIMEOUT):
        node_a = await cluster.start_node("--api-key", KEY)
        node_b = await cluster.start_node("--api-key", KEY)
        async with connect(node_b, "listener") as client:
            await client.request({"type": "subscribe", "channel": "alerts"}, "subscribed")
            body = {
                "channel": "alerts",
                "data": {
                    "id": "a-1",
                    "symbol": "AAPL",
                    "type": "price_above",
                    "message": "AAPL above 200",
                    "severity": "warning",
                },
            }
            ((status, _, answer),) = await http_requests(
                node_a.port,
                [("POST", "/api/publish", json.dumps(body).encode())],
                headers=[("Authorization", f"Bearer {KEY}"), ("Content-Type", "application/json")],
            )
            assert status == 202, answer
            alert = await client.next("alert_triggered")
    assert alert["data"] == body["data"]
    assert alert["seq"] == 1


async def test_a_client_cut_from_one_node_resumes_on_the_other_missing_nothing(
    cluster: Cluster,
) -> None:
    with trio.fail_after(TIMEOUT):
        await cluster.start_feed()
        node_a, node_b = await cluster.start_node(), await cluster.start_node()
        async with connect(node_a, "hopper") as client:
            epoch = client.welcome["epoch"]
            ack = await client.request({"type": "subscribe", "channel": "signals"}, "subscribed")
            assert "error" not in ack
            before = await signals_until(client, 0)
            before += await signals_until(client, before[-1]["seq"] + 5)
        # Cut: the feed goes on publishing while the client is away.
        await trio.sleep(0.5)
        last = before[-1]["seq"]
        async with connect(node_b, "hopper") as client:
            assert client.welcome["epoch"] == epoch
            await client.send(
                {"type": "subscribe", "channel": "signals", "since": last, "epoch": epoch}
            )
            reply = await client.next("subscribed", "error")
            assert reply["type"] == "subscribed", reply
            after = await signals_until(client, last + 20)
    seqs = [m["seq"] for m in before + after]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))  # in order, no gap, no duplicate


async def test_flushing_redis_changes_the_epoch_and_a_resume_into_the_old_one_is_refused(
    cluster: Cluster,
) -> None:
    with trio.fail_after(TIMEOUT):
        await cluster.start_feed()
        node_a, node_b = await cluster.start_node(), await cluster.start_node()
        async with connect(node_a, "before") as client:
            old = client.welcome["epoch"]
            await client.request({"type": "subscribe", "channel": "signals"}, "subscribed")
            last = (await signals_until(client, 3))[-1]["seq"]
        async with open_redis(cluster.redis.url) as redis:
            await redis.flushall()
        # The feed's next event begins the new epoch; both nodes follow it.
        epochs = {old}
        while old in epochs:
            await trio.sleep(0.05)
            epochs = set()
            for index, node in enumerate((node_a, node_b)):
                async with connect(node, f"probe-{index}") as probe:
                    epochs.add(probe.welcome["epoch"])
        assert epochs == {await redis_epoch(cluster.redis)}
        async with connect(node_b, "after") as client:
            await client.send(
                {"type": "subscribe", "channel": "signals", "since": last, "epoch": old}
            )
            reply = await client.next("subscribed", "error")
    assert reply["type"] == "error"
    assert reply["code"] == "history_unavailable"


def test_feed_needs_a_bus_and_a_node_says_when_redis_cannot_be_reached() -> None:
    result = subprocess.run(
        [*REALTIME, "feed"], capture_output=True, text=True, timeout=30, env={"PATH": ""}
    )
    assert result.returncode == 2
    assert "feed publishes into Redis: give --bus" in result.stderr
    # Port 1 is never a Redis here; the password must not reach the log.
    result = subprocess.run(
        [*REALTIME, "serve", "--port", "0", "--bus", "redis://:hunter2@127.0.0.1:1/0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert (
        "Cannot start: --bus (REALTIME_BUS): Cannot use Redis at redis://:***@127.0.0.1:1/0"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr


SECRET = "cluster-test-secret-0123456789abcdef"


@asynccontextmanager
async def connect_as(node: Process, sub: str, client_id: str) -> AsyncIterator[Client]:
    token = jwt.encode({"sub": sub, "exp": time.time() + 600}, SECRET, algorithm="HS256")
    headers = [(b"Authorization", f"Bearer {token}".encode())]
    async with open_ws(f"ws://127.0.0.1:{node.port}/ws/{client_id}", extra_headers=headers) as ws:
        welcome = json.loads(await ws.get_message())
        assert welcome["type"] == "welcome", welcome
        yield Client(ws, welcome)


async def test_a_user_s_message_published_on_one_node_reaches_that_user_on_the_other(
    cluster: Cluster,
) -> None:
    def note(id_: str) -> dict[str, Any]:
        return {"id": id_, "message": "yours", "type": "info"}

    def notes(messages: list[dict[str, Any]]) -> list[str]:
        return [m["data"]["id"] for m in messages if m["type"] == "notification"]

    with trio.fail_after(TIMEOUT):
        settings = ("--api-key", KEY, "--jwt-secret", SECRET)
        node_a = await cluster.start_node(*settings)
        node_b = await cluster.start_node(*settings)
        async with (
            connect_as(node_b, "alice", "a1") as alice,
            connect_as(node_b, "bob", "b1") as bob,
        ):
            for client in (alice, bob):
                await client.request(
                    {"type": "subscribe", "channel": "notifications"}, "subscribed"
                )
            for body in (
                {"channel": "notifications", "data": note("for-alice"), "user": "alice"},
                {"channel": "notifications", "data": note("for-bob"), "user": "bob"},
            ):
                ((status, _, answer),) = await http_requests(
                    node_a.port,
                    [("POST", "/api/publish", json.dumps(body).encode())],
                    headers=[("Authorization", f"Bearer {KEY}")],
                )
                assert status == 202, answer
            assert (await alice.next("notification"))["data"]["id"] == "for-alice"
            assert (await bob.next("notification"))["data"]["id"] == "for-bob"
            # Both were offered on node B in order: Alice's queue holds no more of them.
            assert notes(await alice.queued(lambda m: True)) == []
            epoch = alice.welcome["epoch"]
        # Resumed on node A, from Redis's history: Alice's own, never Bob's.
        async with connect_as(node_a, "alice", "a2") as again:
            await again.request(
                {"type": "subscribe", "channel": "notifications", "since": 0, "epoch": epoch},
                "subscribed",
            )
            assert notes(await again.queued(lambda m: True)) == ["for-alice"]


async def test_a_cluster_on_a_universe_of_its_own(cluster: Cluster) -> None:
    """`realtime feed` simulates the --universe it is given; the nodes take the same."""
    universe = "ORCL,AAPL"
    with trio.fail_after(TIMEOUT):
        await cluster.start_feed("--universe", universe)
        node = await cluster.start_node("--universe", universe)
        async with connect(node, "orcl-watcher") as client:
            assert client.welcome["symbols"] == ["ORCL", "AAPL"]
            await client.request(
                {"type": "subscribe", "channel": "prices", "symbols": ["ORCL"]}, "subscribed"
            )
            update = await client.next("price_update")
    assert update["symbol"] == "ORCL"
    assert "The feed's symbols differ" not in node.text


async def test_prices_published_through_one_node_reach_the_other(cluster: Cluster) -> None:
    """No feed: the market comes from outside, through any node's publish API."""
    settings = ("--universe", "ORCL,SAP", "--api-key", KEY)
    price = {
        "price": 142.5,
        "change": 0.5,
        "change_pct": 0.35,
        "volume": 10,
        "bid": 142.4,
        "ask": 142.6,
    }
    headers = [("Authorization", f"Bearer {KEY}")]
    with trio.fail_after(TIMEOUT):
        node_a = await cluster.start_node(*settings)
        node_b = await cluster.start_node(*settings)
        async with connect(node_b, "listener") as client:
            await client.request(
                {"type": "subscribe", "channel": "prices", "symbols": ["SAP"]}, "subscribed"
            )
            body = {"events": [{"channel": "prices", "symbol": "SAP", "data": price}]}
            ((status, _, answer),) = await http_requests(
                node_a.port, [("POST", "/api/publish", json.dumps(body).encode())], headers
            )
            assert status == 202, answer
            update = await client.next("price_update")
            unknown = {"channel": "prices", "symbol": "MSFT", "data": price}
            ((status, _, answer),) = await http_requests(
                node_a.port, [("POST", "/api/publish", json.dumps(unknown).encode())], headers
            )
    assert (update["symbol"], update["data"], update["seq"]) == ("SAP", price, 1)
    assert (status, json.loads(answer)["code"]) == (400, "unknown_symbol")
