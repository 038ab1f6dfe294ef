"""A user's connections counted across nodes: the seats of :class:`Membership` (hubs
and their :class:`RedisBus` in the test's own Trio run) against a real Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

from realtime._cluster import (
    NODE_PREFIX,
    NODES_KEY,
    REPORT,
    SEATS,
    SEATS_PREFIX,
    USER_PREFIX,
    Membership,
)
from realtime._hub import Hub
from realtime._redis_bus import RedisBus, open_redis

from .conftest import REFUSED_CONNECTIONS
from .redis_server import RedisServer
from .test_redis_bus import UNIVERSE

TIMEOUT = 20.0


@pytest.fixture
def start_node(nursery: trio.Nursery) -> Callable[..., Any]:
    """A node's membership, once Redis counts its seats. Its probe leaves Redis 5 s
    before it gives up on it: longer than a seat waits (``ADMIT_TIMEOUT``, 1 s)."""

    async def start(url: str) -> Membership:
        bus = RedisBus(
            url, history_messages=100, history_seconds=600, heartbeat=0.2, probe_timeout=5.0
        )
        bus.attach(Hub(universe=UNIVERSE, clock=trio.current_time))
        await nursery.start(bus.run)
        while not bus.membership.counting:
            await trio.sleep(0.01)
        return bus.membership

    return start


async def total(url: str, user: str) -> int:
    async with open_redis(url) as client:
        value = await client.hget(USER_PREFIX + user, "total")
    return 0 if value is None else int(value)


async def until_total(url: str, user: str, count: int) -> None:
    """Wait until Redis counts ``count`` seats of ``user``; bounded by the caller."""
    while await total(url, user) != count:
        await trio.sleep(0.01)


async def test_two_nodes_racing_for_a_user_s_last_seats_never_exceed_the_limit(
    redis_server: RedisServer, start_node: Callable[..., Any]
) -> None:
    url = redis_server.url
    with trio.fail_after(TIMEOUT):
        nodes = [await start_node(url), await start_node(url)]
        taken: list[Membership] = []

        async def take(node: Membership, number: int) -> None:
            if await node.take_seat("alice", f"a{number}", 5, replaces=False):
                taken.append(node)

        async with trio.open_nursery() as racers:
            for number in range(16):
                racers.start_soon(take, nodes[number % 2], number)
        assert len(taken) == 5
        assert await total(url, "alice") == 5
        # Seats freed on one node are taken on the other.
        freed = taken.count(nodes[0])
        for _ in range(freed):
            nodes[0].free_seat("alice")
        await until_total(url, "alice", 5 - freed)
        for _ in range(freed):
            assert await nodes[1].take_seat("alice", "b", 5, replaces=False)
        assert not await nodes[1].take_seat("alice", "b", 5, replaces=False)
        assert await nodes[1].take_seat("alice", "b", 5, replaces=True)  # adds none
        assert await nodes[0].take_seat("bob", "b", 5, replaces=False)


@REFUSED_CONNECTIONS
@pytest.mark.usefixtures("collected")
async def test_a_seat_redis_does_not_answer_is_taken_by_the_node_s_count_then_counted(
    redis_server: RedisServer, start_node: Callable[..., Any]
) -> None:
    url = redis_server.url
    with trio.fail_after(TIMEOUT):
        node = await start_node(url)
        assert await node.take_seat("alice", "a1", 1, replaces=False)
        redis_server.pause()
        try:
            # Past ADMIT_TIMEOUT the node's own count decides (the caller's check).
            assert await node.take_seat("alice", "a2", 1, replaces=False)
            assert not node.counting
        finally:
            redis_server.resume()
        # Once Redis answers, it is told the node's seats, both.
        await until_total(url, "alice", 2)
        while not node.counting:
            await trio.sleep(0.01)
        assert not await node.take_seat("alice", "a3", 1, replaces=False)


async def test_a_report_frees_a_gone_node_s_seats_a_batch_at_a_time(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_redis(redis_server.url) as client:
            seats = client.register_script(SEATS)
            report = client.register_script(REPORT)
            users = ["alice", "bob", "carol"]
            for node, count in (("gone", 2), ("live", 1)):
                args: list[str | int] = [node, "set"]
                for user in users:
                    args += [user, count]
                await seats(
                    keys=[SEATS_PREFIX + node, *(USER_PREFIX + u for u in users)], args=args
                )
            await client.sadd(NODES_KEY, ["gone"])

            async def report_live() -> None:
                await report(
                    keys=[NODE_PREFIX + "live", NODES_KEY],
                    args=["live", b"{}", 60_000, NODE_PREFIX, SEATS_PREFIX, 2, USER_PREFIX],
                )

            async def totals() -> list[int]:
                return [int(await client.hget(USER_PREFIX + u, "total") or 0) for u in users]

            await report_live()  # frees two users of the gone node: a batch of 2
            assert sorted(await totals()) == [1, 1, 3]
            assert await client.sismember(NODES_KEY, "gone")
            await report_live()  # the last one, and the node is forgotten
            assert await totals() == [1, 1, 1]
            assert not await client.sismember(NODES_KEY, "gone")
            assert await client.hget(USER_PREFIX + "alice", "gone") is None
