"""WebSocket connections over real sockets, behind the real listener."""

from __future__ import annotations

import contextlib
import select
import struct
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
import trio_websocket
from wsproto import WSConnection
from wsproto.connection import Connection, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import FrameProtocol

from realtime.ws import (
    ConnectionClosed,
    InboundLimits,
    Listener,
    RequestHead,
    WebSocketConnection,
    accept_websocket,
    build_frame,
    reject_websocket,
)

from .helpers import CONTINUATION, PING, TEXT, raw_client, raw_frame

StartListener = Callable[..., Awaitable[Listener]]
OpenClient = Callable[..., AbstractAsyncContextManager[trio_websocket.WebSocketConnection]]
HOST = "127.0.0.1"
SUBPROTOCOLS = ("realtime.v1.msgpack", "realtime.v1.json")
TIMEOUT = 5


async def read_until_closed(stream: trio.abc.Stream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


def close_of(error: trio_websocket.ConnectionClosed) -> tuple[int, str | None]:
    """The (code, reason) a trio_websocket client saw."""
    assert error.reason is not None
    return error.reason.code, error.reason.reason


def url(port: int, path: str = "/ws/client-1") -> str:
    return f"ws://{HOST}:{port}{path}"


class Recorder:
    """What the server side saw, for assertions after the fact."""

    def __init__(self) -> None:
        self.connections: list[WebSocketConnection] = []
        self.closed: list[ConnectionClosed] = []
        self.done = trio.Event()


def echo_handler(
    recorder: Recorder, **accept: Any
) -> Callable[[trio.abc.Stream, RequestHead], Awaitable[None]]:
    accept.setdefault("subprotocols", SUBPROTOCOLS)

    async def handler(stream: trio.abc.Stream, request: RequestHead) -> None:
        ws = await accept_websocket(stream, request, **accept)
        recorder.connections.append(ws)
        try:
            while True:
                await ws.send_message(await ws.receive_message())
        except ConnectionClosed as closed:
            recorder.closed.append(closed)
        finally:
            await ws.aclose()
            recorder.done.set()

    return handler


TOO_MANY_FRAMES = (1009, "Message arrives in more than 256 frames")


def client_frame(payload: bytes | str, *, fin: bool = True) -> bytes:
    """A masked client frame built outside any connection state."""
    return bytes(FrameProtocol(client=True, extensions=[]).send_data(payload, fin))


async def test_text_and_binary_echo(start_listener: StartListener, open_client: OpenClient) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo_handler(Recorder()))
        async with open_client(url(listener.port)) as ws:
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
            await ws.send_message(b"\x00\x01\xff")
            assert await ws.get_message() == b"\x00\x01\xff"
            await ws.send_message("é" * 1000)
            assert await ws.get_message() == "é" * 1000


async def test_ping_is_answered(start_listener: StartListener, open_client: OpenClient) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo_handler(Recorder()))
        async with open_client(url(listener.port)) as ws:
            await ws.ping(b"are you there")  # returns when the matching pong arrives


async def test_message_over_limit_closes_1009(
    start_listener: StartListener, open_client: OpenClient
) -> None:
    with trio.fail_after(TIMEOUT):
        recorder = Recorder()
        listener = await start_listener(
            echo_handler(recorder, limits=InboundLimits(max_message_size=1024))
        )
        async with open_client(url(listener.port)) as ws:
            await ws.send_message("x" * 1024)  # exactly at the limit: fine
            assert await ws.get_message() == "x" * 1024
            await ws.send_message("x" * 100_000)
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert close_of(info.value)[0] == 1009
        await recorder.done.wait()
        assert [closed.code for closed in recorder.closed] == [1009]


async def test_fragmented_message_is_reassembled(start_listener: StartListener) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo_handler(Recorder()))
        async with raw_client(listener.port) as client:
            await client.send(TextMessage(data="ab", message_finished=False))
            await client.send(Ping(payload=b"mid"))  # control frames may interleave fragments
            await client.send(TextMessage(data="cdé", message_finished=False))
            await client.send(TextMessage(data="f", message_finished=True))
            assert await client.next_event() == Pong(payload=b"mid")
            event = await client.next_event()
            assert isinstance(event, TextMessage)
            assert (event.data, event.message_finished) == ("abcdéf", True)
            await client.send(BytesMessage(data=b"\x01", message_finished=False))
            await client.send(BytesMessage(data=b"\x02", message_finished=True))
            event = await client.next_event()
            assert isinstance(event, BytesMessage)
            assert event.data == b"\x01\x02"


