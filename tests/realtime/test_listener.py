"""The shared listener: hand-off to hypercorn, WebSockets beside it, limits, drain."""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial

import h2.config
import h2.connection
import h2.events
import h11
import pytest
import trio
import trio.testing
import trio_websocket
import trustme
from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import Request

from realtime.ws import (
    ConnectionClosed,
    Listener,
    RequestHead,
    SourceLimits,
    SourceTable,
    accept_websocket,
    bind_shared,
    serve,
)

StartListener = Callable[..., Awaitable[Listener]]
OpenClient = Callable[..., AbstractAsyncContextManager[trio_websocket.WebSocketConnection]]
HOST = "127.0.0.1"
TIMEOUT = 5


async def echo(stream: trio.abc.Stream, request: RequestHead) -> None:
    ws = await accept_websocket(stream, request)
    try:
        while True:
            await ws.send_message(await ws.receive_message())
    except ConnectionClosed:
        pass
    finally:
        await ws.aclose()


async def read_until_closed(stream: trio.abc.Stream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and return all the server says."""
    async with await trio.open_tcp_stream(HOST, port) as stream:
        await stream.send_all(data)
        return await read_until_closed(stream)


async def http_exchange(
    stream: trio.abc.Stream,
    connection: h11.Connection,
    method: bytes,
    target: bytes,
    body: bytes = b"",
) -> tuple[h11.Response, bytes]:
    """Send one request with h11 on a kept-alive connection; read its response."""
    headers = [(b"host", b"test"), (b"content-length", str(len(body)).encode())]
    data = connection.send(h11.Request(method=method, target=target, headers=headers)) or b""
    if body:
        data += connection.send(h11.Data(data=body)) or b""
    data += connection.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)
    response: h11.Response | None = None
    content = b""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(bytes(await stream.receive_some()))
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            content += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            connection.start_next_cycle()
            return response, content
        else:  # pragma: no cover - diagnostic
            raise AssertionError(f"unexpected {event!r}")


def ws_url(port: int, path: str = "/ws/client-1") -> str:
    return f"ws://{HOST}:{port}{path}"


async def test_health_over_a_raw_socket(start_listener: StartListener) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo)
        response = await raw_exchange(
            listener.port, b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert response.startswith(b"HTTP/1.1 200 \r\n")
        assert response.endswith(b'\r\n\r\n{"status":"ok"}')


async def test_keep_alive_requests_on_one_connection(start_listener: StartListener) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo)
        connection = h11.Connection(h11.CLIENT)
        async with await trio.open_tcp_stream(HOST, listener.port) as stream:
            response, body = await http_exchange(stream, connection, b"GET", b"/health")
            assert (response.status_code, body) == (200, b'{"status":"ok"}')
            response, body = await http_exchange(stream, connection, b"GET", b"/ws/stats")
            assert (response.status_code, body) == (200, b'{"total_connections":0}')
            response, body = await http_exchange(stream, connection, b"POST", b"/echo", b"hi")
            assert (response.status_code, body) == (200, b"hi")
            response, body = await http_exchange(stream, connection, b"GET", b"/missing")
            assert (response.status_code, body) == (404, b"not found")
            response, body = await http_exchange(stream, connection, b"GET", b"/health")
            assert response.status_code == 200
            stats = listener.statistics()
            assert (stats.accepted_total, stats.http_connections, stats.websockets) == (1, 1, 0)


async def test_post_with_a_large_body(start_listener: StartListener) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo)
        payload = bytes(range(256)) * 1000  # larger than any single read of the listener
        connection = h11.Connection(h11.CLIENT)
        async with await trio.open_tcp_stream(HOST, listener.port) as stream:
            response, body = await http_exchange(stream, connection, b"POST", b"/echo", payload)
        assert response.status_code == 200
        assert body == payload


async def test_pipelined_bytes_read_with_the_head_are_not_lost(
    start_listener: StartListener,
) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo)
        # One write: a POST with its body, a second request, and a third that closes.
        data = (
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nfirst"
            b"GET /missing HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        response = await raw_exchange(listener.port, data)
        assert response.count(b"HTTP/1.1 ") == 3
        first, second, third = response.split(b"HTTP/1.1 ")[1:]
        assert first.startswith(b"200 ")
        assert first.endswith(b"\r\n\r\nfirst")
        assert second.startswith(b"404 ")
        assert third.startswith(b"200 ")
        assert third.endswith(b'{"status":"ok"}')


async def test_websocket_and_http_share_the_port(
    start_listener: StartListener, open_client: OpenClient
) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo)
        async with open_client(ws_url(listener.port)) as ws:
            await ws.send_message("before")
            assert await ws.get_message() == "before"
            connection = h11.Connection(h11.CLIENT)
            async with await trio.open_tcp_stream(HOST, listener.port) as stream:
                response, _ = await http_exchange(stream, connection, b"GET", b"/health")
                assert response.status_code == 200
                await ws.send_message("during")
                assert await ws.get_message() == "during"
                stats = listener.statistics()
                assert (stats.websockets, stats.http_connections) == (1, 1)
                response, _ = await http_exchange(stream, connection, b"GET", b"/health")
                assert response.status_code == 200


async def test_ws_paths_that_are_not_upgrades_go_to_the_app(
    start_listener: StartListener,
) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo)
        stats = await raw_exchange(
            listener.port, b"GET /ws/stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert stats.startswith(b"HTTP/1.1 200 ")
        assert stats.endswith(b'{"total_connections":0}')
        plain = await raw_exchange(
            listener.port, b"GET /ws/client-1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert b"x-path: /ws/client-1" in plain  # answered by the app, not by us


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-Many: b\r\n" * 2000 + b"\r\n", b"431"),
        (b"GET /\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n", b"400"),
        (b"GET / HTTP/3.0\r\nHost: t\r\n\r\n", b"505"),
    ],
)
async def test_bad_request_heads_are_refused(
    start_listener: StartListener, request_bytes: bytes, status: bytes
) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo)
        response = await raw_exchange(listener.port, request_bytes)
        assert response.startswith(b"HTTP/1.1 " + status + b" ")
        assert listener.statistics().refused_total == 1


async def test_an_h2c_upgrade_is_answered_in_http_1_1(start_listener: StartListener) -> None:
    # Honoured, it would open HTTP/2 to every route behind a proxy that forwards
    # Upgrade for /ws/ (as the usual WebSocket config does).
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo)
        response = await raw_exchange(
            listener.port,
            b"GET /ws/stats HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings, close\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
        )
        assert response.startswith(b"HTTP/1.1 200 ")
        assert b"101" not in response.split(b"\r\n", 1)[0]
        assert response.endswith(b'{"total_connections":0}')


async def test_content_length_with_transfer_encoding_is_refused(
    start_listener: StartListener,
) -> None:
    # The smuggling shape: one framing reads the rest as body, the other as a request.
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo)
        response = await raw_exchange(
            listener.port,
            b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /missing HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        assert response.startswith(b"HTTP/1.1 400 ")
        assert response.count(b"HTTP/1.1 ") == 1  # one answer, and the connection closed
        assert listener.statistics().refused_total == 1


@pytest.mark.parametrize(
    "hosts", [b"Host: a\r\nHost: b\r\n", b"Host:\r\n", b""], ids=["twice", "empty", "none"]
)
async def test_an_upgrade_needs_exactly_one_host(
    start_listener: StartListener, hosts: bytes
) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo)
        response = await raw_exchange(
            listener.port,
            b"GET /ws/client-1 HTTP/1.1\r\n" + hosts + b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        assert response.startswith(b"HTTP/1.1 400 ")
        assert b"exactly one non-empty 'Host'" in response
        assert listener.statistics().websockets == 0


async def test_slow_head_times_out_with_408(start_listener: StartListener) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo, head_timeout=0.2)
        response = await raw_exchange(listener.port, b"GET /health HTTP/1.1\r\nHost:")
        assert response.startswith(b"HTTP/1.1 408 ")
        # A connection that sends nothing at all is just closed.
        assert await raw_exchange(listener.port, b"") == b""


async def test_full_server_refuses_handshakes_with_503(
    start_listener: StartListener, open_client: OpenClient
) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo, max_websockets=1)
        async with open_client(ws_url(listener.port)) as ws:
            await ws.send_message("in")
            assert await ws.get_message() == "in"
            handshake = WSConnection(ConnectionType.CLIENT).send(
                Request(host="t", target="/ws/client-2")
            )
            response = await raw_exchange(listener.port, handshake)
            assert response.startswith(b"HTTP/1.1 503 ")
            assert b"\r\nRetry-After: 5\r\n" in response
            # HTTP is not counted against the WebSocket limit.
            health = await raw_exchange(
                listener.port, b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            assert health.startswith(b"HTTP/1.1 200 ")
        stats = listener.statistics()
        assert stats.refused_full_total == 1


async def exchange_from(address: str, port: int, data: bytes) -> bytes:
    """`raw_exchange` from another local address (all of 127.0.0.0/8 is loopback)."""
    sock = trio.socket.socket()
    await sock.bind((address, 0))
    await sock.connect((HOST, port))
    async with trio.SocketStream(sock) as stream:
        await stream.send_all(data)
        return await read_until_closed(stream)


async def test_new_connections_past_a_sources_burst_get_429(
    start_listener: StartListener, socket_clock: trio.testing.MockClock
) -> None:
    # Loopback counts here (by default it is exempt): the limit is the same for any
    # address. Virtual time stands still while the server works, so the counts are
    # exact; a token takes 100 virtual seconds to come back.
    sources = SourceTable(SourceLimits(connect_rate=0.01, connect_burst=2, limit_loopback=True))
    handshake = WSConnection(ConnectionType.CLIENT).send(Request(host="t", target="/ws/c"))
    health = b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    with trio.fail_after(1000):
        listener = await start_listener(echo, sources=sources)
        port = listener.port
        # HTTP connections and WebSocket upgrades draw on the same burst.
        assert (await raw_exchange(port, health)).startswith(b"HTTP/1.1 200 ")
        async with await trio.open_tcp_stream(HOST, port) as stream:
            await stream.send_all(handshake)
            assert (await stream.receive_some()).startswith(b"HTTP/1.1 101 ")
        refused = await raw_exchange(port, handshake)
        assert refused.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
        assert b"\r\nRetry-After: 100\r\n" in refused
        assert refused.endswith(
            b"Too many new connections from your address: at most 0.01 a second after "
            b"the first 2; retry in 100 s"
        )
        assert (await raw_exchange(port, health)).startswith(b"HTTP/1.1 429 ")
        # HTTP/2 has no head to answer in: it is closed.
        assert await raw_exchange(port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == b""
        # Another address is another source.
        assert (await exchange_from("127.0.0.2", port, health)).startswith(b"HTTP/1.1 200 ")
        await trio.sleep(100)  # the Retry-After, in virtual seconds
        assert (await raw_exchange(port, health)).startswith(b"HTTP/1.1 200 ")
        assert (await raw_exchange(port, health)).startswith(b"HTTP/1.1 429 ")
        stats = listener.statistics()
        assert (stats.refused_rate_total, sources.statistics().refused_total) == (4, 4)
        assert stats.websockets == 0


async def test_the_source_of_an_upgrade_reaches_the_handler(
    start_listener: StartListener,
) -> None:
    seen: list[str | None] = []

    async def record(stream: trio.abc.Stream, request: RequestHead) -> None:
        seen.append(request.source)

    sources = SourceTable(SourceLimits(forwarded_allow_ips=(ipaddress.ip_network("127.0.0.1"),)))
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(record, sources=sources)
        for forwarded in (b"203.0.113.7", b"6.6.6.6, 2001:db8::1", None):
            request = Request(
                host="t",
                target="/ws/c",
                extra_headers=[(b"X-Forwarded-For", forwarded)] if forwarded else [],
            )
            await raw_exchange(listener.port, WSConnection(ConnectionType.CLIENT).send(request))
    # The proxy's own requests are loopback, exempt: no source.
    assert seen == ["203.0.113.7", "2001:db8::/64", None]


async def test_forwarding_without_a_trusted_proxy_is_logged_once(
    start_listener: StartListener, caplog: pytest.LogCaptureFixture
) -> None:
    # Behind a proxy on the same host, every client is the proxy, and loopback is exempt:
    # the per-IP limits would silently do nothing.
    health = (
        b"GET /health HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\n"
        b"Connection: close\r\n\r\n"
    )
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.WARNING, logger="realtime.listener"):
        listener = await start_listener(echo, sources=SourceTable())
        for _ in range(3):
            assert (await raw_exchange(listener.port, health)).startswith(b"HTTP/1.1 200 ")
    warnings = [r.getMessage() for r in caplog.records if "X-Forwarded-For" in r.getMessage()]
    assert warnings == [
        "A request from 127.0.0.1 carries X-Forwarded-For, but no proxy is trusted: the "
        "per-IP limits count the peer's address. Behind a proxy, name it with "
        "--forwarded-allow-ips (logged once)"
    ]


async def test_stop_accepting_keeps_existing_connections(
    open_client: OpenClient, tiny_app: Callable[..., Awaitable[None]]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listener: Listener = await nursery.start(
                partial(serve, HOST, 0, websocket_handler=echo, asgi_app=tiny_app)
            )
            port = listener.port
            async with open_client(ws_url(port)) as ws:
                connection = h11.Connection(h11.CLIENT)
                async with await trio.open_tcp_stream(HOST, port) as idle_http:
                    response, _ = await http_exchange(idle_http, connection, b"GET", b"/health")
                    assert response.status_code == 200
                    listener.stop_accepting()
                    assert not listener.accepting
                    # The accept loop has seen it and closed the listening socket.
                    await trio.testing.wait_all_tasks_blocked()
                    with pytest.raises(OSError, match=r"[Cc]onnect"):
                        await trio.open_tcp_stream(HOST, port)
                    # The WebSocket carries on...
                    await ws.send_message("still here")
                    assert await ws.get_message() == "still here"
                    # ...while hypercorn closes its idle keep-alive connection.
                    assert await idle_http.receive_some() == b""
            # serve() returns on its own once the last connection has ended.


async def test_listeners_with_reuse_port_share_the_port_and_a_closed_one_drops_out(
    start_listener: StartListener, open_client: OpenClient
) -> None:
    """What ``--workers`` stands on, in one process: the kernel spreads connections over
    the sockets listening on the port, never to a socket only bound (the supervisor's
    reservation), and a listener that stops drops out of the spread."""
    served: list[str] = []

    def named(name: str) -> Callable[[trio.abc.Stream, RequestHead], Awaitable[None]]:
        async def handler(stream: trio.abc.Stream, request: RequestHead) -> None:
            served.append(name)
            await echo(stream, request)

        return handler

    async def connect_many(count: int) -> None:
        for index in range(count):
            async with open_client(ws_url(port, f"/ws/client-{index}")) as ws:
                await ws.send_message("hello")
                assert await ws.get_message() == "hello"

    with trio.fail_after(TIMEOUT * 2):
        reserved = await bind_shared(HOST, 0)
        with reserved[0]:
            port = reserved[0].getsockname()[1]
            first = await start_listener(named("first"), reuse_port=True, port=port)
            second = await start_listener(named("second"), reuse_port=True, port=port)
            assert first.port == second.port == port
            # A socket bound without SO_REUSEPORT is refused the port.
            with trio.socket.socket() as other, pytest.raises(OSError, match="in use"):
                await other.bind((HOST, port))
            await connect_many(40)  # all on one of two: a chance of 2 in 2**40
            assert set(served) == {"first", "second"}
            assert len(served) == 40
            first.stop_accepting()
            await trio.testing.wait_all_tasks_blocked()
            served.clear()
            await connect_many(10)
            assert served == ["second"] * 10


async def test_handler_errors_are_contained(
    start_listener: StartListener, open_client: OpenClient, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def flaky(stream: trio.abc.Stream, request: RequestHead) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("handler bug")
        await echo(stream, request)

    with trio.fail_after(TIMEOUT):
        listener = await start_listener(flaky)
        handshake = WSConnection(ConnectionType.CLIENT).send(Request(host="t", target="/ws/a"))
        with caplog.at_level(logging.ERROR, logger="realtime.listener"):
            # The connection is closed without a response; the server goes on.
            assert await raw_exchange(listener.port, handshake) == b""
        assert "handler bug" in caplog.text
        async with open_client(ws_url(listener.port)) as ws:
            await ws.send_message("fine")
            assert await ws.get_message() == "fine"


async def test_http2_prior_knowledge_goes_to_hypercorn(start_listener: StartListener) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo)
        async with await trio.open_tcp_stream(HOST, listener.port) as stream:
            status, body = await h2_get(stream, "/health", scheme="http")
        assert (status, body) == (b"200", b'{"status":"ok"}')


async def h2_get(stream: trio.abc.Stream, path: str, *, scheme: str) -> tuple[bytes, bytes]:
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    headers = [(":method", "GET"), (":path", path), (":scheme", scheme), (":authority", "t")]
    connection.send_headers(1, headers, end_stream=True)
    await stream.send_all(connection.data_to_send())
    status = b""
    body = b""
    while True:
        data = await stream.receive_some()
        assert data, "server closed before the response ended"
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers)[b":status"]
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                connection.acknowledge_received_data(event.flow_controlled_length, 1)
            elif isinstance(event, h2.events.StreamEnded):
                return status, body
        await stream.send_all(connection.data_to_send())


# ------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


def tls_contexts(
    ca: trustme.CA, *, client_alpn: list[str] | None = None
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    server.set_alpn_protocols(["h2", "http/1.1"])
    client = ssl.create_default_context()
    ca.configure_trust(client)
    if client_alpn:
        client.set_alpn_protocols(client_alpn)
    return server, client


async def test_tls_wraps_both_paths(
    start_listener: StartListener, open_client: OpenClient, certificate_authority: trustme.CA
) -> None:
    server_context, client_context = tls_contexts(certificate_authority, client_alpn=["http/1.1"])
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo, ssl_context=server_context)
        url = f"wss://{HOST}:{listener.port}/ws/secure"
        async with open_client(url, ssl_context=client_context) as ws:
            await ws.send_message("secret")
            assert await ws.get_message() == "secret"
        stream = await trio.open_ssl_over_tcp_stream(
            HOST, listener.port, ssl_context=client_context, https_compatible=True
        )
        async with stream:
            connection = h11.Connection(h11.CLIENT)
            response, body = await http_exchange(stream, connection, b"GET", b"/health")
            assert (response.status_code, body) == (200, b'{"status":"ok"}')
            response, body = await http_exchange(stream, connection, b"GET", b"/missing")
            assert response.status_code == 404


async def test_tls_alpn_h2_goes_to_hypercorn(
    start_listener: StartListener, certificate_authority: trustme.CA
) -> None:
    server_context, client_context = tls_contexts(certificate_authority, client_alpn=["h2"])
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo, ssl_context=server_context)
        stream = await trio.open_ssl_over_tcp_stream(
            HOST, listener.port, ssl_context=client_context, https_compatible=True
        )
        async with stream:
            status, body = await h2_get(stream, "/health", scheme="https")
        assert (status, body) == (b"200", b'{"status":"ok"}')


async def test_hypercorn_errors_go_to_our_logger_and_access_log_is_off(
    start_listener: StartListener, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken_app(scope: object, receive: object, send: object) -> None:
        raise RuntimeError("app bug")

    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo, asgi_app=broken_app)
        with caplog.at_level(logging.INFO):
            response = await raw_exchange(listener.port, b"GET /boom HTTP/1.0\r\nHost: t\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 500 ")
        errors = [r for r in caplog.records if r.name == "realtime.http"]
        assert errors
        assert "app bug" in caplog.text
        assert not [r for r in caplog.records if r.name.startswith("hypercorn")]
