"""Sessions without sockets: the gateway's WebSocket handler over Trio's in-memory
streams, with a wsproto client, under the autojump clock. Heartbeats and the rate
limit are judged in virtual time, so no machine is too slow for them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from unittest.mock import ANY

import attrs
import orjson
import pytest
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

from protocol import Channel, NotificationData, NotificationType
from realtime import Config
from realtime._delivery import Delivery
from realtime._hub import Event as HubEvent
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
            self.ws.receive_data(bytes(data) if data else None)
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

    async def send(self, message: Mapping[str, object]) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=orjson.dumps(message).decode())))


Connect = Callable[..., Awaitable[Peer]]


@asynccontextmanager
async def open_sessions(config: Config) -> AsyncIterator[tuple[Sessions, Connect]]:
    """The gateway's sessions over in-memory streams, and ``await connect(client_id,
    source=..., lockstep=...)`` for a peer past its welcome. ``source`` is the source IP the
    listener would have named; ``lockstep``: the peer's writes wait for the peer to
    read them, as a full socket does."""
    hub = Hub(universe=("AAPL", "MSFT"), clock=trio.current_time)
    delivery = Delivery(flush_delay=config.flush_delay, write_timeout=config.write_timeout)
    sessions = Sessions(config, hub, delivery, server_version="test")
    async with trio.open_nursery() as nursery:
        await nursery.start(delivery.run)
        await nursery.start(sessions.run)

        async def connect(
            client_id: str = "peer", *, source: str | None = None, lockstep: bool = False
        ) -> Peer:
            pair = (
                trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
            )
            ours, theirs = pair()
            client = WSConnection(ConnectionType.CLIENT)
            head = parse_request_head(client.send(Request(host="test", target=f"/ws/{client_id}")))
            nursery.start_soon(sessions.handle, ours, attrs.evolve(head, source=source))
            peer = Peer(theirs, client)
            assert isinstance(await peer.next_event(), AcceptConnection)
            assert (await peer.next_message())["type"] == "welcome"
            return peer

        yield sessions, connect
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_peer(
    config: Config, *, lockstep: bool = False
) -> AsyncIterator[tuple[Peer, Sessions]]:
    """One session on an in-memory stream pair (see `open_sessions`)."""
    async with open_sessions(config) as (sessions, connect):
        yield await connect(lockstep=lockstep), sessions


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
        # At one instant of virtual time. The server may close the stream before the
        # last ones are sent: the 50th message is the tenth breach.
        with contextlib.suppress(trio.BrokenResourceError):
            for number in range(60):
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


async def test_an_abort_at_the_write_deadline_is_logged_as_such(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config(write_timeout=10.0)
    async with open_peer(config, lockstep=True) as (peer, sessions):
        await peer.send({"type": "subscribe", "channel": "notifications"})
        assert (await peer.next_message())["type"] == "subscribed"
        data = NotificationData(id="n", message="never read", type=NotificationType.INFO)
        sessions.hub.publish(HubEvent(Channel.NOTIFICATIONS, data, datetime.now(UTC)))
        while not sessions.delivery.write_timeouts:  # the peer reads nothing more
            await trio.sleep(1)
        while sessions.hub.connection_count:
            await trio.sleep(1)
    [line] = [r.getMessage() for r in caplog.records if "Disconnected" in r.getMessage()]
    assert line == (
        "[WebSocket] Disconnected: peer "
        "(aborted: a write took longer than the write deadline (10 s))"
    )


async def test_a_replay_is_paid_for_in_the_request_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Resubscribing with since=0 again and again multiplied the server's work by the
    # history's size; the replayed messages now cost tokens (10 per token by default).
    async with open_peer(Config(rate_limit=20, rate_burst=40)) as (peer, sessions):
        hub = sessions.hub
        for number in range(500):
            data = NotificationData(id=str(number), message="m", type=NotificationType.INFO)
            hub.publish(HubEvent(Channel.NOTIFICATIONS, data, datetime.now(UTC)))
        request = {"type": "subscribe", "channel": "notifications", "since": 0}
        await peer.send({**request, "epoch": hub.epoch})
        assert (await peer.next_message())["type"] == "subscribed"
        replayed = [await peer.next_message() for _ in range(500)]
        assert [m["data"]["id"] for m in replayed] == [str(n) for n in range(500)]  # type: ignore[index]
        await peer.send({"type": "ping", "id": 1})  # 39 tokens held, 50 spent: refused
        assert (await peer.next_message())["code"] == "rate_limited"
        await trio.sleep(1)  # virtual: the debt of 12 tokens is paid at 20 a second
        await peer.send({"type": "ping", "id": 2})
        assert await peer.next_message() == {"type": "pong", "id": 2, "timestamp": ANY}


async def test_a_reconnect_starts_with_the_bucket_its_source_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A client that reconnected after every 4429 started each time with a full bucket:
    # 6,810 requests a second were served. A token here takes 1,000 virtual seconds,
    # so the clock's jumps to the next timer refill nothing worth counting.
    config = Config(rate_limit=0.001, rate_burst=5, rate_strikes=3, heartbeat_interval=1e5)
    async with open_sessions(config) as (sessions, connect):

        async def pings(peer: Peer, count: int) -> list[object]:
            with contextlib.suppress(trio.BrokenResourceError):
                for number in range(count):
                    await peer.send({"type": "ping", "id": number})
            replies: list[object] = []
            while isinstance(event := await peer.next_event(), TextMessage):
                replies.append(orjson.loads(event.data).get("type"))
                if len(replies) == count:
                    return replies
            assert isinstance(event, CloseConnection)
            replies.append(event.code)
            return replies

        flooder = await connect("flooder", source="203.0.113.7")
        assert await pings(flooder, 10) == ["pong"] * 5 + ["error"] * 2 + [4429]
        while sessions.hub.connection_count:  # its close has been recorded
            await trio.testing.wait_all_tasks_blocked()
        again = await connect("again", source="203.0.113.7")
        assert await pings(again, 1) == ["error"]
        # Other sources, and connections the listener did not count, start full.
        assert await pings(await connect("other", source="198.51.100.1"), 5) == ["pong"] * 5
        assert await pings(await connect("uncounted"), 5) == ["pong"] * 5
        await trio.sleep(1000)  # one token, in virtual time
        assert await pings(again, 2) == ["pong", "error"]