async def test_fragments_over_limit_close_before_message_completes(
    start_listener: StartListener,
) -> None:
    with trio.fail_after(TIMEOUT):
        recorder = Recorder()
        listener = await start_listener(
            echo_handler(recorder, limits=InboundLimits(max_message_size=1000))
        )
        async with raw_client(listener.port) as client:
            await client.send(BytesMessage(data=b"a" * 600, message_finished=False))
            await client.send(BytesMessage(data=b"b" * 600, message_finished=False))
            # The message is never finished: the server must act on the count alone.
            close = await client.expect_close()
            assert close.code == 1009
            await client.send(close.response())
            await recorder.done.wait()
            assert [closed.code for closed in recorder.closed] == [1009]


@pytest.mark.parametrize("payload", [b"ab", b""], ids=["tiny", "empty"])
async def test_a_message_in_too_many_frames_is_closed_with_1009(
    start_listener: StartListener, payload: bytes
) -> None:
    # Each frame costs a parse and an event whatever its size: counting bytes alone let
    # 32,000 two-byte fragments, or endless empty ones, through.
    with trio.fail_after(TIMEOUT):
        recorder = Recorder()
        listener = await start_listener(echo_handler(recorder))
        async with raw_client(listener.port) as client:
            frames = [raw_frame(TEXT, payload, fin=False)]
            frames += [raw_frame(CONTINUATION, payload, fin=False)] * 1000
            await client.stream.send_all(b"".join(frames))
            close = await client.expect_close()
            assert (close.code, close.reason) == (1009, "Message arrives in more than 256 frames")
        await recorder.done.wait()
        assert [closed.code for closed in recorder.closed] == [1009]


async def test_a_message_in_256_frames_is_whole(start_listener: StartListener) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo_handler(Recorder()))
        async with raw_client(listener.port) as client:
            frames = [raw_frame(TEXT, b"x", fin=False)]
            frames += [raw_frame(CONTINUATION, b"x", fin=False)] * 254
            frames += [raw_frame(CONTINUATION, b"y")]
            await client.stream.send_all(b"".join(frames))
            event = await client.next_event()
            assert isinstance(event, TextMessage)
            assert event.data == "x" * 255 + "y"


async def test_a_frame_read_in_pieces_is_one_frame(start_listener: StartListener) -> None:
    # wsproto hands out a frame's payload as it arrives: counted per piece, one frame
    # trickled in was refused as a message in too many frames.
    with trio.fail_after(TIMEOUT):
        limits = InboundLimits(max_fragments=2)
        listener = await start_listener(echo_handler(Recorder(), limits=limits))
        async with raw_client(listener.port) as client:
            frame = client_frame("x" * 1000)
            for start in range(0, len(frame), 100):
                await client.stream.send_all(frame[start : start + 100])
                await trio.testing.wait_all_tasks_blocked()  # read as a piece of its own
            echoed = ""
            while not (isinstance(event := await client.next_event(), TextMessage)) or (
                not event.message_finished
            ):
                assert isinstance(event, TextMessage), event
                echoed += event.data
            assert echoed + event.data == "x" * 1000


async def test_a_ping_flood_is_closed_with_1008(
    start_listener: StartListener, socket_clock: trio.testing.MockClock
) -> None:
    # Virtual time stands still while the server works: the burst is exactly 50.
    with trio.fail_after(TIMEOUT):
        recorder = Recorder()
        listener = await start_listener(echo_handler(recorder))
        async with raw_client(listener.port) as client:
            await client.stream.send_all(raw_frame(PING, b"p") * 200)
            pongs = 0
            while isinstance(event := await client.next_event(), Pong):
                pongs += 1
            assert isinstance(event, CloseConnection)
            assert (event.code, pongs) == (1008, 50)
            assert event.reason == "More than 10 pings and pongs per second"
        await recorder.done.wait()
        assert [closed.code for closed in recorder.closed] == [1008]


