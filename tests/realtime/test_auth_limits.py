"""The cap on connections one source IP may have waiting for their token, on the
gateway's WebSocket handler over in-memory streams under the autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, Request

from realtime import Config
from realtime._delivery import Delivery
from realtime._hub import Hub
from realtime._sessions import Sessions
from realtime.ws import SourceLimits, SourceTable, parse_request_head

from .test_session_auth import EPOCH, SECRET, Peer, authenticated, token

SOURCE = "203.0.113.9"

Connect = Callable[[str], Awaitable[tuple[Peer, AcceptConnection | RejectConnection]]]


@asynccontextmanager
async def open_gateway(config: Config) -> AsyncIterator[tuple[Sessions, Connect]]:
    """Sessions that authenticate, and a way to open a connection to them from a
    source; each connection gets a client id of its own."""
    hub = Hub(universe=("AAPL", "MSFT"), clock=trio.current_time)
    delivery = Delivery(flush_delay=config.flush_delay, write_timeout=config.write_timeout)
    sessions = Sessions(
        config, hub, delivery, server_version="test", wall_clock=lambda: EPOCH + trio.current_time()
    )
    opened = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(delivery.run)
        await nursery.start(sessions.run)

        async def connect(source: str) -> tuple[Peer, AcceptConnection | RejectConnection]:
            nonlocal opened
            opened += 1
            ours, theirs = trio.testing.memory_stream_pair()
            client = WSConnection(ConnectionType.CLIENT)
            head = client.send(Request(host="test", target=f"/ws/peer-{opened}"))
            request = attrs.evolve(parse_request_head(head), source=source)
            nursery.start_soon(sessions.handle, ours, request)
            peer = Peer(theirs, client)
            answer = await peer.next_event()
            assert isinstance(answer, AcceptConnection | RejectConnection), answer
            return peer, answer

        yield sessions, connect
        nursery.cancel_scope.cancel()


def test_a_source_has_at_most_max_unauthenticated_waiting() -> None:
    sources = SourceTable(SourceLimits(max_unauthenticated=2))
    assert sources.begin_authentication("a")
    assert sources.begin_authentication("a")
    assert not sources.begin_authentication("a")
    assert sources.begin_authentication("b")  # another source has its own count
    sources.end_authentication("a")
    assert sources.begin_authentication("a")
    assert sources.statistics().refused_unauthenticated_total == 1
    for source in ("a", "a", "b"):
        sources.end_authentication(source)
    assert not sources._authenticating  # nothing kept for sources with none waiting


async def test_past_the_cap_an_upgrade_gets_429_until_one_has_authenticated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(jwt_secret=SECRET, heartbeat_interval=1000.0, max_unauthenticated=2)
    async with open_gateway(config) as (sessions, connect):
        first, answer = await connect(SOURCE)
        assert isinstance(answer, AcceptConnection)
        second, answer = await connect(SOURCE)
        assert isinstance(answer, AcceptConnection)
        _, refused = await connect(SOURCE)
        assert isinstance(refused, RejectConnection)
        assert refused.status_code == 429
        assert (b"retry-after", b"5") in refused.headers
        _, answer = await connect("198.51.100.1")  # another address is not held back
        assert isinstance(answer, AcceptConnection)
        # One of the waiting connections authenticates: its slot is free again.
        await authenticated(first, token())
        _, answer = await connect(SOURCE)
        assert isinstance(answer, AcceptConnection)
        # A connection that never authenticates frees its slot at --auth-timeout.
        _, refused = await connect(SOURCE)
        assert isinstance(refused, RejectConnection)
        code, _ = await second.closed()
        assert code == 4401
        await second.stream.send_all(second.ws.send(CloseConnection(code)))  # the reply
        await trio.testing.wait_all_tasks_blocked()
        _, answer = await connect(SOURCE)
        assert isinstance(answer, AcceptConnection)
        assert sessions.sources.statistics().refused_unauthenticated_total == 2


async def test_without_authentication_nothing_is_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(heartbeat_interval=1000.0, max_unauthenticated=1)
    async with open_gateway(config) as (sessions, connect):
        for _ in range(3):
            _, answer = await connect(SOURCE)
            assert isinstance(answer, AcceptConnection)
        assert not sessions.sources._authenticating
