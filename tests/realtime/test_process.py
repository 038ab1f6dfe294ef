"""The ``realtime`` command as a process: serve, drain on SIGTERM, exit 0; its errors."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed
from wsproto.events import TextMessage

from .helpers import (
    REALTIME,
    TIMEOUT,
    close_of,
    drain_log,
    http_get,
    metric,
    open_ws,
    raw_client,
    start_process,
)


async def test_sigterm_closes_every_client_with_1001_and_exits_0(tmp_path: object) -> None:
    with trio.fail_after(TIMEOUT * 2):
        process, port, log = await start_process("--tick-rate", "20", "--shutdown-grace", "5")
        codes: list[int] = []

        async def client(name: str, task_status: trio.TaskStatus[None]) -> None:
            async with open_ws(f"ws://127.0.0.1:{port}/ws/{name}") as ws:
                await ws.send_message(json.dumps({"type": "subscribe", "channel": "prices"}))
                task_status.started()
                try:
                    while True:
                        await ws.get_message()
                except ConnectionClosed as closed:
                    codes.append(close_of(closed)[0])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_log, process, log)
            async with trio.open_nursery() as clients:
                for index in range(3):
                    await clients.start(client, f"client-{index}")
                process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    assert codes == [1001, 1001, 1001]
    text = b"".join(log).decode()
    assert "[WebSocket] Connected: client-0" in text, text
    assert "[WebSocket] Client client-0 subscribed to prices" in text, text
    assert "Received SIGTERM: draining" in text, text
    assert "[WebSocket] Disconnected: client-0" in text, text


async def test_sigterm_exits_within_the_grace_period_despite_a_stuck_client() -> None:
    with trio.fail_after(TIMEOUT * 2):
        # A write deadline past the hang guard: only the grace period can end the stuck
        # connection before the test gives up.
        process, port, log = await start_process(
            "--tick-rate", "50", "--shutdown-grace", "2", "--write-timeout", str(TIMEOUT * 3)
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_log, process, log)
            # A client that completes the handshake and then never reads a byte.
            async with raw_client(port, "/ws/stuck", receive_buffer=4096) as stuck:
                await stuck.send(TextMessage(data='{"type":"subscribe","channel":"prices"}'))
                # Its buffers fill with prices until the server's write blocks.
                while await metric(port, "realtime_writer_tasks") < 1:
                    await trio.sleep(0.05)
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 0
    text = b"".join(log).decode()
    assert "Received SIGTERM: draining" in text
    # The grace period ended the drain with the stuck client still there, and it exited.
    assert "Grace period over; aborting 1 connections" in text, text
    assert "Shut down" in text, text


def test_bad_setting_stops_the_command_with_a_clear_message() -> None:
    result = subprocess.run(
        [*REALTIME, "serve", "--write-timeout", "0"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "--write-timeout (REALTIME_WRITE_TIMEOUT) must be greater than 0, got 0" in result.stderr
    result = subprocess.run(
        [*REALTIME, "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"REALTIME_PORT": "eighty"},
    )
    assert result.returncode == 2
    assert "--port (REALTIME_PORT) must be an integer, got 'eighty'" in result.stderr


def test_schema_command_prints_the_json_schema() -> None:
    result = subprocess.run([*REALTIME, "schema"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert set(schema["$defs"]) >= {"ClientMessage", "ServerMessage", "PriceUpdate"}


def test_log_file(tmp_path: object) -> None:
    from pathlib import Path

    log_file = Path(str(tmp_path)) / "logs" / "websocket.log"

    async def main() -> None:
        process, port, log = await start_process("--log-file", str(log_file))
        async with open_ws(f"ws://127.0.0.1:{port}/ws/logged"):
            pass
        process.send_signal(signal.SIGTERM)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_log, process, log)
            assert await process.wait() == 0

    trio.run(main)
    text = log_file.read_text()
    assert "[WebSocket] Connected: logged" in text
    assert "[WebSocket] Disconnected: logged" in text


OPEN_FILES = 200  # the child's limit, soft and hard: the gateway keeps 64 for itself


def _limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


async def _handshake(port: int, client_id: str) -> tuple[trio.SocketStream, bytes]:
    """A raw WebSocket handshake: the stream and the status line of the answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        b"GET /ws/%s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        % client_id.encode()
    )
    head = b""
    while b"\r\n" not in head:
        chunk = await stream.receive_some()
        assert chunk
        head += chunk
    return stream, head.split(b"\r\n")[0]