async def test_huge_single_frame_closed_without_buffering_it(
    start_listener: StartListener,
) -> None:
    with trio.fail_after(TIMEOUT):
        recorder = Recorder()
        listener = await start_listener(
            echo_handler(recorder, limits=InboundLimits(max_message_size=1000))
        )
        async with raw_client(listener.port) as client:
            # Header of a masked 100 MB binary frame, then only a little payload.
            header = struct.pack("!BBQ", 0x82, 0x80 | 127, 100_000_000) + b"\x00\x00\x00\x00"
            await client.stream.send_all(header + b"z" * 5000)
            close = await client.expect_close()
            assert close.code == 1009
            # Our close reply would only count as payload of the huge frame, so
            # hang up instead; the server stops waiting at EOF.
        await recorder.done.wait()
        assert [closed.code for closed in recorder.closed] == [1009]


async def test_early_frames_after_the_handshake_are_not_lost(start_listener: StartListener) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo_handler(Recorder()))
        early = client_frame("early one") + client_frame(b"early two")
        async with raw_client(listener.port, early=early) as client:
            first = await client.next_event()
            second = await client.next_event()
            assert isinstance(first, TextMessage)
            assert first.data == "early one"
            assert isinstance(second, BytesMessage)
            assert second.data == b"early two"


async def test_early_frames_are_fed_a_read_at_a_time(start_listener: StartListener) -> None:
    # They are fed to wsproto as if read, so that what a closed connection leaves
    # unparsed there (a reference cycle the collector frees late) stays small.
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo_handler(Recorder()))
        early = client_frame("y" * 10_000) + client_frame("z")
        async with raw_client(listener.port, early=early) as client:
            echoed = ""
            while len(echoed) < 10_001:
                event = await client.next_event()
                assert isinstance(event, TextMessage), event
                echoed += event.data
            assert echoed == "y" * 10_000 + "z"


async def test_a_peer_that_goes_on_sending_after_a_close_is_cut_off(
    start_listener: StartListener,
) -> None:
    # Every frame it sent was parsed, looking for its close, for the whole closing
    # handshake: attackers that kept sending halved another client's prices. Here the
    # handshake may take an hour, so only the bound on what is read ends it.
    with trio.fail_after(TIMEOUT):
        recorder = Recorder()
        listener = await start_listener(echo_handler(recorder, close_timeout=3600))
        async with raw_client(listener.port) as client, trio.open_nursery() as nursery:
            junk = raw_frame(CONTINUATION, b"ab", fin=False) * 10_000

            async def flood() -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await client.stream.send_all(raw_frame(TEXT, b"ab", fin=False))
                    while True:
                        await client.stream.send_all(junk)

            nursery.start_soon(flood)
            close = await client.expect_close()
            assert (close.code, close.reason) == TOO_MANY_FRAMES
            await recorder.done.wait()
            nursery.cancel_scope.cancel()
        assert [closed.code for closed in recorder.closed] == [1009]


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["realtime.v1.msgpack"], "realtime.v1.msgpack"),
        (["chat", "realtime.v1.json", "realtime.v1.msgpack"], "realtime.v1.json"),
        ([], None),
        (["chat"], None),
    ],
)
async def test_subprotocol_negotiation(
    start_listener: StartListener, open_client: OpenClient, offered: list[str], chosen: str | None
) -> None:
    with trio.fail_after(TIMEOUT):
        recorder = Recorder()
        listener = await start_listener(echo_handler(recorder))
        async with open_client(url(listener.port), subprotocols=offered) as ws:
            assert ws.subprotocol == chosen
            await ws.send_message("x")
            await ws.get_message()
        assert recorder.connections[0].subprotocol == chosen


async def test_accept_then_close_with_4400(
    start_listener: StartListener, open_client: OpenClient
) -> None:
    async def handler(stream: trio.abc.Stream, request: RequestHead) -> None:
        ws = await accept_websocket(stream, request)
        await ws.aclose(4400, "Invalid client id")

    with trio.fail_after(TIMEOUT):
        listener = await start_listener(handler)
        async with open_client(url(listener.port, "/ws/bad%20id")) as ws:
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert close_of(info.value) == (4400, "Invalid client id")


