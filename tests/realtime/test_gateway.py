"""The gateway over real sockets: the seed's acceptance tests and the session rules."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from protocol import Channel, ErrorCode, NotificationData, NotificationType

from .helpers import (
    TIMEOUT,
    close_of,
    connect,
    http_get,
    http_requests,
    metric,
    open_ws,
    start_gateway,
    ws_url,
)

# --- the seed's five acceptance tests ---------------------------------------------------


async def test_connection(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with connect(server, "client-123") as client:
            welcome = client.welcome
            assert welcome["client_id"] == "client-123"
            assert welcome["protocol"] == "1"
            assert welcome["channels"] == [
                "prices",
                "alerts",
                "signals",
                "portfolio",
                "notifications",
            ]
            assert welcome["symbols"][:7] == [
                "AAPL",
                "MSFT",
                "GOOG",
                "AMZN",
                "NVDA",
                "META",
                "TSLA",
            ]
            assert welcome["heartbeat_interval"] == 20.0
            assert welcome["epoch"] == server.hub.epoch
            assert welcome["timestamp"].endswith("Z")
            status, body = await http_get(server.port, "/ws/stats")
            assert status == 200
            assert json.loads(body)["clients"] == ["client-123"]


async def test_subscription(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            ack = await client.request(
                {"type": "subscribe", "channel": "prices", "symbols": ["MSFT", "AAPL"], "id": 1},
                "subscribed",
            )
            assert ack["channel"] == "prices"
            assert ack["symbols"] == ["AAPL", "MSFT"]
            assert ack["id"] == 1
            ack = await client.request(
                {"type": "subscribe", "channel": "alerts", "id": "a"}, "subscribed"
            )
            assert ack == {
                "type": "subscribed",
                "channel": "alerts",
                "seq": ack["seq"],  # the channel's position: the feeds may have fired
                "id": "a",
                "timestamp": ack["timestamp"],
            }
            assert ack["seq"] >= 0
            ack = await client.request(
                {"type": "unsubscribe", "channel": "prices", "symbols": ["AAPL"], "id": 2},
                "unsubscribed",
            )
            assert ack["symbols"] == ["MSFT"]
            assert ack["id"] == 2
            _, body = await http_get(server.port, "/ws/stats")
            stats = json.loads(body)
            assert stats["channel_subscriptions"] == {"client-123": ["prices", "alerts"]}
            assert stats["symbol_subscriptions"] == {"client-123": ["MSFT"]}


async def test_price_updates(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, tick_rate=10.0)
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            await client.request(
                {"type": "subscribe", "channel": "prices", "symbols": ["AAPL", "NVDA"]},
                "subscribed",
            )
            # The snapshot comes first: the last known price of each symbol, at once.
            snapshot = [await client.receive(), await client.receive()]
            assert {m["symbol"] for m in snapshot} == {"AAPL", "NVDA"}
            # Then updates of those two only, in order: five of each, however long it takes.
            updates = await client.collect_until(
                lambda kept: all(
                    sum(m["symbol"] == symbol for m in kept) >= 5 for symbol in ("AAPL", "NVDA")
                ),
                _is_price,
            )
            assert {m["symbol"] for m in updates} == {"AAPL", "NVDA"}
            for symbol in ("AAPL", "NVDA"):
                seqs = [m["seq"] for m in snapshot + updates if m["symbol"] == symbol]
                assert seqs == sorted(seqs)
                assert len(set(seqs)) == len(seqs)
            data = updates[-1]["data"]
            assert set(data) == {"price", "change", "change_pct", "volume", "bid", "ask"}
            assert data["bid"] < data["ask"]


async def test_ping_pong(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            pong = await client.request({"type": "ping", "id": "ping-1"}, "pong")
            assert pong["id"] == "ping-1"
            pong = await client.request({"type": "ping"}, "pong")
            assert "id" not in pong


async def test_multiple_clients(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with connect(server, "alice") as alice, connect(server, "bob") as bob:
            for client in (alice, bob):
                await client.request(
                    {"type": "subscribe", "channel": "prices", "symbols": ["TSLA"]}, "subscribed"
                )
            # Each reads up to an update published after both subscribed.
            last = server.hub.last_price("TSLA")
            assert last is not None
            later = last.seq + 2

            def reached(kept: list[dict[str, Any]]) -> bool:
                return bool(kept) and kept[-1]["seq"] >= later

            seen_by_alice = {m["seq"] for m in await alice.collect_until(reached, _is_price)}
            seen_by_bob = {m["seq"] for m in await bob.collect_until(reached, _is_price)}
            assert seen_by_alice & seen_by_bob  # the same updates reach both
            _, body = await http_get(server.port, "/ws/stats")
            stats = json.loads(body)
            assert stats["total_connections"] == 2
            assert stats["clients"] == ["alice", "bob"]
            assert stats["symbol_subscriptions"] == {"alice": ["TSLA"], "bob": ["TSLA"]}


def _is_price(message: dict[str, object]) -> bool:
    return message["type"] == "price_update"


# --- errors: each with its code, and the connection still usable ---------------------------

BAD_REQUESTS = [
    ("not json", ErrorCode.INVALID_JSON, None),
    ('{"type":"dance","id":3}', ErrorCode.UNKNOWN_TYPE, 3),
    ('{"type":"subscribe","channel":"invalid_channel","id":"x"}', ErrorCode.UNKNOWN_CHANNEL, "x"),
    ('{"type":"subscribe","channel":"prices","symbols":["aapl"]}', ErrorCode.INVALID_SYMBOL, None),
    ('{"type":"subscribe","channel":"prices","symbols":["ZZZZ"]}', ErrorCode.UNKNOWN_SYMBOL, None),
    (
        '{"type":"subscribe","channel":"prices","symbols":["AAPL","MSFT","GOOG"]}',
        ErrorCode.TOO_MANY_SYMBOLS,
        None,
    ),
    ('{"type":"subscribe"}', ErrorCode.INVALID_MESSAGE, None),
    (
        '{"type":"subscribe","channel":"alerts","since":5,"epoch":"old"}',
        ErrorCode.HISTORY_UNAVAILABLE,
        None,
    ),
]


async def test_every_bad_request_gets_its_error_and_the_connection_stays_usable(
    nursery: trio.Nursery,
) -> None:
    server = await start_gateway(nursery, max_symbols=2)
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            for frame, code, request_id in BAD_REQUESTS:
                error = await client.request(frame, "error")
                assert error["code"] == code, frame
                assert error["error"], frame
                assert error.get("id") == request_id, frame
                pong = await client.request({"type": "ping", "id": 1}, "pong")
                assert pong["id"] == 1
            assert (await client.request(BAD_REQUESTS[2][0], "error"))["error"] == (
                "Unknown channel: invalid_channel"
            )


async def test_invalid_client_id_is_closed_with_4400(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        for bad in ("x" * 65, "bad%20id", "a/b"):
            async with open_ws(ws_url(server, bad)) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                code, reason = close_of(closed.value)
                assert code == 4400
                assert "Invalid client id" in reason


async def test_oversized_message_is_closed_with_1009(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, max_message_size=1024)
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            await client.send('{"type":"ping","id":"' + "x" * 2000 + '"}')
            with pytest.raises(ConnectionClosed) as closed:
                await client.next("never")
            assert close_of(closed.value)[0] == 1009
        async with connect(server) as client:  # the server is unharmed
            assert (await client.request({"type": "ping", "id": 2}, "pong"))["id"] == 2


async def test_rate_limit_answers_then_closes_4429(
    nursery: trio.Nursery, socket_clock: trio.testing.MockClock
) -> None:
    server = await start_gateway(nursery, rate_limit=5.0, rate_burst=5, rate_strikes=3)
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            for i in range(5):
                await client.send({"type": "ping", "id": i})
            await client.send({"type": "ping", "id": "over"})
            replies = [await client.next("pong", "error") for _ in range(6)]
            assert [r["type"] for r in replies] == ["pong"] * 5 + ["error"]
            assert replies[-1]["code"] == "rate_limited"
            for _ in range(3):
                await client.send({"type": "ping"})
            with pytest.raises(ConnectionClosed) as closed:
                await client.next("never")
            assert close_of(closed.value)[0] == 4429


async def test_second_connection_with_same_id_replaces_the_first(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with connect(server, "twin") as older:
            await older.request({"type": "subscribe", "channel": "alerts"}, "subscribed")
            async with connect(server, "twin") as newer:
                with pytest.raises(ConnectionClosed) as closed:
                    await older.next("never")
                assert close_of(closed.value)[0] == 4409
                assert (await newer.request({"type": "ping", "id": 1}, "pong"))["id"] == 1
                stats = server.hub.statistics()
                assert stats.clients == ("twin",)
                assert stats.channel_subscriptions["alerts"] == 0


async def test_subscribed_carries_the_position_the_channel_continues_from(
    nursery: trio.Nursery,
) -> None:
    server = await start_gateway(nursery, feeds=False)
    subscribe = {"type": "subscribe", "channel": "notifications"}

    def note(n: int) -> NotificationData:
        return NotificationData(id=f"n{n}", message=f"note {n}", type=NotificationType.INFO)

    def notes(message: dict[str, Any]) -> bool:
        return bool(message["type"] == "notification")

    with trio.fail_after(TIMEOUT):
        async with connect(server, "early") as early:
            # Nothing published yet, and still a position to resume from.
            assert (await early.request(subscribe, "subscribed"))["seq"] == 0
            prices = {"type": "subscribe", "channel": "prices", "symbols": ["AAPL"]}
            assert "seq" not in await early.request(prices, "subscribed")  # counted per symbol
            for n in (1, 2, 3):
                await server.bus.publish(Channel.NOTIFICATIONS, note(n))
            assert [m["seq"] for m in await early.queued(notes)] == [1, 2, 3]
            epoch = early.welcome["epoch"]
        async with connect(server, "late") as late:
            # What follows the ack is exactly what comes after its seq.
            assert (await late.request(subscribe, "subscribed"))["seq"] == 3
            await server.bus.publish(Channel.NOTIFICATIONS, note(4))
            assert [m["seq"] for m in await late.queued(notes)] == [4]
        async with connect(server, "resumer") as resumer:
            # A resume's position is its since: the replay follows the ack.
            ack = await resumer.request({**subscribe, "since": 1, "epoch": epoch}, "subscribed")
            assert ack["seq"] == 1
            assert [m["seq"] for m in await resumer.queued(notes)] == [2, 3, 4]


async def test_msgpack_subprotocol(nursery: trio.Nursery) -> None:
    import msgpack

    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with open_ws(ws_url(server, "packed"), subprotocols=["realtime.v1.msgpack"]) as ws:
            assert ws.subprotocol == "realtime.v1.msgpack"
            welcome = msgpack.unpackb(await ws.get_message())
            assert welcome["type"] == "welcome"
            await ws.send_message(
                msgpack.packb(
                    {"type": "subscribe", "channel": "prices", "symbols": ["AAPL"], "id": 9}
                )
            )
            ack = msgpack.unpackb(await ws.get_message())
            assert ack["type"] == "subscribed"
            assert ack["id"] == 9
            update = msgpack.unpackb(await ws.get_message())
            assert update["type"] == "price_update"
            assert update["symbol"] == "AAPL"


async def test_heartbeat_closes_a_silent_peer_and_keeps_a_live_one(
    nursery: trio.Nursery, socket_clock: trio.testing.MockClock
) -> None:
    from wsproto import WSConnection
    from wsproto.connection import ConnectionType
    from wsproto.events import CloseConnection, Request

    server = await start_gateway(nursery, heartbeat_interval=0.2, heartbeat_misses=2)
    with trio.fail_after(TIMEOUT):
        # trio-websocket answers pings by itself: this client stays connected.
        async with connect(server, "alive") as alive:
            # A raw peer that never answers a ping is closed with 1011.
            peer = WSConnection(ConnectionType.CLIENT)
            close_code = None
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
                await stream.send_all(peer.send(Request(host="127.0.0.1", target="/ws/silent")))
                while close_code is None:
                    data = await stream.receive_some()
                    if not data:
                        break
                    peer.receive_data(data)
                    for event in peer.events():
                        if isinstance(event, CloseConnection):
                            close_code = event.code
            assert close_code == 1011
            # Two more heartbeats (pings to it are all the server sends it), still alive.
            sent = await metric(server.port, "realtime_messages_sent_total")
            while await metric(server.port, "realtime_messages_sent_total") < sent + 2:
                await trio.sleep(0.05)
            assert (await alive.request({"type": "ping", "id": 1}, "pong"))["id"] == 1
            # Counted once its close has finished (the peer left: at once).
            closes = 'realtime_connection_closes_total{by="server",code="1011"}'
            while await metric(server.port, closes) < 1:
                await trio.sleep(0.05)
            assert await metric(server.port, closes) == 1


# --- HTTP on the same port ------------------------------------------------------------


async def test_http_routes_on_the_same_port(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with connect(server, "watcher") as client:
            await client.request(
                {"type": "subscribe", "channel": "prices", "symbols": ["AAPL"]}, "subscribed"
            )
            responses = await http_requests(
                server.port,
                [
                    ("GET", "/health", b""),
                    ("GET", "/ws/stats", b""),
                    ("GET", "/metrics", b""),
                    ("GET", "/", b""),
                    ("GET", "/nope", b""),
                    ("GET", "/ws/not-an-upgrade", b""),
                    ("POST", "/health", b"{}"),
                    ("GET", "/health", b""),
                ],
            )
    statuses = [status for status, _, _ in responses]
    assert statuses == [200, 200, 200, 200, 404, 426, 405, 200]
    assert json.loads(responses[0][2])["status"] == "ok"
    stats = json.loads(responses[1][2])
    assert set(stats) == {
        "total_connections",
        "clients",
        "channel_subscriptions",
        "symbol_subscriptions",
    }
    assert stats["symbol_subscriptions"] == {"watcher": ["AAPL"]}
    metrics = responses[2][2].decode()
    assert "realtime_connections 1.0" in metrics
    assert 'realtime_channel_subscriptions{channel="prices"} 1.0' in metrics
    assert 'realtime_symbol_subscribers{symbol="AAPL"} 1.0' in metrics
    assert "realtime_messages_sent_total" in metrics
    match = re.search(r"^realtime_trio_tasks (\S+)$", metrics, re.MULTILINE)
    assert match is not None
    tasks = float(match[1])
    assert "process_resident_memory_bytes" in metrics
    assert tasks >= 4  # at least: the flusher, the watchdog, the listener, the watcher
    assert responses[3][1]["content-type"].startswith("text/html")


async def test_shutdown_closes_every_client_with_1001(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, shutdown_grace=5.0)
    codes: list[int] = []

    async def client(name: str) -> None:
        async with connect(server, name) as c:
            await c.request({"type": "subscribe", "channel": "prices"}, "subscribed")
            try:
                while True:
                    await c.receive()
            except ConnectionClosed as closed:
                codes.append(close_of(closed)[0])

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as clients:
            for i in range(5):
                clients.start_soon(client, f"c{i}")
            # Subscribed, not just connected: a close before the ack would be no 1001 test.
            while server.hub.statistics().channel_subscriptions["prices"] < 5:
                await trio.sleep(0.01)
            server.shutdown()
    assert codes == [1001] * 5


async def test_tls_serves_wss(nursery: trio.Nursery, tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(certfile))
    issued.private_key_pem.write_to_path(str(keyfile))
    server = await start_gateway(nursery, certfile=certfile, keyfile=keyfile)
    assert server.url.startswith("https://")
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with trio.fail_after(TIMEOUT):
        async with open_ws(
            f"wss://127.0.0.1:{server.port}/ws/secure", ssl_context=client_context
        ) as ws:
            assert json.loads(await ws.get_message())["type"] == "welcome"
            await ws.send_message(json.dumps({"type": "subscribe", "channel": "prices"}))
            prices = 0
            while prices < 50:
                prices += json.loads(await ws.get_message())["type"] == "price_update"
            # TLS cannot be written without a task: the connection keeps one writer,
            # started once, instead of one per burst.
            assert (server.delivery.writers, server.delivery.blocked_writes) == (1, 1)


# --- per source IP ------------------------------------------------------------------


async def test_loopback_is_exempt_from_the_connect_rate_unless_limited(
    nursery: trio.Nursery,
) -> None:
    # The suite and the benchmark open thousands of connections from 127.0.0.1.
    limits: dict[str, Any] = {"connect_rate": 0.01, "connect_burst": 3, "feeds": False}
    exempt = await start_gateway(nursery, **limits)
    limited = await start_gateway(nursery, limit_loopback=True, **limits)
    with trio.fail_after(TIMEOUT):
        for _ in range(10):
            assert (await http_get(exempt.port, "/health"))[0] == 200
            async with connect(exempt, "loopback"):
                pass
        heads = []
        for _ in range(5):
            async with await trio.open_tcp_stream("127.0.0.1", limited.port) as stream:
                await stream.send_all(
                    b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                )
                response = b""
                while chunk := await stream.receive_some():
                    response += chunk
            heads.append(response.split(b"\r\n\r\n")[0])
        assert [head.split(b" ")[1] for head in heads] == [b"200"] * 3 + [b"429"] * 2
        assert b"\r\nRetry-After: 100" in heads[-1]
    assert limited.listener.statistics().refused_rate_total == 2
    assert exempt.listener.statistics().refused_rate_total == 0


UPGRADE = (
    b"GET %s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def _responses(stream: trio.SocketStream, count: int) -> list[bytes]:
    """Read ``count`` whole responses (head and Content-Length body) off ``stream``."""
    data, responses = b"", list[bytes]()
    while len(responses) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            declared = re.search(rb"content-length: (\d+)", data[:end].lower())
            assert declared is not None, data
            length = int(declared[1])
            if len(data) >= end + 4 + length:
                responses.append(data[: end + 4 + length])
                data = data[end + 4 + length :]
                continue
        chunk = await stream.receive_some()
        assert chunk, data
        data += chunk
    return responses


async def test_an_upgrade_to_another_path_gets_404(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await stream.send_all(UPGRADE % b"/nowhere/ws/x")
            [response] = await _responses(stream, 1)
    assert response.startswith(b"HTTP/1.1 404 "), response
    assert b"connect to /ws/{client_id}" in response


async def test_an_upgrade_after_another_request_on_the_connection_gets_400(
    nursery: trio.Nursery,
) -> None:
    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            [health] = await _responses(stream, 1)
            await stream.send_all(UPGRADE % b"/ws/late")
            [late] = await _responses(stream, 1)
    assert health.startswith(b"HTTP/1.1 200 "), health
    assert late.startswith(b"HTTP/1.1 400 "), late
    assert b"a connection of its own" in late
