"""Authentication on the connection, without sockets: the gateway's WebSocket handler
over Trio's in-memory streams under the autojump clock, so the token's expiry and the
auth timeout are judged in virtual time. The wall clock the tokens count in follows
the virtual one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from realtime import Config
from realtime._auth import mint_token
from realtime._delivery import Delivery
from realtime._hub import Hub
from realtime._sessions import Sessions
from realtime.ws import parse_request_head

from .test_sessions import Peer as SessionPeer

SECRET = "s" * 32
#: Unix seconds at virtual time 0.
EPOCH = 1_800_000_000.0


def token(sub: str = "alice", ttl: float = 60, **grants: Any) -> str:
    return mint_token(SECRET, sub=sub, now=EPOCH + trio.current_time(), ttl=ttl, **grants)


class Peer(SessionPeer):
    """The peer of test_sessions, stricter: the next event must be a text message."""

    async def next_message(self) -> dict[str, Any]:
        event = await self.next_event()
        assert isinstance(event, TextMessage), event
        message: dict[str, Any] = orjson.loads(event.data)
        return message

    async def closed(self) -> tuple[int, list[dict[str, Any]]]:
        """The close code, and the messages before it."""
        messages = []
        while not isinstance(event := await self.next_event(), CloseConnection):
            assert isinstance(event, TextMessage), event
            messages.append(orjson.loads(event.data))
        return event.code, messages


@asynccontextmanager
async def open_peer(
    config: Config, headers: Sequence[tuple[bytes, bytes]] = ()
) -> AsyncIterator[tuple[Peer, Sessions]]:
    """A connection to a session that authenticates; the peer has seen the 101."""
    hub = Hub(universe=("AAPL", "MSFT", "TSLA"), clock=trio.current_time)
    delivery = Delivery(flush_delay=config.flush_delay, write_timeout=config.write_timeout)
    sessions = Sessions(
        config,
        hub,
        delivery,
        server_version="test",
        wall_clock=lambda: EPOCH + trio.current_time(),
    )
    ours, theirs = trio.testing.memory_stream_pair()
    client = WSConnection(ConnectionType.CLIENT)
    head = client.send(Request(host="test", target="/ws/peer", extra_headers=list(headers)))
    async with trio.open_nursery() as nursery:
        await nursery.start(delivery.run)
        await nursery.start(sessions.run)
        nursery.start_soon(sessions.handle, ours, parse_request_head(head))
        peer = Peer(theirs, client)
        assert isinstance(await peer.next_event(), AcceptConnection)
        yield peer, sessions
        nursery.cancel_scope.cancel()


CONFIG = Config(jwt_secret=SECRET, heartbeat_interval=1000.0)


async def authenticated(peer: Peer, auth: str) -> dict[str, Any]:
    await peer.send({"type": "auth", "token": auth})
    welcome = await peer.next_message()
    assert welcome["type"] == "welcome", welcome
    return welcome


async def test_at_exp_the_connection_closes_with_4401(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_peer(CONFIG) as (peer, sessions):
        started = trio.current_time()
        await authenticated(peer, token(ttl=60))
        code, messages = await peer.closed()
        assert trio.current_time() - started == 60
    assert code == 4401
    assert [(m["type"], m["code"]) for m in messages] == [("error", "unauthorized")]
    assert messages[0]["error"].startswith("Unauthorized: the token expired")
    assert sessions.unauthorized == 1


async def test_a_refresh_moves_exp_and_keeps_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_peer(CONFIG) as (peer, _):
        started = trio.current_time()
        await authenticated(peer, token(ttl=60))
        await trio.sleep(50)
        await peer.send({"type": "auth", "token": token(ttl=60), "id": "r1"})
        await peer.send({"type": "ping", "id": "p"})  # a refresh that works says nothing
        assert (await peer.next_message())["type"] == "pong"
        code, _ = await peer.closed()
        assert trio.current_time() - started == 110
    assert code == 4401


async def test_a_refresh_for_another_user_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_peer(CONFIG) as (peer, sessions):
        started = trio.current_time()
        await authenticated(peer, token(ttl=60))
        await peer.send({"type": "auth", "token": token(sub="mallory", ttl=600), "id": 7})
        refused = await peer.next_message()
        await peer.send({"type": "auth", "token": "garbage", "id": 8})
        garbage = await peer.next_message()
        code, _ = await peer.closed()  # still at the first token's exp
        assert trio.current_time() - started == 60
    assert (refused["type"], refused["code"], refused["id"]) == ("error", "unauthorized", 7)
    assert "it names another user (sub 'mallory')" in refused["error"]
    assert (garbage["code"], garbage["id"]) == ("unauthorized", 8)
    assert code == 4401
    assert sessions.refused_refreshes == 2


async def test_new_grants_end_what_they_no_longer_allow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_peer(CONFIG) as (peer, _):
        await authenticated(peer, token())
        for request in (
            {"type": "subscribe", "channel": "alerts"},
            {"type": "subscribe", "channel": "signals"},
            {"type": "subscribe", "channel": "prices", "symbols": ["AAPL", "MSFT"]},
        ):
            await peer.send(request)
            assert (await peer.next_message())["type"] == "subscribed"
        narrower = token(channels=["prices", "signals"], symbols=["AAPL", "TSLA"])
        await peer.send({"type": "auth", "token": narrower})
        ended = [await peer.next_message() for _ in range(2)]
        # What is still allowed goes on; what is not is refused from now on.
        await peer.send({"type": "subscribe", "channel": "alerts", "id": 1})
        refused = await peer.next_message()
    assert [(m["type"], m["channel"], m.get("symbols"), m["reason"]) for m in ended] == [
        ("unsubscribed", "alerts", None, "Your token no longer grants channel 'alerts'"),
        ("unsubscribed", "prices", ["AAPL"], "Your token no longer grants symbol MSFT"),
    ]
    assert (refused["code"], refused["id"]) == ("forbidden", 1)
    assert refused["error"] == "Forbidden: your token does not grant channel 'alerts'"


async def test_every_symbol_narrows_to_the_granted_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_peer(CONFIG) as (peer, sessions):
        await authenticated(peer, token())
        await peer.send({"type": "subscribe", "channel": "prices"})
        assert (await peer.next_message()).get("symbols") is None  # every symbol
        await peer.send({"type": "auth", "token": token(symbols=["TSLA", "NVDA"])})
        ended = await peer.next_message()
        subscriptions = sessions.subscriptions_of(sessions.hub.outboxes()[0])
        assert subscriptions is not None
        held = dict(iter(subscriptions))
    assert (ended["type"], ended["symbols"]) == ("unsubscribed", ["TSLA"])
    assert ended["reason"] == "Your token no longer grants every symbol"
    assert held == {"prices": frozenset({"TSLA"})}


async def test_without_a_token_in_time_the_connection_closes_with_4401(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_peer(attrs.evolve(CONFIG, auth_timeout=5.0)) as (peer, sessions):
        started = trio.current_time()
        code, messages = await peer.closed()
        assert trio.current_time() - started == 5
    assert code == 4401
    assert [m["code"] for m in messages] == ["unauthorized"]
    assert "within 5 s of connecting" in messages[0]["error"]
    assert sessions.hub.connection_count == 0


async def test_the_first_message_must_be_auth(autojump_clock: trio.testing.MockClock) -> None:
    async with open_peer(CONFIG) as (peer, _):
        await peer.send({"type": "subscribe", "channel": "prices"})
        code, messages = await peer.closed()
    assert code == 4401
    assert [m["type"] for m in messages] == ["error"]
    assert "authenticate first" in messages[0]["error"]
