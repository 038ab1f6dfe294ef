"""The Python client against the real gateway, on real sockets."""

from __future__ import annotations

import gc
import random
import socket
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

from protocol import (
    Channel,
    CloseCode,
    ErrorCode,
    Notification,
    NotificationData,
    NotificationType,
    PriceUpdate,
)
from realtime import Config, Server, serve
from realtime.client import (
    Backoff,
    ConnectError,
    ConnectionClosedError,
    Disconnected,
    HistoryGap,
    Item,
    Lagged,
    Reconnected,
    ReconnectFailed,
    RequestError,
    open_client,
)
from realtime.client._client import EVENT_RESERVE, _Inbox

from ..realtime.helpers import start_gateway

TIMEOUT = 10.0
#: Reconnects in tests: quick, and few, so a broken test fails fast.
FAST = Backoff(initial=0.05, max_delay=0.2, max_attempts=20, reset_after=5.0)


class _Ceiling(random.Random):
    """Jitter that always picks the largest delay: makes the schedule exact."""

    def random(self) -> float:
        return 1.0


def url_of(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def gateway_on(port: int, **settings: Any) -> AsyncIterator[Server]:
    """A gateway on ``port`` for the block; drained (1001) at its end."""
    settings.setdefault("tick_rate", 20.0)
    settings.setdefault("seed", 7)
    settings.setdefault("shutdown_grace", 3.0)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(serve, Config(port=port, **settings))
        try:
            yield server
        finally:
            server.shutdown()


async def next_of(client: AsyncIterator[Item], *kinds: type[Any]) -> Any:
    """The next item of one of ``kinds``, skipping others."""
    async for item in client:
        if isinstance(item, kinds):
            return item
    raise AssertionError(f"iteration ended before any {kinds}")


async def next_note(client: AsyncIterator[Item], note_id: str) -> Notification:
    """The next notification with ``note_id`` (feeds may publish their own)."""
    while True:
        note: Notification = await next_of(client, Notification)
        if note.data.id == note_id:
            return note


def notification(n: int) -> NotificationData:
    return NotificationData(id=f"n{n}", message=f"note {n}", type=NotificationType.INFO)


# --- the schedule ---------------------------------------------------------------------


def test_backoff_grows_exponentially_to_its_cap_with_full_jitter() -> None:
    backoff = Backoff()
    ceilings = [backoff.ceiling(n) for n in range(1, backoff.max_attempts + 1)]
    assert ceilings == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0]
    assert backoff.ceiling(10_000) == 30.0  # no overflow for long runs
    assert Backoff().schedule(_Ceiling().random) == ceilings
    # Full jitter: anywhere in [0, ceiling], and different for different clients.
    first, second = (
        Backoff().schedule(random.Random(1).random),
        Backoff().schedule(random.Random(2).random),
    )
    assert first != second
    for delays in (first, second):
        assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    many = [Backoff().delay(1, random.Random(seed).random) for seed in range(200)]
    assert min(many) < 0.5 < 1.5 < max(many) <= 2.0  # spread over the window
    assert Backoff(initial=0.5, multiplier=3, max_delay=10).schedule(_Ceiling().random)[:4] == [
        0.5,
        1.5,
        4.5,
        10.0,
    ]
    with pytest.raises(ValueError, match="invalid backoff"):
        Backoff(initial=0)


# --- the inbox bound ------------------------------------------------------------------------


async def test_inbox_is_bounded_and_reports_what_it_dropped() -> None:
    inbox = _Inbox(3)
    stamp = "2026-01-01T00:00:00Z"
    for n in range(10):
        inbox.put(_notification_message(n, stamp))
    assert len(inbox) == 4  # three messages and one Lagged marker
    for _ in range(6):
        inbox.put(Disconnected(1006, "", 1, 0.1))  # client events use the reserve
    assert len(inbox) <= 3 + EVENT_RESERVE + 1
    received = [await inbox.get() for _ in range(4)]
    assert [type(r) for r in received] == [Notification, Notification, Notification, Lagged]
    assert received[-1] == Lagged(7)
    assert inbox.missed == 7


def _notification_message(n: int, stamp: str) -> Notification:
    from datetime import datetime

    return Notification(data=notification(n), seq=n + 1, timestamp=datetime.fromisoformat(stamp))


# --- requests ------------------------------------------------------------------------------


