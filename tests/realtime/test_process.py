"""The ``realtime`` command as a process: serve, drain on SIGTERM, exit 0; its errors."""

from __future__ import annotations

import json
import signal
import subprocess

import trio
from trio_websocket import ConnectionClosed

from .helpers import REALTIME, TIMEOUT, close_of, drain_log, open_ws, start_process


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
        process, port, log = await start_process("--tick-rate", "50", "--shutdown-grace", "2")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_log, process, log)
            # A client that completes the handshake and then never reads a byte.
            stuck = await trio.open_tcp_stream("127.0.0.1", port)
            async with stuck:
                await stuck.send_all(
                    b"GET /ws/stuck HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                    + _masked_text(b'{"type":"subscribe","channel":"prices"}')
                )
                await trio.sleep(1.0)  # let its buffers fill with prices
                started = trio.current_time()
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 0
                assert trio.current_time() - started < 2.0 + 2.0  # grace, plus slack
    assert "Received SIGTERM: draining" in b"".join(log).decode()


def _masked_text(payload: bytes) -> bytes:
    """One client text frame (clients must mask), for payloads under 126 bytes."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + mask + masked


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
