"""Redis faults, seen by a node: a hub and its :class:`RedisBus` in the test's own
Trio run, against a real redis-server that the test pauses, stops and restarts.

The process-level counterparts (real nodes, clients over sockets) are in
``test_cluster_faults``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from protocol import Channel, CloseCode, ErrorCode, RemoteProtocolError
from realtime._bus import PublishUnavailable
from realtime._hub import Hub
from realtime._redis_bus import RedisBus

from .conftest import REFUSED_CONNECTIONS
from .redis_server import RedisServer
from .test_redis_bus import UNIVERSE, Node, note, publisher

TIMEOUT = 20.0
pytestmark = [REFUSED_CONNECTIONS, pytest.mark.usefixtures("collected")]


@pytest.fixture
def start_node(nursery: trio.Nursery) -> Callable[..., Any]:
    """A node that probes Redis often, so that a pause is noticed within a second."""

    async def start(url: str) -> Node:
        hub = Hub(universe=UNIVERSE, clock=trio.current_time)
        bus = RedisBus(
            url,
            history_messages=1000,
            history_seconds=600,
            probe_interval=0.1,
            probe_timeout=2.0,
            connect_timeout=2.0,
        )
        bus.attach(hub)
        node = Node(hub, bus)
        await nursery.start(bus.run)
        return node

    return start


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``; the caller's ``fail_after`` bounds it."""
    while not condition():
        await trio.sleep(0.01)


def numbered(node: Node) -> list[int]:
    """The seq of each notification of the stream the node delivered, in order."""
    return [seq for seq in node.seqs("notification") if seq]


def notices(node: Node) -> list[str]:
    """The type of each node-local notification (seq 0) the node sent, in order."""
    return [
        m["data"]["type"] for m in node.messages() if m["type"] == "notification" and not m["seq"]
    ]


async def test_a_paused_redis_interrupts_live_data_and_loses_nothing(
    redis_server: RedisServer, start_node: Callable[..., Any], nursery: trio.Nursery
) -> None:
    with trio.fail_after(TIMEOUT):
        node = await start_node(redis_server.url)
        async with publisher(redis_server.url) as (feed, _):
            for number in (1, 2, 3):
                await feed.publish(Channel.NOTIFICATIONS, note(number))
            await node.wait_for(lambda _: numbered(node) == [1, 2, 3])
            published = trio.Event()

            async def publish_through_the_pause() -> None:
                for number in (4, 5, 6):
                    await feed.publish(Channel.NOTIFICATIONS, note(number))
                published.set()

            redis_server.pause()
            try:
                nursery.start_soon(publish_through_the_pause)  # waits for Redis: queued
                await until(lambda: not node.bus.connected)
                assert notices(node) == ["warning"]
                # The node's own publishes are refused at once, having sent nothing.
                with pytest.raises(PublishUnavailable) as refused:
                    await node.bus.publish(Channel.NOTIFICATIONS, note(99))
                assert not refused.value.sent
            finally:
                redis_server.resume()
            await published.wait()
            await until(lambda: node.bus.connected)
            await node.wait_for(lambda _: numbered(node) == [1, 2, 3, 4, 5, 6])
    assert notices(node) == ["warning", "success"]
    assert node.bus.interruptions == 1
    assert node.outbox.close_code is None  # the connections stay


async def test_a_redis_restarted_with_its_data_is_caught_up_from_where_the_node_was(
    tmp_path: Path, start_node: Callable[..., Any]
) -> None:
    server = RedisServer(tmp_path / "redis", persistent=True)
    server.start()
    try:
        with trio.fail_after(TIMEOUT):
            node = await start_node(server.url)
            epoch = node.hub.epoch
            async with publisher(server.url) as (feed, _):
                for number in (1, 2, 3):
                    await feed.publish(Channel.NOTIFICATIONS, note(number))
            await node.wait_for(lambda _: numbered(node) == [1, 2, 3])
            await trio.to_thread.run_sync(server.restart)
            # Published at once, while the node may still be waiting to reconnect:
            # it gets them from Redis, from its position, exactly once.
            async with publisher(server.url) as (feed, _):
                for number in (4, 5, 6):
                    await feed.publish(Channel.NOTIFICATIONS, note(number))
            await until(lambda: node.bus.connected)
            await node.wait_for(lambda _: numbered(node) == [1, 2, 3, 4, 5, 6])
    finally:
        server.stop()
    assert node.hub.epoch == epoch
    assert notices(node) == ["warning", "success"]
    replay = node.hub.replay(Channel.NOTIFICATIONS, 2, epoch, "anyone")
    assert [frames.message.seq for frames in replay] == [3, 4, 5, 6]


async def test_a_redis_restarted_without_its_data_is_reported_never_a_silent_gap(
    redis_server: RedisServer, start_node: Callable[..., Any]
) -> None:
    with trio.fail_after(TIMEOUT):
        node = await start_node(redis_server.url)
        async with publisher(redis_server.url) as (feed, _):
            await feed.publish(Channel.NOTIFICATIONS, note(1))
        await node.wait_for(lambda _: numbered(node) == [1])
        old = node.hub.epoch
        await trio.to_thread.run_sync(redis_server.stop)
        await until(lambda: not node.bus.connected)
        with pytest.raises(PublishUnavailable):
            await node.bus.publish(Channel.NOTIFICATIONS, note(99))
        await trio.to_thread.run_sync(redis_server.restart)
        await until(lambda: node.bus.connected)
    assert node.hub.epoch != old
    # Told that live data stopped, then that the history is lost; then closed with
    # 1001, to reconnect into the new epoch (its resume then says what is missing).
    assert notices(node) == ["warning", "error"]
    assert node.outbox.close_code == CloseCode.GOING_AWAY
    with pytest.raises(RemoteProtocolError) as refused:
        node.hub.replay(Channel.NOTIFICATIONS, 1, old, "anyone")
    assert refused.value.code == ErrorCode.HISTORY_UNAVAILABLE
