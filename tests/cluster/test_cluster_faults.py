"""Redis faults under a cluster as it runs: a real redis-server that the test pauses
(SIGSTOP/SIGCONT) or restarts without its data, real ``realtime serve --bus`` nodes,
and clients over real sockets that must end with every message exactly once, in
order, or be told what they lost."""

from __future__ import annotations

import json
import signal
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed

from protocol import AlertData, Channel, Severity
from tests.realtime.helpers import Client, close_of, http_get, http_requests

from .conftest import Cluster, Process
from .test_cluster import KEY, connect
from .test_redis_bus import publisher

TIMEOUT = 60.0  # a hang guard for processes on a busy machine; nothing is timed


def alert(number: int) -> AlertData:
    return AlertData(
        id=f"a{number}",
        symbol="AAPL",
        type="price_above",
        message=f"alert {number}",
        severity=Severity.INFO,
    )


@attrs.define
class Recorder:
    """Everything a client receives, kept by a task of its own, and how it closed."""

    client: Client
    messages: list[dict[str, Any]] = attrs.Factory(list)
    closed: int | None = None

    async def run(self) -> None:
        try:
            while True:
                self.messages.append(await self.client.receive())
        except ConnectionClosed as closed:
            self.closed = close_of(closed)[0]

    def seqs(self, kind: str) -> list[int]:
        return [m["seq"] for m in self.messages if m["type"] == kind]

    def notices(self) -> list[str]:
        """The type of each of the node's own notices (seq 0), in order."""
        return [
            m["data"]["type"]
            for m in self.messages
            if m["type"] == "notification" and m["seq"] == 0
        ]


async def until(condition: Any) -> None:
    """Wait for ``condition()``; the caller's ``fail_after`` bounds it."""
    while not condition():
        await trio.sleep(0.02)


async def publish_api(node: Process, number: int) -> tuple[int, dict[str, str], Any]:
    body = {"channel": "alerts", "data": attrs.asdict(alert(number))}
    ((status, headers, answer),) = await http_requests(
        node.port,
        [("POST", "/api/publish", json.dumps(body).encode())],
        headers=[("Authorization", f"Bearer {KEY}"), ("Content-Type", "application/json")],
    )
    return status, headers, json.loads(answer)


async def cluster_client(nursery: trio.Nursery, node: Process, client_id: str) -> Recorder:
    """A client of ``node`` subscribed to alerts and notifications, recording in the
    background until the test ends."""
    opened = trio.Event()
    recorder: list[Recorder] = []

    async def hold() -> None:
        async with connect(node, client_id) as client:
            for channel in ("alerts", "notifications"):
                await client.request({"type": "subscribe", "channel": channel}, "subscribed")
            recorder.append(Recorder(client))
            opened.set()
            await recorder[0].run()

    nursery.start_soon(hold)
    await opened.wait()
    return recorder[0]


async def test_a_redis_pause_loses_nothing_for_subscribers_on_two_nodes(
    cluster: Cluster, nursery: trio.Nursery
) -> None:
    redis = cluster.redis
    with trio.fail_after(TIMEOUT):
        nodes = [await cluster.start_node("--api-key", KEY) for _ in range(2)]
        recorders = [
            await cluster_client(nursery, node, f"watcher-{index}")
            for index, node in enumerate(nodes)
        ]
        async with publisher(redis.url) as (feed, _):
            for number in range(1, 11):
                await feed.publish(Channel.ALERTS, alert(number))
            redis.pause()
            try:
                during = trio.Event()

                async def publish_through_the_pause() -> None:
                    for number in range(11, 21):  # the first waits in Redis's socket
                        await feed.publish(Channel.ALERTS, alert(number))
                    during.set()

                nursery.start_soon(publish_through_the_pause)
                # Each node notices on its own, keeps its connections, and says so.
                await until(lambda: all(r.notices() == ["warning"] for r in recorders))
                # Not ready: a load balancer stops sending new clients.
                for node in nodes:
                    status, body = await http_get(node.port, "/readyz")
                    assert status == 503, body
                    assert json.loads(body)["failed"] == ["bus"]
                status, headers, answer = await publish_api(nodes[0], 99)
                assert status == 503, answer
                assert answer["code"] == "unavailable"
                assert headers["retry-after"] == "2"
            finally:
                redis.resume()
            await during.wait()
            for number in range(21, 26):
                await feed.publish(Channel.ALERTS, alert(number))
        await until(lambda: all(r.seqs("alert_triggered")[-1:] == [25] for r in recorders))
        await until(lambda: all(r.notices() == ["warning", "success"] for r in recorders))
        for node in nodes:
            assert (await http_get(node.port, "/readyz"))[0] == 200
    for recorder in recorders:
        assert recorder.seqs("alert_triggered") == list(range(1, 26))  # once each, in order
        assert recorder.closed is None


async def test_a_redis_restart_without_its_data_is_reported_to_every_client(
    cluster: Cluster, nursery: trio.Nursery
) -> None:
    redis = cluster.redis
    with trio.fail_after(TIMEOUT):
        nodes = [await cluster.start_node() for _ in range(2)]
        recorders = [
            await cluster_client(nursery, node, f"watcher-{index}")
            for index, node in enumerate(nodes)
        ]
        old = recorders[0].client.welcome["epoch"]
        async with publisher(redis.url) as (feed, _):
            for number in (1, 2, 3):
                await feed.publish(Channel.ALERTS, alert(number))
        await until(lambda: all(r.seqs("alert_triggered") == [1, 2, 3] for r in recorders))
        await trio.to_thread.run_sync(redis.restart)
        await until(lambda: all(r.closed is not None for r in recorders))
        for recorder in recorders:
            # Live data stopped; the history is gone; reconnect (1001) and resync.
            assert recorder.notices() == ["warning", "error"]
            assert recorder.closed == 1001
        async with connect(nodes[1], "watcher-0") as client:
            assert client.welcome["epoch"] != old
            await client.send({"type": "subscribe", "channel": "alerts", "since": 3, "epoch": old})
            reply = await client.next("subscribed", "error")
    assert reply["type"] == "error"
    assert reply["code"] == "history_unavailable"


async def test_a_draining_node_tells_its_subscribers_with_its_own_notice(
    cluster: Cluster, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TIMEOUT):
        node = await cluster.start_node()
        recorder = await cluster_client(nursery, node, "watcher")
        node.process.send_signal(signal.SIGTERM)
        await until(lambda: recorder.closed is not None)
    assert recorder.notices() == ["warning"]
    assert "draining" in recorder.messages[-1]["data"]["message"]
    assert recorder.closed == 1001
