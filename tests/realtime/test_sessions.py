"""Sessions without sockets: the gateway's WebSocket handler over Trio's in-memory
streams, with a wsproto client, under the autojump clock. Heartbeats and the rate
limit are judged in virtual time, so no machine is too slow for them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import orjson
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    Request,
    TextMessage,
)

from realtime import Config
from realtime._delivery import Delivery
from realtime._hub import Hub
from realtime._sessions import Sessions
from realtime.ws import parse_request_head

HEARTBEAT = 20.0


@attrs.define
class Peer:
    """The client side of one in-memory connection."""

    stream: trio.abc.Stream
    ws: WSConnection
    events: list[Event] = attrs.Factory(list)

    async def next_event(self) -> Event:
        while not self.events:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(bytes(data) or None)
            self.events.extend(self.ws.events())
        return self.events.pop(0)

    async def next_message(self) -> dict[str, object]:
        """The next text message; control frames other than close are skipped."""
        while True:
            event = await self.next_event()
            if isinstance(event, TextMessage):
                message: dict[str, object] = orjson.loads(event.data)
                return message
            assert not isinstance(event, CloseConnection), event

    async def send(self, message: dict[str, object]) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=orjson.dumps(message).decode())))


@asynccontextmanager
async def open_peer(config: Config) -> AsyncIterator[tuple[Peer, Sessions]]:
    hub = Hub(universe=("AAPL", "MSFT"), clock=trio.current_time)
    delivery = Delivery(flush_delay=config.flush_delay, write_timeout=config.write_timeout)
    sessions = Sessions(config, hub, delivery, server_version="test")
    ours, theirs = trio.testing.memory_stream_pair()
    client = WSConnection(ConnectionType.CLIENT)
    head = client.send(Request(host="test", target="/ws/peer"))
    async with trio.open_nursery() as nursery:
        await nursery.start(delivery.run)
        await nursery.start(sessions.run)
        nursery.start_soon(sessions.handle, ours, parse_request_head(head))
        peer = Peer(theirs, client)
        assert isinstance(await peer.next_event(), AcceptConnection)
        assert (await peer.next_message())["type"] == "welcome"
        yield peer, sessions
        nursery.cancel_scope.cancel()


async def test_a_silent_peer_is_pinged_then_closed_with_1011(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(heartbeat_interval=HEARTBEAT, heartbeat_misses=2)
    async with open_peer(config) as (peer, sessions):
        started = trio.current_time()
        pings: list[float] = []
        while not isinstance(event := await peer.next_event(), CloseConnection):
            assert isinstance(event, Ping), event  # never answered
            pings.append(trio.current_time() - started)
        assert event.code == 1011
        assert sessions.heartbeat_timeouts == 1
        # Asked after each silent interval; closed once two pings went unanswered.
        assert pings == [HEARTBEAT, 2 * HEARTBEAT]
        assert trio.current_time() - started == 3 * HEARTBEAT


async def test_a_peer_that_answers_pings_stays(autojump_clock: trio.testing.MockClock) -> None:
    config = Config(heartbeat_interval=HEARTBEAT, heartbeat_misses=2)
    async with open_peer(config) as (peer, sessions):
        for _ in range(10):  # ten intervals, far past the heartbeat timeout
            event = await peer.next_event()
            assert isinstance(event, Ping), event
            await peer.stream.send_all(peer.ws.send(event.response()))
        await peer.send({"type": "ping", "id": 1})
        assert (await peer.next_message())["type"] == "pong"
        assert sessions.heartbeat_timeouts == 0


async def test_a_request_flood_is_answered_then_closed_with_4429(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(rate_limit=20, rate_burst=40, rate_strikes=10)
    async with open_peer(config) as (peer, sessions):
        for number in range(60):  # at one instant of virtual time
            await peer.send({"type": "ping", "id": number})
        replies = []
        while not isinstance(event := await peer.next_event(), CloseConnection):
            assert isinstance(event, TextMessage), event
            replies.append(orjson.loads(event.data))
        assert event.code == 4429
        # The burst is answered, then each dropped message gets its error, and the
        # tenth breach closes the connection after those errors were written.
        assert [r["id"] for r in replies[:40]] == list(range(40))
        assert {r["type"] for r in replies[:40]} == {"pong"}
        assert [r.get("code") for r in replies[40:]] == ["rate_limited"] * 9
        assert sessions.rate_limited == 10
