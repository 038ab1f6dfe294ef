"""The write path: direct writes, the hand-over to a writer task when a socket is
full and back, and coalescing of bursts, against the real gateway."""

from __future__ import annotations

import json
import socket
from collections import deque
from typing import Any

import pytest
import trio
from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, Request, TextMessage

from protocol import Channel, NotificationData, NotificationType

from .helpers import TIMEOUT, connect, start_gateway


async def test_a_client_that_pauses_gets_every_message_in_order(nursery: trio.Nursery) -> None:
    # Writes go straight to the socket until it is full; then a writer task takes over
    # what is pending, and direct writes resume once it has caught up. Across both
    # hand-overs nothing may be lost, duplicated or reordered.
    server = await start_gateway(
        nursery, feeds=False, outbox_messages=5000, outbox_bytes=64 * 1024 * 1024
    )
    payload = "y" * 8192
    burst, after = 600, 20

    async def publish(first: int, count: int) -> None:
        for number in range(first, first + count):
            await server.bus.publish(
                Channel.NOTIFICATIONS,
                NotificationData(id=str(number), message=payload, type=NotificationType.INFO),
            )
            if number % 25 == 0:
                await trio.lowlevel.checkpoint()  # let a writer task run

    with trio.fail_after(TIMEOUT * 2):
        stream, client = await _handshake(server.port, "pausing")
        frame = '{"type":"subscribe","channel":"notifications"}'
        await stream.send_all(client.send(TextMessage(data=frame)))
        messages = _Reader(stream, client)
        while (await messages.next())["type"] != "subscribed":
            pass
        await publish(0, burst)  # nobody reads meanwhile: the socket fills up
        assert server.sessions.blocked_writes >= 1
        received = [await messages.next() for _ in range(burst)]
        while server.sessions.writers:  # the writer has caught up and ended
            await trio.sleep(0.01)
        await publish(burst, after)
        received += [await messages.next() for _ in range(after)]
        await stream.aclose()
    assert [m["data"]["id"] for m in received] == [str(n) for n in range(burst + after)]
    seqs = [m["seq"] for m in received]
    assert seqs == list(range(seqs[0], seqs[0] + burst + after))


async def _handshake(port: int, client_id: str) -> tuple[trio.SocketStream, WSConnection]:
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    client = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(client.send(Request(host="127.0.0.1", target=f"/ws/{client_id}")))
    accepted = False
    while not accepted:
        client.receive_data(await stream.receive_some(1))
        accepted = any(isinstance(event, AcceptConnection) for event in client.events())
    return stream, client


class _Reader:
    """Decoded JSON messages from a raw connection, fragments joined."""

    def __init__(self, stream: trio.SocketStream, client: WSConnection) -> None:
        self._stream, self._client = stream, client
        self._ready: deque[Any] = deque()
        self._parts: list[str] = []

    async def next(self) -> Any:
        while not self._ready:
            self._client.receive_data(await self._stream.receive_some(65536))
            for event in self._client.events():
                if isinstance(event, TextMessage):
                    self._parts.append(event.data)
                    if event.message_finished:
                        self._ready.append(json.loads("".join(self._parts)))
                        self._parts.clear()
        return self._ready.popleft()


@pytest.mark.parametrize("flush_delay", [0.0005, 0.0])
async def test_bursts_share_writes_and_sparse_messages_go_alone(
    nursery: trio.Nursery, flush_delay: float
) -> None:
    server = await start_gateway(nursery, feeds=False, flush_delay=flush_delay)
    sessions = server.sessions
    count = 0

    async def publish(burst: int) -> None:
        nonlocal count
        for _ in range(burst):  # back to back: the bus never yields
            await server.bus.publish(
                Channel.NOTIFICATIONS,
                NotificationData(id=str(count), message="n", type=NotificationType.INFO),
            )
            count += 1

    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            await client.request({"type": "subscribe", "channel": "notifications"}, "subscribed")
            await trio.sleep(0.05)
            # Sparse: 10 ms apart, each one is written at once and alone.
            sent, writes = sessions.messages_sent, sessions.writes
            for _ in range(5):
                await publish(1)
                await trio.sleep(0.01)
            assert (sessions.messages_sent - sent, sessions.writes - writes) == (5, 5)
            # A burst: with a flush delay the messages share a few writes; without,
            # each has its own.
            sent, writes = sessions.messages_sent, sessions.writes
            await publish(200)
            while sessions.messages_sent - sent < 200:
                await trio.sleep(0.001)
            burst_writes = sessions.writes - writes
            if flush_delay:
                assert burst_writes <= 10, burst_writes
            else:
                assert burst_writes == 200
            received = [await client.next("notification") for _ in range(count)]
    assert [m["data"]["id"] for m in received] == [str(n) for n in range(count)]