async def test_reject_with_503_is_an_http_status(start_listener: StartListener) -> None:
    async def handler(stream: trio.abc.Stream, request: RequestHead) -> None:
        await reject_websocket(stream, 503, "Server is full")

    with trio.fail_after(TIMEOUT):
        listener = await start_listener(handler)
        handshake = WSConnection(ConnectionType.CLIENT).send(Request(host="t", target="/ws/a"))
        async with await trio.open_tcp_stream(HOST, listener.port) as stream:
            await stream.send_all(handshake)
            response = await read_until_closed(stream)
        assert response.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert response.endswith(b"\r\n\r\nServer is full")
        # (trio_websocket's ConnectionRejected path leaks its socket, so the
        # client-side view is checked with wsproto below instead.)


async def test_peer_close_code_reaches_the_server(
    start_listener: StartListener, open_client: OpenClient
) -> None:
    with trio.fail_after(TIMEOUT):
        recorder = Recorder()
        listener = await start_listener(echo_handler(recorder))
        async with open_client(url(listener.port)) as ws:
            await ws.aclose(4000, "bye now")
        await recorder.done.wait()
        assert [(c.code, c.reason) for c in recorder.closed] == [(4000, "bye now")]
        ws_server = recorder.connections[0]
        assert ws_server.closed
        assert (ws_server.close_code, ws_server.close_reason) == (4000, "bye now")


async def test_transport_loss_is_1006(start_listener: StartListener) -> None:
    with trio.fail_after(TIMEOUT):
        recorder = Recorder()
        listener = await start_listener(echo_handler(recorder))
        async with raw_client(listener.port):
            pass  # Hang up without a close frame.
        await recorder.done.wait()
        assert [closed.code for closed in recorder.closed] == [1006]


async def test_invalid_utf8_closes_1007(start_listener: StartListener) -> None:
    with trio.fail_after(TIMEOUT):
        recorder = Recorder()
        listener = await start_listener(echo_handler(recorder, close_timeout=0.5))
        async with raw_client(listener.port) as client:
            frame = bytearray(client_frame(b"\xff\xfe"))
            frame[0] = 0x81  # say it is text
            await client.stream.send_all(bytes(frame))
            close = await client.expect_close()
            assert close.code == 1007
        await recorder.done.wait()
        assert [closed.code for closed in recorder.closed] == [1007]


async def test_unmasked_client_frame_closes_1002(start_listener: StartListener) -> None:
    with trio.fail_after(TIMEOUT):
        recorder = Recorder()
        listener = await start_listener(echo_handler(recorder, close_timeout=0.5))
        async with raw_client(listener.port) as client:
            await client.stream.send_all(build_frame(b"not masked", text=False))
            close = await client.expect_close()
            assert close.code == 1002
        await recorder.done.wait()
        assert [closed.code for closed in recorder.closed] == [1002]


async def test_receive_message_is_cancel_safe(start_listener: StartListener) -> None:
    received: list[str | bytes] = []
    timeouts = 0

    async def handler(stream: trio.abc.Stream, request: RequestHead) -> None:
        nonlocal timeouts
        ws = await accept_websocket(stream, request)
        while not received:
            # A heartbeat-style timeout that expires between two fragments.
            with trio.move_on_after(0.05) as scope:
                received.append(await ws.receive_message())
            timeouts += scope.cancelled_caught
        await ws.aclose()

    with trio.fail_after(TIMEOUT):
        listener = await start_listener(handler)
        async with raw_client(listener.port) as client:
            await client.send(TextMessage(data="first half, ", message_finished=False))
            while timeouts < 2:
                await trio.sleep(0.01)
            await client.send(TextMessage(data="second half", message_finished=True))
            close = await client.expect_close()
            assert close.code == 1000
            assert received == ["first half, second half"]
            assert timeouts >= 2


async def test_server_ping_and_pong_tracking(start_listener: StartListener) -> None:
    seen: list[tuple[int, float | None]] = []

    async def handler(stream: trio.abc.Stream, request: RequestHead) -> None:
        ws = await accept_websocket(stream, request)
        seen.append((ws.pongs_received, ws.last_pong))
        await ws.ping(b"hb")
        assert await ws.receive_message() == "after pong"
        seen.append((ws.pongs_received, ws.last_pong))
        await ws.aclose()

    with trio.fail_after(TIMEOUT):
        listener = await start_listener(handler)
        async with raw_client(listener.port) as client:
            assert await client.next_event() == Ping(payload=b"hb")
            await client.send(Pong(payload=b"hb"))
            await client.send(TextMessage(data="after pong"))
            await client.expect_close()
        assert seen[0] == (0, None)
        assert seen[1][0] == 1
        assert seen[1][1] is not None


