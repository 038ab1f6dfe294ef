"""Load generator for the benchmarks: one process of clients, driven by the harness.

    python -m bench.loadgen --url ws://127.0.0.1:8000 --mode stream --clients 100

Every mode speaks the benchmark's protocol subset (``welcome``, ``subscribe`` with
symbols, ``subscribed``, ``price_update``) and talks to the harness in JSON lines:
it prints ``{"event": "ready", ...}`` once its clients are set up, waits for a line on
stdin (``go``) where the mode has a measured phase, prints ``{"event": "second", ...}``
records while measuring and one ``{"event": "result", ...}`` at the end. Progress for
people goes to stderr. Every phase is bounded by a timeout.

Modes:

* ``stream`` (S1-S3) — clients subscribe to ``--symbols-per-client`` symbols, assigned
  round-robin so that every symbol has the same number of subscribers; counts every
  message and samples latency (receive time minus the message's publish
  ``timestamp``) every ``--sample-every`` messages per connection. The raw client
  takes the receive time from the kernel (``SO_TIMESTAMPNS``: when the data reached
  the client's socket), so the time this one process spends on the other sockets of
  a burst is not counted against the server.
* ``stuck`` (S3) — one raw-socket client with a small receive buffer that subscribes
  to every symbol and never reads again; reports its TCP state every second.
* ``idle`` (S4, the cluster's idle connections) — clients connect (from ``--source``
  if given) and subscribe, then hold; on ``check`` each sends a ``ping`` and waits for
  its ``pong``.
* ``storm`` (S5) — clients that reconnect with exponential backoff and full jitter
  after every drop; ends when each was dropped once and is subscribed again.
* ``churn`` (S6) — ``--cycles`` connect / subscribe / close cycles, ``--concurrency``
  at a time.

Clients: ``trio-websocket`` (the stack's client) or ``raw`` for ``stream``: plain
non-blocking sockets with a selector, which count frames from their headers and
JSON-parse only the sampled messages. One Python process with trio-websocket spends
tens of µs per received message, several times what the servers under test spend
sending it, so saturation runs use ``raw`` (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import selectors
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    open_websocket_url,
    wrap_client_stream,
)

TCP_STATES = {1: "ESTABLISHED", 7: "CLOSE", 8: "CLOSE_WAIT", 11: "CLOSING", 4: "FIN_WAIT1"}
#: Latency samples kept per second of one process, evenly thinned beyond this.
MAX_SAMPLES_PER_SECOND = 4_000


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def emit_ready(clients: int, started: float, errors: dict[str, int]) -> None:
    """The record that ends a connecting phase: how many are subscribed, and how long
    it took since ``started`` (``time.monotonic``)."""
    emit(
        {
            "event": "ready",
            "clients": clients,
            "connect_seconds": time.monotonic() - started,
            "errors": errors,
        }
    )


def progress(text: str) -> None:
    sys.stderr.write(f"[loadgen {os.getpid()}] {text}\n")
    sys.stderr.flush()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# Linux's SO_TIMESTAMPNS (also its control message type), which Python does not name:
# the kernel stamps each received segment, and recvmsg returns the stamp of the last
# one read as a struct timespec (CLOCK_REALTIME, the clock of the publish stamps).
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")
_ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)


def receive_stamped(sock: socket.socket, fallback: float) -> tuple[bytes, float]:
    """Read what is there, with the kernel's receive time (``fallback`` without one)."""
    data, ancillary, _, _ = sock.recvmsg(65536, _ANCILLARY_SIZE)
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = _TIMESPEC.unpack(value[: _TIMESPEC.size])
            return data, seconds + nanoseconds / 1e9
    return data, fallback


def latency(payload: bytes | str, now: float) -> float | None:
    """Seconds from the message's publish stamp to ``now``; None if not a price update."""
    message = orjson.loads(payload)
    if message.get("type") != "price_update":
        return None
    return now - datetime.fromisoformat(message["timestamp"]).timestamp()


def symbols_for(index: int, universe: list[str], per_client: int) -> list[str]:
    """Round-robin assignment: with clients * per_client a multiple of the universe,
    every symbol gets exactly the same number of subscribers."""
    if per_client <= 0 or per_client >= len(universe):
        return list(universe)
    return [universe[(index * per_client + j) % len(universe)] for j in range(per_client)]


def subscribe_request(symbols: list[str], request_id: int) -> bytes:
    return orjson.dumps(
        {"type": "subscribe", "channel": "prices", "symbols": symbols, "id": request_id}
    )


