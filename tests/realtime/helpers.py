"""Test-side helpers: start the real gateway in the test's nursery, talk to it over sockets."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url
from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    RejectConnection,
    Request,
    TextMessage,
)

from realtime import Config, Server, serve

TIMEOUT = 10.0


async def start_gateway(nursery: trio.Nursery, **settings: Any) -> Server:
    """The real gateway on 127.0.0.1, a free port, fast ticks, a fixed seed, and without
    the demo's system notifications (tests that read notifications expect their own)."""
    settings.setdefault("tick_rate", 20.0)
    settings.setdefault("seed", 7)
    settings.setdefault("demo_events", False)
    server: Server = await nursery.start(serve, Config(port=0, **settings))
    return server


def ws_url(server: Server, client_id: str) -> str:
    return f"ws://127.0.0.1:{server.port}/ws/{client_id}"


class Client:
    """A trio-websocket connection with JSON helpers."""

    def __init__(self, ws: WebSocketConnection, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.welcome = welcome

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send_message(
            message if isinstance(message, str | bytes) else json.dumps(message)
        )

    async def receive(self) -> dict[str, Any]:
        message = await self.ws.get_message()
        decoded: dict[str, Any] = json.loads(message)
        return decoded

    async def next(self, *types: str) -> dict[str, Any]:
        """The next message of one of ``types``, skipping others (prices, mostly)."""
        while True:
            message = await self.receive()
            if message["type"] in types:
                return message

    async def request(
        self, message: dict[str, Any] | str | bytes, *reply_types: str
    ) -> dict[str, Any]:
        await self.send(message)
        return await self.next(*reply_types)

    async def collect_until(
        self,
        done: Callable[[list[dict[str, Any]]], bool],
        keep: Callable[[dict[str, Any]], bool],
    ) -> list[dict[str, Any]]:
        """The messages ``keep`` accepts, until ``done`` holds for them. Waits as long as
        it takes: the caller's ``fail_after`` bounds it."""
        kept: list[dict[str, Any]] = []
        while not done(kept):
            message = await self.receive()
            if keep(message):
                kept.append(message)
        return kept

    async def queued(self, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The messages ``keep`` accepts among those the server sends before it answers a
        ping sent now: replies and events go out in order, so that is everything it had
        for us (except prices, which conflate and may go out after later replies)."""
        await self.send({"type": "ping", "id": "queued"})
        return (await self.collect_until(_ends_with_pong, lambda m: keep(m) or _is_pong(m)))[:-1]


def _is_pong(message: dict[str, Any]) -> bool:
    return message["type"] == "pong" and message.get("id") == "queued"


def _ends_with_pong(kept: list[dict[str, Any]]) -> bool:
    return bool(kept) and _is_pong(kept[-1])


@asynccontextmanager
async def open_ws(url: str, **kwargs: Any) -> AsyncIterator[WebSocketConnection]:
    """``open_websocket_url`` that also closes its socket when the server closed first:
    trio-websocket 0.12 returns early from ``aclose`` then and leaks the socket."""
    ws = None
    try:
        async with open_websocket_url(url, **kwargs) as ws:
            yield ws
    finally:
        if ws is not None:
            await trio.aclose_forcefully(ws._stream)


@asynccontextmanager
async def connect(
    server: Server, client_id: str = "client-123", **kwargs: Any
) -> AsyncIterator[Client]:
    async with open_ws(ws_url(server, client_id), **kwargs) as ws:
        welcome = json.loads(await ws.get_message())
        assert welcome["type"] == "welcome"
        yield Client(ws, welcome)


def close_of(closed: ConnectionClosed) -> tuple[int, str]:
    """The close code and reason a trio-websocket client saw. (Its type allows no
    reason at all; trio-websocket always raises with one.)"""
    assert closed.reason is not None
    return closed.reason.code, closed.reason.reason or ""


async def http_requests(
    port: int,
    requests: list[tuple[str, str, bytes]],
    headers: Sequence[tuple[str, str]] = (),
) -> list[tuple[int, dict[str, str], bytes]]:
    """Send ``(method, path, body)`` requests on ONE keep-alive connection, in turn,
    each with ``headers`` added."""
    import h11

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    connection = h11.Connection(h11.CLIENT)
    responses = []
    async with stream:
        for method, path, body in requests:
            request_headers = [("Host", "127.0.0.1"), ("Content-Length", str(len(body)))]
            request_headers += list(headers)
            data = connection.send(h11.Request(method=method, target=path, headers=request_headers))
            data += connection.send(h11.Data(data=body)) if body else b""
            data += connection.send(h11.EndOfMessage())
            await stream.send_all(data)
            status, response_headers, content = 0, {}, b""
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await stream.receive_some())
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    response_headers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    content += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            responses.append((status, response_headers, content))
            connection.start_next_cycle()
    return responses


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    ((status, _, body),) = await http_requests(port, [("GET", path, b"")])
    return status, body


async def metric(port: int, name: str) -> float:
    """The value of the unlabelled sample ``name`` on the gateway's ``/metrics``."""
    status, body = await http_get(port, "/metrics")
    assert status == 200
    match = re.search(rb"^%s (\S+)$" % re.escape(name).encode(), body, re.MULTILINE)
    assert match is not None, name
    return float(match[1])


REALTIME = [sys.executable, "-c", "from realtime._cli import main; main()"]


async def start_process(
    *args: str,
    preexec_fn: Callable[[], None] | None = None,
    port: int = 0,
    env: Mapping[str, str] | None = None,
) -> tuple[trio.Process, int, list[bytes]]:
    """``realtime serve`` on ``port`` (0: a free one) as a process: it, its port, its
    log so far. ``preexec_fn`` runs in the child before it starts (to set its limits,
    say); ``env`` is added to this process's environment for it."""
    process = await trio.lowlevel.open_process(
        [*REALTIME, "serve", "--port", str(port), *args],
        stderr=subprocess.PIPE,
        preexec_fn=preexec_fn,
        env=None if env is None else {**os.environ, **env},
    )
    assert process.stderr is not None
    log: list[bytes] = []
    buffer = b""
    while (match := re.search(rb"Listening on 127\.0\.0\.1:(\d+)", buffer)) is None:
        chunk = await process.stderr.receive_some()
        assert chunk, b"".join(log).decode()
        buffer += chunk
        log.append(bytes(chunk))
    return process, int(match.group(1)), log


async def drain_log(process: trio.Process, log: list[bytes]) -> None:
    """Keep reading the process's log into ``log`` (its pipe must not fill up)."""
    assert process.stderr is not None
    while chunk := await process.stderr.receive_some():
        log.append(bytes(chunk))


@asynccontextmanager
async def gateway_process(
    *args: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[trio.Process, int, list[bytes]]]:
    """`start_process` with its log drained meanwhile: the process, its port, its log.
    Killed on exit."""
    process, port, log = await start_process(*args, env=env)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_log, process, log)
            yield process, port, log
            nursery.cancel_scope.cancel()
    finally:
        process.kill()
        with trio.move_on_after(TIMEOUT, shield=True):
            await process.wait()


def rss(pid: int) -> int:
    """The resident memory of process ``pid``, in bytes (Linux's /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")  # pragma: no cover


# --- a healthy client beside an attack -------------------------------------------------

#: What a healthy subscriber must still get while an attack runs on the same gateway:
#: at least this share of the prices the feed publishes, and none of them later than
#: this many seconds after publication. Generous, so that they hold on a slow, loaded
#: 2-core machine; the attacks before their bounds fail both (prices 4.9 s late, 31 a second
#: of 160).
HEALTHY_SHARE = 0.5
HEALTHY_LATENESS = 2.0
#: How long each attack test attacks: enough to starve a subscriber when a defence is
#: missing, short enough to keep the suite's time in check.
ATTACK_SECONDS = 2.0
#: Between two samples of the gateway's memory during an attack.
RSS_INTERVAL = 0.05


@attrs.define
class Health:
    """What the healthy subscriber saw while the attack ran."""

    prices: int = 0
    worst_lateness: float = 0.0
    seconds: float = 0.0
    #: The gateway's RSS before the attack and at its peak, when watched.
    rss_before: int = 0
    rss_peak: int = 0

    @property
    def rate(self) -> float:
        return self.prices / self.seconds


@asynccontextmanager
async def healthy_subscriber(
    port: int,
    prices_per_second: float,
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    pid: int | None = None,
    max_rss_growth: int | None = None,
) -> AsyncIterator[Health]:
    """A subscriber to every price of the gateway at ``port`` while the body runs (the
    attack), beside it on the same gateway.

    On a clean exit it asserts that the subscriber was served throughout: it received
    at least `HEALTHY_SHARE` of ``prices_per_second`` (what the feed publishes) over
    the body's time, and no price arrived more than `HEALTHY_LATENESS` seconds after
    its publication (its ``timestamp``). With ``max_rss_growth``, the RSS of process
    ``pid`` (the gateway's) is sampled every `RSS_INTERVAL` too, and must not grow by
    more than that many bytes. Raises ``trio_websocket.ConnectionClosed`` if the
    gateway closes the subscriber.
    """
    health = Health()
    watching = False
    async with open_ws(f"ws://127.0.0.1:{port}/ws/healthy", extra_headers=list(headers)) as ws:
        assert json.loads(await ws.get_message())["type"] == "welcome"
        await ws.send_message(json.dumps({"type": "subscribe", "channel": "prices"}))
        while json.loads(await ws.get_message())["type"] != "subscribed":
            pass

        async def receive() -> None:
            while True:
                message = json.loads(await ws.get_message())
                if watching and message["type"] == "price_update":
                    published = datetime.fromisoformat(message["timestamp"])
                    late = (datetime.now(UTC) - published).total_seconds()
                    health.prices += 1
                    health.worst_lateness = max(health.worst_lateness, late)

        async def sample_rss(pid: int) -> None:
            while True:
                await trio.sleep(RSS_INTERVAL)
                health.rss_peak = max(health.rss_peak, rss(pid))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            if max_rss_growth is not None:
                assert pid is not None
                health.rss_before = health.rss_peak = rss(pid)
                nursery.start_soon(sample_rss, pid)
            watching = True
            started = trio.current_time()
            yield health
            health.seconds = trio.current_time() - started
            nursery.cancel_scope.cancel()
    if pid is not None and max_rss_growth is not None:
        health.rss_peak = max(health.rss_peak, rss(pid))
        growth = health.rss_peak - health.rss_before
        assert growth <= max_rss_growth, f"the gateway grew by {growth / 2**20:.1f} MiB"
    assert health.rate >= HEALTHY_SHARE * prices_per_second, (
        f"the healthy subscriber got {health.rate:.0f} prices a second of "
        f"{prices_per_second:g} ({health.prices} in {health.seconds:.1f} s)"
    )
    assert health.worst_lateness <= HEALTHY_LATENESS, (
        f"a price reached the healthy subscriber {health.worst_lateness:.2f} s late"
    )


class RawClient:
    """A WebSocket client on a raw trio stream, driven by wsproto, for edge cases."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next_event(self) -> Event:
        while True:
            for event in self.ws.events():
                return event
            data = await self.stream.receive_some()
            self.ws.receive_data(data or None)

    async def next_message(self) -> Any:
        """The next text message, its fragments joined, decoded as JSON."""
        parts: list[str] = []
        while True:
            event = await self.next_event()
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    return json.loads("".join(parts))

    async def expect_close(self) -> CloseConnection:
        while True:
            event = await self.next_event()
            if isinstance(event, CloseConnection):
                return event

    async def until_close(self) -> tuple[list[Any], CloseConnection]:
        """Every text message until the close (fragments joined, decoded as JSON), and
        the close."""
        messages: list[Any] = []
        parts: list[str] = []
        while not isinstance(event := await self.next_event(), CloseConnection):
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    messages.append(json.loads("".join(parts)))
                    parts.clear()
        return messages, event


@asynccontextmanager
async def raw_client(
    port: int,
    path: str = "/ws/raw",
    *,
    subprotocols: Sequence[str] = (),
    early: bytes = b"",
    receive_buffer: int | None = None,
) -> AsyncIterator[RawClient]:
    """Handshake (followed by ``early`` bytes in the same write); closed on exit.

    ``receive_buffer`` caps the kernel's receive buffer (no autotuning), so a
    client that pauses reading pushes back on the server quickly. It is set before
    connecting: the window scale is agreed in the handshake, and a buffer shrunk
    afterwards drops segments the peer was allowed to send (retransmission stalls).
    """
    sock = trio.socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect(("127.0.0.1", port))
    async with trio.SocketStream(sock) as stream:
        ws = WSConnection(ConnectionType.CLIENT)
        handshake = ws.send(Request(host="test", target=path, subprotocols=list(subprotocols)))
        await stream.send_all(handshake + early)
        client = RawClient(stream, ws)
        event = await client.next_event()
        assert isinstance(event, AcceptConnection), event
        yield client


@asynccontextmanager
async def raw_attempt(
    port: int,
    path: str = "/ws/raw",
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    early: bytes = b"",
) -> AsyncIterator[RawClient | RejectConnection]:
    """A handshake with ``headers`` added (and ``early`` bytes in the same write), which
    may be refused: the client, or the refusal (``status_code``, ``headers``). Closed
    on exit."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        ws = WSConnection(ConnectionType.CLIENT)
        request = Request(host="test", target=path, extra_headers=list(headers))
        await stream.send_all(ws.send(request) + early)
        client = RawClient(stream, ws)
        event = await client.next_event()
        assert isinstance(event, AcceptConnection | RejectConnection), event
        yield client if isinstance(event, AcceptConnection) else event


def raw_frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """A masked client frame written out by hand (payload under 126 bytes)."""
    mask = b"\x0f\xf0\x55\xaa"
    assert len(payload) < 126
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes(((0x80 if fin else 0) | opcode, 0x80 | len(payload))) + mask + masked


TEXT, CONTINUATION, PING = 0x1, 0x0, 0x9