async def test_aclose_while_another_task_reads(
    start_listener: StartListener, open_client: OpenClient
) -> None:
    reader_saw: list[int] = []

    async def handler(stream: trio.abc.Stream, request: RequestHead) -> None:
        ws = await accept_websocket(stream, request)

        async def reader() -> None:
            try:
                await ws.receive_message()
            except ConnectionClosed as closed:
                reader_saw.append(closed.code)

        async with trio.open_nursery() as tasks:
            tasks.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()  # the reader waits for a frame
            await ws.aclose(1001, "going away")

    with trio.fail_after(TIMEOUT):
        listener = await start_listener(handler)
        async with open_client(url(listener.port)) as ws:
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert close_of(info.value) == (1001, "going away")
        while listener.statistics().websockets:
            await trio.sleep(0.01)
        assert reader_saw == [1001]


def _writable(stream: trio.abc.Stream) -> bool:
    """Whether the kernel would take more bytes on the stream's socket right now."""
    assert isinstance(stream, trio.SocketStream)
    _, writable, _ = select.select([], [stream.socket], [], 0)
    return bool(writable)


async def test_aclose_against_a_stuck_peer_is_bounded(start_listener: StartListener) -> None:
    elapsed: list[float] = []
    writer_saw: list[int] = []
    server_side: list[WebSocketConnection] = []
    closed = trio.Event()

    async def handler(stream: trio.abc.Stream, request: RequestHead) -> None:
        ws = await accept_websocket(stream, request, close_timeout=0.3)
        server_side.append(ws)
        frame = build_frame(b"x" * 65536, text=False)

        async def writer() -> None:
            try:
                while True:
                    await ws.send_frames(frame)
            except ConnectionClosed as error:
                writer_saw.append(error.code)

        async with trio.open_nursery() as tasks:
            tasks.start_soon(writer)
            # Wait until the peer's and our socket buffers are full: the writer
            # is then parked inside send_all, holding the send lock.
            while _writable(stream):
                await trio.sleep(0.01)
            start = trio.current_time()
            await ws.aclose(1001)
            elapsed.append(trio.current_time() - start)
        closed.set()

    with trio.fail_after(TIMEOUT):
        listener = await start_listener(handler)
        # Handshake, then never read or answer anything.
        async with await trio.open_tcp_stream(HOST, listener.port) as stream:
            ws = WSConnection(ConnectionType.CLIENT)
            await stream.send_all(ws.send(Request(host="t", target="/ws/stuck")))
            await closed.wait()
            # aclose returned (the hang guard bounds it) and took the whole connection
            # down: the blocked writer was released with the close code, and the peer,
            # reading at last, finds the end of the stream after what was buffered.
            ws_server = server_side[0]
            assert (ws_server.closed, ws_server.close_code) == (True, 1001)
            assert writer_saw == [1001]
            while await stream.receive_some():
                pass
        # It gave the close handshake its whole close_timeout before giving up.
        assert elapsed[0] >= 0.3


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("text", [True, False])
def test_build_frame_parses_back(length: int, text: bool) -> None:
    payload = bytes(ord("a") + i % 26 for i in range(length))
    frame = build_frame(payload, text=text)
    header_length = 2 if length <= 125 else 4 if length <= 65535 else 10
    assert len(frame) == header_length + length
    assert frame[0] == (0x81 if text else 0x82)  # FIN + opcode, no RSV bits
    assert frame[1] & 0x80 == 0  # server frames are never masked
    assert frame[header_length:] == payload
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(frame)
    events = list(client.events())
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, TextMessage if text else BytesMessage)
    assert event.message_finished
    assert event.data == (payload.decode() if text else payload)