async def test_subscribe_ping_and_typed_messages(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with open_client(url_of(server), "typed") as client:
            assert client.welcome is not None
            assert client.welcome.client_id == "typed"
            ack = await client.subscribe(Channel.PRICES, ["MSFT", "AAPL"])
            assert ack.symbols == ("AAPL", "MSFT")
            pong = await client.ping()
            assert pong.id is not None
            update = await next_of(client, PriceUpdate)
            assert update.symbol in {"AAPL", "MSFT"}
            ack2 = await client.unsubscribe(Channel.PRICES, ["AAPL"])
            assert ack2.symbols == ("MSFT",)
            assert client.subscriptions == {Channel.PRICES: frozenset({"MSFT"})}
            await client.subscribe(Channel.ALERTS)
            assert client.subscriptions[Channel.ALERTS] is None


async def test_error_reply_raises_the_typed_error(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with open_client(url_of(server), "erring") as client:
            with pytest.raises(RequestError) as raised:
                await client.subscribe("invalid_channel")
            assert raised.value.code == ErrorCode.UNKNOWN_CHANNEL
            assert raised.value.message == "Unknown channel: invalid_channel"
            assert raised.value.request_id is not None
            with pytest.raises(RequestError) as raised:
                await client.subscribe(Channel.PRICES, ["ZZZZ"])
            assert raised.value.code == ErrorCode.UNKNOWN_SYMBOL
            assert client.subscriptions == {}
            await client.ping()  # still usable


async def test_msgpack_codec(nursery: trio.Nursery) -> None:
    from protocol import Codec

    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with open_client(url_of(server), "packed", codec=Codec.MSGPACK) as client:
            await client.subscribe(Channel.PRICES, ["AAPL"])
            assert (await next_of(client, PriceUpdate)).symbol == "AAPL"


# --- fatal closes -----------------------------------------------------------------------


async def test_invalid_id_fails_fast_with_4400(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT), pytest.raises(ConnectionClosedError) as raised:
        async with open_client(url_of(server), "x" * 65):
            pass  # pragma: no cover
    assert raised.value.code == CloseCode.INVALID_CLIENT_ID
    assert raised.value.fatal


async def test_replaced_connection_stops_with_4409_and_no_retry(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with open_client(url_of(server), "twin", backoff=FAST) as older:
            await older.subscribe(Channel.ALERTS)
            async with open_client(url_of(server), "twin", backoff=FAST) as newer:
                with pytest.raises(ConnectionClosedError) as raised:
                    async for _ in older:
                        pass
                assert raised.value.code == CloseCode.REPLACED
                assert raised.value.fatal
                with pytest.raises(ConnectionClosedError):
                    await older.ping()
                await trio.sleep(0.3)  # several backoff periods: still no retry
                assert older.statistics().reconnects == 0
                assert server.hub.statistics().clients == ("twin",)
                await newer.ping()


async def test_refused_handshake_without_retries_fails_fast_without_leaking(
    nursery: trio.Nursery,
) -> None:
    server = await start_gateway(nursery, max_connections=1)
    never = Backoff(max_attempts=0)
    with trio.fail_after(TIMEOUT):
        async with open_client(url_of(server), "first"):
            with pytest.raises(ConnectError) as raised:
                async with open_client(url_of(server), "second", backoff=never):
                    pass  # pragma: no cover
            assert raised.value.status_code == 503
            assert "gave up" not in str(raised.value)
        with pytest.raises(ConnectError):
            async with open_client("ws://127.0.0.1:1", "nobody", backoff=never):
                pass  # pragma: no cover
    _assert_no_leaked_sockets()


async def test_a_first_connect_refused_for_now_is_retried(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """503 at capacity: the second client gets in once the first one leaves."""
    server = await start_gateway(nursery, max_connections=1)
    with trio.fail_after(TIMEOUT):
        async with open_client(url_of(server), "first") as first, trio.open_nursery() as inner:

            async def second() -> None:
                async with open_client(url_of(server), "second", backoff=FAST) as client:
                    await client.ping()

            inner.start_soon(second)
            while not any("cannot connect yet" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.01)
            await first.aclose()
    (retry, *_) = [r.getMessage() for r in caplog.records if "cannot connect yet" in r.getMessage()]
    assert "[client second] cannot connect yet (handshake refused by" in retry
    assert "HTTP 503); retry 1 of 20 in" in retry
    _assert_no_leaked_sockets()


async def test_another_status_is_not_retried(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_gateway(nursery)
    # No WebSocket lives under /nowhere: refused (today with a 500), and never retried.
    with trio.fail_after(TIMEOUT), pytest.raises(ConnectError) as raised:
        async with open_client(f"ws://127.0.0.1:{server.port}/nowhere", "x", backoff=FAST):
            pass  # pragma: no cover
    assert raised.value.status_code not in (None, 429, 502, 503, 504)
    assert not [r for r in caplog.records if "cannot connect yet" in r.getMessage()]


def _assert_no_leaked_sockets() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


# --- reconnecting -----------------------------------------------------------------------


async def test_reconnect_after_restart_restores_subscriptions() -> None:
    port = free_port()
    with trio.fail_after(TIMEOUT):
        async with (
            gateway_on(port) as first,
            open_client(f"ws://127.0.0.1:{port}", "survivor", backoff=FAST) as client,
        ):
            await client.subscribe(Channel.PRICES, ["AAPL", "NVDA"])
            await client.subscribe(Channel.NOTIFICATIONS)
            await first.bus.publish(Channel.NOTIFICATIONS, notification(1))
            seen = await next_note(client, "n1")
            first.shutdown()  # drain: every client gets 1001
            gone = await next_of(client, Disconnected)
            assert gone.code == CloseCode.GOING_AWAY
            # The first gateway is gone; the client keeps retrying meanwhile.
            async with gateway_on(port) as second:
                back = await next_of(client, Reconnected)
                assert back.welcome.epoch == second.hub.epoch != first.hub.epoch
                # History of the old epoch is gone: the client says so, then resyncs.
                gap = await next_of(client, HistoryGap)
                assert (gap.channel, gap.epoch) == (Channel.NOTIFICATIONS, first.hub.epoch)
                assert gap.since >= seen.seq  # the feeds may have announced their shutdown
                update = await next_of(client, PriceUpdate)
                assert update.symbol in {"AAPL", "NVDA"}
                await client.ping()
                stats = second.hub.statistics()
                assert stats.symbol_subscriptions == {"AAPL": 1, "NVDA": 1}
                assert stats.channel_subscriptions["notifications"] == 1
                await second.bus.publish(Channel.NOTIFICATIONS, notification(2))
                await next_note(client, "n2")  # not taken for a duplicate of the old epoch
                assert client.statistics().reconnects == 1


async def test_resume_replays_missed_notifications(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    pause = Backoff(initial=0.3, max_delay=0.3, max_attempts=3)
    with trio.fail_after(TIMEOUT):
        async with open_client(url_of(server), "resumer", backoff=pause, rng=_Ceiling()) as client:
            await client.subscribe(Channel.NOTIFICATIONS)
            await server.bus.publish(Channel.NOTIFICATIONS, notification(1))
            assert (await next_of(client, Notification)).seq == 1
            # The server ends the connection as its heartbeat does (1011): reconnectable.
            for outbox in server.hub.outboxes():
                outbox.close(CloseCode.INTERNAL_ERROR, "test: dropped")
            gone = await next_of(client, Disconnected)
            assert (gone.code, gone.delay) == (CloseCode.INTERNAL_ERROR, 0.3)
            assert server.hub.connection_count == 0
            for n in (2, 3):  # published while the client is away
                await server.bus.publish(Channel.NOTIFICATIONS, notification(n))
            items = [await client.receive() for _ in range(3)]
            assert isinstance(items[0], Reconnected)
            notes = [i for i in items[1:] if isinstance(i, Notification)]
            assert [(n.data.id, n.seq) for n in notes] == [("n2", 2), ("n3", 3)]
            await server.bus.publish(Channel.NOTIFICATIONS, notification(4))
            assert (await next_of(client, Notification)).seq == 4
            assert client.statistics().missed == 0


async def test_a_node_local_notice_is_delivered_and_moves_no_position(
    nursery: trio.Nursery,
) -> None:
    server = await start_gateway(nursery, feeds=False)
    pause = Backoff(initial=0.3, max_delay=0.3, max_attempts=3)
    local = NotificationData(id="local", message="interrupted", type=NotificationType.WARNING)
    with trio.fail_after(TIMEOUT):
        async with open_client(url_of(server), "noticed", backoff=pause, rng=_Ceiling()) as client:
            await client.subscribe(Channel.NOTIFICATIONS)
            await server.bus.publish(Channel.NOTIFICATIONS, notification(1))
            server.hub.announce(local)  # seq 0: outside the stream (a cluster node's)
            await server.bus.publish(Channel.NOTIFICATIONS, notification(2))
            notes = [await next_of(client, Notification) for _ in range(3)]
            assert [(n.data.id, n.seq) for n in notes] == [("n1", 1), ("local", 0), ("n2", 2)]
            for outbox in server.hub.outboxes():
                outbox.close(CloseCode.INTERNAL_ERROR, "test: dropped")
            await next_of(client, Disconnected)
            await server.bus.publish(Channel.NOTIFICATIONS, notification(3))
            # Resumed from 2, not from 0: n3 alone, no duplicate.
            assert (await next_of(client, Notification)).data.id == "n3"
            await server.bus.publish(Channel.NOTIFICATIONS, notification(4))
            assert (await next_of(client, Notification)).data.id == "n4"


async def test_gives_up_after_max_attempts() -> None:
    port = free_port()
    few = Backoff(initial=0.01, max_delay=0.02, max_attempts=3)
    with trio.fail_after(TIMEOUT):
        async with (
            gateway_on(port) as server,
            open_client(f"ws://127.0.0.1:{port}", "quitter", backoff=few) as client,
        ):
            server.shutdown()
            attempts = []
            with pytest.raises(ReconnectFailed) as raised:  # noqa: PT012 - raised by the loop
                async for item in client:
                    if isinstance(item, Disconnected):
                        attempts.append(item.attempt)
            assert attempts == [1, 2, 3]
            assert raised.value.attempts == 3
            assert isinstance(raised.value.__cause__, ConnectError)
            with pytest.raises(ReconnectFailed):
                await client.ping()
    _assert_no_leaked_sockets()


async def test_request_in_flight_survives_a_reconnect(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    with trio.fail_after(TIMEOUT):
        async with open_client(url_of(server), "patient", backoff=FAST) as client:
            for outbox in server.hub.outboxes():
                outbox.close(CloseCode.SLOW_CONSUMER, "test: dropped")
            # Sent on the closing connection or waiting for the next: answered either way.
            pong = await client.ping()
            assert pong.id is not None
            await next_of(client, Reconnected)


# --- a consumer that falls behind ----------------------------------------------------------


async def test_slow_consumer_is_told_with_lagged(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    with trio.fail_after(TIMEOUT):
        async with open_client(url_of(server), "sluggard", buffer_size=4) as client:
            await client.subscribe(Channel.NOTIFICATIONS)
            for n in range(1, 11):
                await server.bus.publish(Channel.NOTIFICATIONS, notification(n))
            while client.statistics().received < 12:  # welcome, ack, 10 notifications
                await trio.sleep(0.01)
            assert client.statistics().buffered == 5
            items = [await client.receive() for _ in range(5)]
            assert [i.seq for i in items[:4] if isinstance(i, Notification)] == [1, 2, 3, 4]
            assert items[4] == Lagged(6)
            await server.bus.publish(Channel.NOTIFICATIONS, notification(11))
            item = await client.receive()
            assert isinstance(item, Notification)
            assert item.seq == 11


async def test_prices_conflate_instead_of_piling_up(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, tick_rate=50.0)
    with trio.fail_after(TIMEOUT):
        async with open_client(url_of(server), "dozer", buffer_size=4) as client:
            await client.subscribe(Channel.PRICES, ["AAPL"])
            while client.statistics().conflated < 5:
                await trio.sleep(0.02)
            stats = client.statistics()
            assert stats.buffered == 1
            assert stats.missed == 0
            first = await client.receive()
            assert isinstance(first, PriceUpdate)
            assert first.seq > 5  # the newest, not the oldest


async def test_a_ping_crossing_the_clients_close_does_not_crash_it(nursery: trio.Nursery) -> None:
    """A server ping that arrives after the client sent its close: trio-websocket 0.12
    answers it with a pong wsproto refuses in that state, and its reader raises."""
    from datetime import UTC, datetime

    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

    from protocol import PROTOCOL_VERSION, Welcome, encode

    welcome = Welcome(
        client_id="crossing",
        protocol=PROTOCOL_VERSION,
        server="test",
        channels=(),
        symbols=(),
        heartbeat_interval=20.0,
        epoch="e",
        timestamp=datetime.now(UTC),
    )

    async def pinging_server(stream: trio.SocketStream) -> None:
        server = WSConnection(ConnectionType.SERVER)
        async with stream:
            while True:
                data = await stream.receive_some()
                if not data:
                    return
                server.receive_data(data)
                for event in server.events():
                    if isinstance(event, Request):
                        out = server.send(AcceptConnection())
                        out += server.send(TextMessage(data=encode(welcome).decode()))
                        await stream.send_all(out)
                    elif isinstance(event, CloseConnection):
                        # The ping first, then the reply to the client's close.
                        out = b"\x89\x00" + server.send(event.response())
                        await stream.send_all(out)
                        return

    listeners = await nursery.start(partial(trio.serve_tcp, pinging_server, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(TIMEOUT):
        async with open_client(f"ws://127.0.0.1:{port}", "crossing") as client:
            assert client.welcome is not None
        # Leaving the block closed the client without raising.