def thin(samples: list[float]) -> list[float]:
    if len(samples) <= MAX_SAMPLES_PER_SECOND:
        return samples
    step = len(samples) / MAX_SAMPLES_PER_SECOND
    return [samples[int(i * step)] for i in range(MAX_SAMPLES_PER_SECOND)]


# --- raw WebSocket client ------------------------------------------------------------


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask, RFC 6455 section 5.3)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def raw_connect(
    host: str,
    port: int,
    path: str,
    *,
    rcvbuf: int = 0,
    timeout: float = 30.0,
    headers: str = "",
) -> tuple[socket.socket, bytearray]:
    """Open a socket and complete the handshake, with ``headers`` (whole lines, each
    ending in CRLF) added to the upgrade; returns it with any bytes after it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{headers}\r\n".encode()
    )
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake refused: {head.splitlines()[0].decode()!r}")
    return sock, bytearray(rest)


def first_message(sock: socket.socket, buffer: bytearray) -> bytes:
    """Read until ``buffer`` holds one whole frame; remove and return its payload."""
    while True:
        if len(buffer) >= 2:
            length, start = buffer[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) >= start + max(length, 0) and len(buffer) >= start:
                payload = bytes(buffer[start : start + length])
                del buffer[: start + length]
                return payload
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the first message")
        buffer += chunk


class RawConnection:
    """One client socket: frames counted from headers, sampled messages parsed."""

    __slots__ = ("buffer", "close_code", "count", "index", "sock", "subscribed")

    def __init__(self, index: int, sock: socket.socket, buffer: bytearray) -> None:
        self.index = index
        self.sock = sock
        self.buffer = buffer
        self.count = 0
        self.subscribed = False
        self.close_code: int | None = None

    def frames(self, on_text: Callable[[RawConnection, bytes | None], None]) -> None:
        """Consume complete frames; ``on_text(self, payload or None)``: payload only for
        messages worth parsing (sampled, or before the subscription is acknowledged)."""
        buf = self.buffer
        pos, end_of_data = 0, len(buf)
        while end_of_data - pos >= 2:
            opcode, length = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if end_of_data - pos < 4:
                    break
                length, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                if end_of_data - pos < 10:
                    break
                length, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            end = start + length
            if end > end_of_data:
                break
            if opcode in (0x1, 0x2):
                self.count += 1
                on_text(self, bytes(buf[start:end]))
            elif opcode == 0x9:  # ping: answer, as every client must
                self.sock.send(masked_frame(0xA, bytes(buf[start:end])))
            elif opcode == 0x8:
                self.close_code = int.from_bytes(buf[start : start + 2], "big") if length else 1005
            pos = end
        del buf[:pos]


def run_raw_stream(args: argparse.Namespace) -> None:
    split = urlsplit(args.url)
    host, port = split.hostname or "127.0.0.1", split.port or 80
    selector = selectors.DefaultSelector()
    connections: list[RawConnection] = []
    errors: Counter[str] = Counter()
    universe: list[str] = []
    started = time.monotonic()
    for i in range(args.clients):
        index = args.first_index + i
        try:
            sock, rest = raw_connect(host, port, f"/ws/load-{index}")
            connection = RawConnection(index, sock, rest)
            welcome = first_message(sock, connection.buffer)
            if not universe:
                universe.extend(orjson.loads(welcome)["symbols"])
            symbols = symbols_for(index, universe, args.symbols_per_client)
            sock.sendall(masked_frame(0x1, subscribe_request(symbols, index)))
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, connection)
            connections.append(connection)
        except OSError as exc:
            errors[type(exc).__name__] += 1
        if i % 500 == 499:
            progress(f"{i + 1}/{args.clients} connected")
    selector.register(sys.stdin, selectors.EVENT_READ, None)

    measuring = False
    received = 0
    samples: list[float] = []
    closes: dict[str, int] = {}
    sample_every = args.sample_every
    ready_deadline = time.monotonic() + args.connect_timeout
    ready_sent = False

    def on_text(connection: RawConnection, payload: bytes | None) -> None:
        nonlocal received
        if not connection.subscribed:
            if payload is not None and b'"subscribed"' in payload:
                connection.subscribed = True
            return
        if not measuring:
            return
        received += 1
        if connection.count % sample_every == 0 and payload is not None:
            value = latency(payload, arrived)
            if value is not None:
                samples.append(value)

    now = arrived = time.time()
    second_end = 0.0
    t = 0
    cpu0 = wall0 = mark = 0.0
    while True:
        if not ready_sent and (
            all(c.subscribed for c in connections) or time.monotonic() > ready_deadline
        ):
            ready_sent = True
            emit_ready(sum(c.subscribed for c in connections), started, errors)
        events = selector.select(timeout=0.05)
        now = time.time()
        for key, _ in events:
            connection = key.data
            if connection is None:
                line = sys.stdin.readline()
                if not line or line.strip() == "stop" or measuring:
                    measuring = False
                    break
                measuring = True
                cpu0, wall0 = cpu_seconds(), time.monotonic()
                second_end, mark = wall0 + 1.0, wall0
                received = 0
                continue
            try:
                data, arrived = receive_stamped(connection.sock, now)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                connection.buffer += data
                connection.frames(on_text)
            if not data or connection.close_code is not None:
                kind = f"closed {connection.close_code or 1006}"
                closes[kind] = closes.get(kind, 0) + 1
                selector.unregister(connection.sock)
                connection.sock.close()
        if measuring and time.monotonic() >= second_end:
            # The real length of the window: an overloaded loop may overrun a second.
            moment = time.monotonic()
            record = {"event": "second", "t": t, "received": received, "duration": moment - mark}
            emit({**record, "latency": thin(samples)})
            t += 1
            received, samples, mark = 0, [], moment
            second_end = moment + 1.0
            if t >= args.seconds:
                break
        elif not measuring and wall0 and t:
            break
    elapsed = time.monotonic() - wall0 if wall0 else 0.0
    emit(
        {
            "event": "result",
            "client": "raw",
            "loadgen_cpu": (cpu_seconds() - cpu0) / elapsed if elapsed else None,
            "errors": errors,
            "closes": closes,
        }
    )
    for connection in connections:
        connection.sock.close()


def run_stuck(args: argparse.Namespace) -> None:
    """A client that subscribes to everything and never reads again."""
    split = urlsplit(args.url)
    sock, rest = raw_connect(
        split.hostname or "127.0.0.1", split.port or 80, "/ws/stuck-0", rcvbuf=args.rcvbuf
    )
    # Read the welcome, for the universe, and nothing more ever after.
    universe = orjson.loads(first_message(sock, rest))["symbols"]
    sock.sendall(masked_frame(0x1, subscribe_request(universe, 0)))
    emit({"event": "ready", "clients": 1, "symbols": len(universe), "rcvbuf": args.rcvbuf})
    sys.stdin.readline()
    closed_at: float | None = None
    state = "ESTABLISHED"
    for t in range(int(args.seconds)):
        time.sleep(1.0)
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        state = TCP_STATES.get(info[0], str(info[0]))
        queued = struct.unpack("i", _ioctl_inq(sock))[0]
        if closed_at is None and state != "ESTABLISHED":
            closed_at = t + 1.0
        emit({"event": "second", "t": t, "state": state, "unread_bytes": queued})
    emit({"event": "result", "closed_at": closed_at, "final_state": state})
    sock.close()


def _ioctl_inq(sock: socket.socket) -> bytes:
    import fcntl
    import termios

    return fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")


# --- trio-websocket clients ----------------------------------------------------------


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        # Typed optional, but trio-websocket always sets the reason it raises with.
        return f"closed {exc.reason.code if exc.reason is not None else 'without a reason'}"
    if isinstance(exc, HandshakeError):
        # trio-websocket wraps a failed TCP connect (server down) in HandshakeError.
        if isinstance(exc.__cause__, OSError):
            return "refused"
        return f"handshake {type(exc).__name__}"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    return type(exc).__name__


async def subscribe(ws: Any, index: int, per_client: int) -> None:
    """Receive the welcome, subscribe, and wait for ``subscribed``."""
    welcome = orjson.loads(await ws.get_message())
    symbols = symbols_for(index, list(welcome["symbols"]), per_client)
    await ws.send_message(subscribe_request(symbols, index).decode())
    while orjson.loads(await ws.get_message()).get("type") != "subscribed":
        pass


async def start_in_waves(
    nursery: trio.Nursery,
    client: Callable[[int], Awaitable[None]],
    args: argparse.Namespace,
    ready: trio.Event,
    subscribed: Callable[[], int],
) -> None:
    """Start ``args.clients`` clients, ``args.wave`` per 50 ms so that the handshakes
    do not time out, then wait (at most ``args.connect_timeout``) for ``ready``."""
    for i in range(args.clients):
        nursery.start_soon(client, args.first_index + i)
        if i % args.wave == args.wave - 1:
            await trio.sleep(0.05)
        if i % 1000 == 999:
            progress(f"{i + 1}/{args.clients} started, {subscribed()} subscribed")
    with trio.move_on_after(args.connect_timeout):
        await ready.wait()


async def wait_for_line() -> str:
    return await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)


async def trio_stream(args: argparse.Namespace) -> None:
    errors: Counter[str] = Counter()
    state: dict[str, Any] = {"measuring": False, "received": 0, "samples": []}
    subscribed = 0
    all_subscribed = trio.Event()

    async def client(index: int) -> None:
        nonlocal subscribed
        try:
            async with open_websocket_url(
                f"{args.url}/ws/load-{index}", message_queue_size=args.queue
            ) as ws:
                await subscribe(ws, index, args.symbols_per_client)
                subscribed += 1
                if subscribed == args.clients:
                    all_subscribed.set()
                count = 0
                while True:
                    message = await ws.get_message()
                    if not state["measuring"]:
                        continue
                    state["received"] += 1
                    count += 1
                    if count % args.sample_every == 0:
                        value = latency(message, time.time())
                        if value is not None:
                            state["samples"].append(value)
        except Exception as exc:  # counted and reported, never hidden
            errors[error_kind(exc)] += 1

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        await start_in_waves(nursery, client, args, all_subscribed, lambda: subscribed)
        emit_ready(subscribed, started, errors)
        await wait_for_line()
        cpu0, wall0 = cpu_seconds(), time.monotonic()
        state["measuring"] = True
        mark = wall0
        for t in range(int(args.seconds)):
            await trio.sleep_until(trio.current_time() + (wall0 + t + 1 - time.monotonic()))
            received, samples = state["received"], state["samples"]
            state["received"], state["samples"] = 0, []
            moment = time.monotonic()
            record = {"event": "second", "t": t, "received": received, "duration": moment - mark}
            emit({**record, "latency": thin(samples)})
            mark = moment
        elapsed = time.monotonic() - wall0
        cpu = cpu_seconds() - cpu0
        nursery.cancel_scope.cancel()
    emit(
        {
            "event": "result",
            "client": "trio-websocket",
            "loadgen_cpu": cpu / elapsed,
            "errors": errors,
            "closes": {},
        }
    )


@asynccontextmanager
async def open_client(args: argparse.Namespace, resource: str) -> AsyncIterator[Any]:
    """A trio-websocket connection to ``args.url`` + ``resource``, from the local
    address ``args.source`` when given: one source address has about 28,000
    ephemeral ports towards one server address and port, so tens of thousands of
    connections need several (127.0.0.2, 127.0.0.3, ... all reach 127.0.0.1)."""
    if not args.source:
        async with open_websocket_url(f"{args.url}{resource}") as ws:
            yield ws
        return
    split = urlsplit(args.url)
    host, port = split.hostname or "127.0.0.1", split.port or 80
    stream = await trio.open_tcp_stream(host, port, local_address=args.source)
    async with trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, stream, host, resource)
        try:
            yield ws
        finally:
            await ws.aclose()


async def trio_idle(args: argparse.Namespace) -> None:
    errors: Counter[str] = Counter()
    subscribed = 0
    answered = 0
    all_subscribed = trio.Event()
    check = trio.Event()

    async def client(index: int) -> None:
        nonlocal subscribed, answered
        try:
            async with open_client(args, f"/ws/idle-{index}") as ws:
                await subscribe(ws, index, args.symbols_per_client)
                subscribed += 1
                if subscribed == args.clients:
                    all_subscribed.set()
                await check.wait()
                await ws.send_message(orjson.dumps({"type": "ping", "id": index}).decode())
                while orjson.loads(await ws.get_message()).get("type") != "pong":
                    pass
                answered += 1
                await trio.sleep_forever()
        except Exception as exc:
            errors[error_kind(exc)] += 1

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        await start_in_waves(nursery, client, args, all_subscribed, lambda: subscribed)
        emit_ready(subscribed, started, errors)
        await wait_for_line()
        check.set()
        with trio.move_on_after(args.seconds):
            # A count shared by thousands of tasks: polling it beats an Event per client.
            while answered < subscribed:  # noqa: ASYNC110
                await trio.sleep(0.05)
        emit({"event": "result", "answered": answered, "errors": errors})
        await wait_for_line()
        nursery.cancel_scope.cancel()


async def trio_storm(args: argparse.Namespace) -> None:
    """Clients that reconnect with backoff; the harness restarts the server meanwhile."""
    errors: Counter[str] = Counter()
    handshakes: list[float] = []
    dropped_at: list[float] = []
    resubscribed_at: list[float] = []
    subscribed = 0
    first_round = trio.Event()
    done = trio.Event()
    rng = random.Random(args.seed + args.first_index)

    async def client(index: int) -> None:
        nonlocal subscribed
        attempt, drops = 0, 0
        while drops < 2:
            try:
                async with open_websocket_url(
                    f"{args.url}/ws/storm-{index}", connect_timeout=10, disconnect_timeout=2
                ) as ws:
                    handshakes.append(time.time())
                    await subscribe(ws, index, args.symbols_per_client)
                    attempt = 0
                    if drops:
                        resubscribed_at.append(time.time())
                        if len(resubscribed_at) == args.clients:
                            done.set()
                        await trio.sleep_forever()
                    subscribed += 1
                    if subscribed == args.clients:
                        first_round.set()
                    while True:
                        await ws.get_message()
            except Exception as exc:
                kind = error_kind(exc)
                if kind.startswith("closed") or kind in ("ConnectionResetError",):
                    dropped_at.append(time.time())
                    drops = 1
                else:
                    errors[kind] += 1
            # Exponential backoff with full jitter: 0.1 s doubling up to 5 s.
            await trio.sleep(rng.uniform(0, min(5.0, 0.1 * 2**attempt)))
            attempt += 1

    async with trio.open_nursery() as nursery:
        await start_in_waves(nursery, client, args, first_round, lambda: subscribed)
        emit({"event": "ready", "clients": subscribed, "errors": dict(errors)})
        errors.clear()
        handshakes.clear()
        with trio.move_on_after(args.seconds):
            await done.wait()
        emit(
            {
                "event": "result",
                "dropped": len(dropped_at),
                "resubscribed": len(resubscribed_at),
                "first_drop": min(dropped_at, default=None),
                "last_resubscribed": max(resubscribed_at, default=None),
                "handshakes": handshakes,
                "errors": errors,
            }
        )
        nursery.cancel_scope.cancel()


async def trio_churn(args: argparse.Namespace) -> None:
    errors: Counter[str] = Counter()
    done = 0
    started = time.monotonic()
    next_report = started + 5.0

    async def worker(first: int) -> None:
        nonlocal done, next_report
        index = first
        while index < args.cycles:
            try:
                with trio.fail_after(10):
                    async with open_websocket_url(
                        f"{args.url}/ws/churn-{os.getpid()}-{index}"
                    ) as ws:
                        await subscribe(ws, args.first_index + index, args.symbols_per_client)
            except* Exception as group:
                # except*: trio-websocket can end a connection with a group that also
                # holds its own Cancelled, which "except Exception" would let through
                # and so end the whole run.
                errors[error_kind(group.exceptions[0])] += 1
            done += 1
            index += args.concurrency
            if time.monotonic() > next_report:
                next_report += 5.0
                progress(f"churn {done}/{args.cycles}")

    emit({"event": "ready", "clients": 0})
    async with trio.open_nursery() as nursery:
        for first in range(args.concurrency):
            nursery.start_soon(worker, first)
    elapsed = time.monotonic() - started
    emit(
        {
            "event": "result",
            "cycles": done,
            "seconds": elapsed,
            "cycles_per_second": done / elapsed,
            "errors": errors,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000")
    parser.add_argument(
        "--mode", choices=("stream", "stuck", "idle", "storm", "churn"), default="stream"
    )
    parser.add_argument("--client", choices=("trio-websocket", "raw"), default="trio-websocket")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--first-index", type=int, default=0, help="client ids start here")
    parser.add_argument("--symbols-per-client", type=int, default=10, help="0: every symbol")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured (or waiting) time")
    parser.add_argument("--wave", type=int, default=100, help="clients started per 50 ms")
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--sample-every", type=int, default=10, help="per connection")
    parser.add_argument("--queue", type=int, default=256, help="trio-websocket receive queue")
    parser.add_argument("--rcvbuf", type=int, default=4096, help="stuck client's SO_RCVBUF")
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--source", help="idle: the local address to connect from")
    args = parser.parse_args()
    if args.mode == "stuck":
        run_stuck(args)
    elif args.mode == "stream" and args.client == "raw":
        run_raw_stream(args)
    else:
        runner = {
            "stream": trio_stream,
            "idle": trio_idle,
            "storm": trio_storm,
            "churn": trio_churn,
        }[args.mode]
        trio.run(runner, args)


if __name__ == "__main__":
    main()