async def test_concurrent_send_frames_and_pongs_do_not_interleave(
    start_listener: StartListener, nursery: trio.Nursery
) -> None:
    count = 300
    # About 1.5 MB in all, far more than the capped client buffer holds, so
    # the writer blocks inside send_all while the reader has pongs to send.
    payloads = [f"{i:05d}".encode() * (i % 50 + 1) * 40 for i in range(count)]
    frames = [build_frame(payload, text=True) for payload in payloads]
    pong_waited_for_lock = False

    async def handler(stream: trio.abc.Stream, request: RequestHead) -> None:
        # Pings far above the default control-frame rate: this is about interleaving.
        limits = InboundLimits(control_rate=1e6, control_burst=1000)
        ws = await accept_websocket(stream, request, limits=limits)

        async def writer() -> None:
            for start in range(0, count, 3):
                await ws.send_frames(b"".join(frames[start : start + 3]))

        async def monitor() -> None:
            nonlocal pong_waited_for_lock
            while True:
                pong_waited_for_lock |= ws._send_lock.statistics().tasks_waiting > 0
                await trio.sleep(0.001)

        async with trio.open_nursery() as tasks:
            tasks.start_soon(writer)
            tasks.start_soon(monitor)
            try:
                while True:  # the reader: answers pings until the client hangs up
                    await ws.receive_message()
            except ConnectionClosed:
                tasks.cancel_scope.cancel()

    with trio.fail_after(TIMEOUT):
        listener = await start_listener(handler)
        async with raw_client(listener.port, receive_buffer=32 * 1024) as client:
            pings = 200

            async def pinger() -> None:
                for i in range(pings):
                    await client.send(Ping(payload=b"%d" % i))
                    await trio.sleep(0.0005)

            nursery.start_soon(pinger)
            # Not a byte read until the server's writer has filled the pipe and holds
            # the send lock while a pong waits for it.
            while not pong_waited_for_lock:
                await trio.sleep(0.01)
            messages: list[str] = []
            partial = ""
            pongs: list[bytes] = []
            while len(messages) < count or len(pongs) < pings:
                event = await client.next_event()
                if isinstance(event, TextMessage):
                    # wsproto hands out a frame's payload as it arrives.
                    partial += event.data
                    if event.message_finished:
                        messages.append(partial)
                        partial = ""
                elif isinstance(event, Pong):
                    pongs.append(event.payload)
                else:  # pragma: no cover - diagnostic
                    raise AssertionError(event)
            assert messages == [payload.decode() for payload in payloads]
            assert pongs == [b"%d" % i for i in range(pings)]
            assert pong_waited_for_lock  # the interleaving really was exercised


async def test_invalid_upgrade_requests_get_http_errors(start_listener: StartListener) -> None:
    with trio.fail_after(TIMEOUT):
        listener = await start_listener(echo_handler(Recorder()))

        async def exchange(head: bytes) -> bytes:
            async with await trio.open_tcp_stream(HOST, listener.port) as stream:
                await stream.send_all(head)
                return await read_until_closed(stream)

        base = b"GET /ws/x HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        missing_key = await exchange(base + b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert missing_key.startswith(b"HTTP/1.1 400 ")
        assert b"Sec-WebSocket-Key" in missing_key
        old_version = await exchange(
            base
            + b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        assert old_version.startswith(b"HTTP/1.1 426 ")
        assert b"Sec-WebSocket-Version: 13\r\n" in old_version


async def test_rejected_handshake_seen_by_a_wsproto_client(
    start_listener: StartListener,
) -> None:
    async def handler(stream: trio.abc.Stream, request: RequestHead) -> None:
        await reject_websocket(stream, 403, "no", headers=[(b"X-Why", b"test")])

    with trio.fail_after(TIMEOUT):
        listener = await start_listener(handler)
        ws = WSConnection(ConnectionType.CLIENT)
        events: list[Event] = []
        async with await trio.open_tcp_stream(HOST, listener.port) as stream:
            await stream.send_all(ws.send(Request(host="t", target="/ws/a")))
            while not any(isinstance(e, RejectData) and e.body_finished for e in events):
                ws.receive_data(await stream.receive_some() or None)
                events.extend(ws.events())
        reject = events[0]
        assert isinstance(reject, RejectConnection)
        assert reject.status_code == 403
        assert (b"x-why", b"test") in reject.headers