async def test_at_the_open_files_limit_clients_are_told_and_health_answers() -> None:
    # With more connections allowed than files, the ones past the limit hung without
    # an answer, /health stopped answering and every failed accept logged an error.
    with trio.fail_after(TIMEOUT * 3):
        process, port, log = await start_process("--feeds", "false", preexec_fn=_limit_open_files)
        streams: list[trio.SocketStream] = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain_log, process, log)
                cap = OPEN_FILES - 64
                assert f"At most {cap} connections at once, not 50000".encode() in b"".join(log)
                for number in range(cap):
                    stream, status = await _handshake(port, f"c{number}")
                    assert status == b"HTTP/1.1 101 Switching Protocols"
                    streams.append(stream)
                stream, status = await _handshake(port, "one-too-many")
                assert status == b"HTTP/1.1 503 Service Unavailable"
                await stream.aclose()
                assert (await http_get(port, "/health"))[0] == 200
                # Idle connections that are not WebSockets can still use up the rest:
                # accept fails, the gateway says so once, and recovers when they go.
                idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(80)]
                while b"Cannot accept connections: EMFILE" not in b"".join(log):
                    await trio.sleep(0.05)
                for stream in idle:
                    await stream.aclose()
                assert (await http_get(port, "/health"))[0] == 200
                warnings = b"".join(log).count(b"Cannot accept connections")
                assert warnings == 1
                nursery.cancel_scope.cancel()
        finally:
            for stream in streams:
                await stream.aclose()
            process.kill()
            await process.wait()


def _read(path: Path) -> bytes:
    """The file's bytes; empty while a rollover has it renamed away."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


async def test_log_file_rotates_within_its_bound(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "websocket.log"
    oldest = log_file.with_name("websocket.log.2")
    with trio.fail_after(TIMEOUT * 2):
        # Debug logs every price broadcast: 50 ticks of 16 symbols a second fill 4 KiB fast.
        process, _, log = await start_process(
            *("--log-file", str(log_file), "--log-max-bytes", "4096", "--log-backups", "2"),
            *("--log-level", "debug", "--tick-rate", "50"),
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_log, process, log)
            while not (first := _read(oldest)):
                await trio.sleep(0.05)
            # Rolled over once more with every backup taken: the oldest is dropped.
            while _read(oldest) in (b"", first):
                await trio.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    files = sorted(log_file.parent.iterdir())
    assert [f.name for f in files] == ["websocket.log", "websocket.log.1", "websocket.log.2"]
    assert all(f.stat().st_size <= 4096 for f in files), [f.stat().st_size for f in files]
    text = "".join(f.read_text() for f in files)
    assert "DEBUG realtime.hub: [WebSocket] Broadcasting price update: " in text


def test_a_config_file_sets_what_the_flags_do_not(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = 0\nmax-conections = 10\n")
    result = subprocess.run(
        [*REALTIME, "serve", "--config", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"realtime serve: error: --config (REALTIME_CONFIG) {bad}: unknown setting "
        "'max-conections': did you mean 'max-connections'?\n"
    )
    good = tmp_path / "gateway.toml"
    good.write_text('log-format = "json"\nfeeds = false\nport = 1\n')

    async def main() -> None:
        # The flag --port 0 (start_process's) wins over the file's port.
        process, _, log = await start_process("--config", str(good))
        process.send_signal(signal.SIGTERM)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_log, process, log)
            assert await process.wait() == 0
        entries = [json.loads(line) for line in b"".join(log).decode().splitlines()]
        messages = [entry["message"] for entry in entries]
        assert "Shut down" in messages
        assert "Feed prices started" not in messages

    trio.run(main)
