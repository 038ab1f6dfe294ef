"""``--log-format json``, the connection line's peer and the access log, on the real
gateway: in-process (``caplog``) and as a process behind a trusted proxy."""

from __future__ import annotations

import json
import logging
import signal
import sys
from typing import Any

import pytest
import trio

from realtime._logs import JSONFormatter

from .helpers import (
    TIMEOUT,
    connect,
    drain_log,
    http_get,
    http_requests,
    open_ws,
    start_gateway,
    start_process,
)


def _record(message: str, *args: object, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("realtime.test", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_a_json_line_holds_time_level_logger_message_and_the_fields() -> None:
    record = _record("[WebSocket] Connected: %s", "c-1", client_id="c-1", peer="127.0.0.1:5")
    record.created = 1_796_119_200.123  # 2026-12-01 10:00:00.123 UTC
    assert json.loads(JSONFormatter().format(record)) == {
        "time": "2026-12-01T10:00:00.123Z",
        "level": "WARNING",
        "logger": "realtime.test",
        "message": "[WebSocket] Connected: c-1",
        "client_id": "c-1",
        "peer": "127.0.0.1:5",
    }


def test_a_json_line_stays_one_line_and_keeps_what_json_cannot_hold() -> None:
    try:
        raise ValueError("first\nsecond")
    except ValueError:
        record = _record("two\nlines", odd={1, 2}, level="not the level")
        record.exc_info = sys.exc_info()
    line = JSONFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "two\nlines"
    assert entry["odd"] == "{1, 2}"
    assert entry["level"] == "WARNING"  # a field never replaces the record's own
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: first\nsecond")


async def test_the_connection_line_keeps_the_spec_s_form_and_adds_the_peer(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await start_gateway(nursery, feeds=False)
    with trio.fail_after(TIMEOUT):
        async with connect(server, "client-123"):
            pass
        await http_get(server.port, "/health?token=never-logged")
        # Logged once the response is out, so maybe after the client has it.
        while not any(r.name == "realtime.access" for r in caplog.records):
            await trio.sleep(0.01)
    (connected,) = [r for r in caplog.records if "Connected:" in r.getMessage()]
    text, fields = connected.getMessage(), vars(connected)
    assert text.startswith("[WebSocket] Connected: client-123 from 127.0.0.1:")
    assert fields["client_id"] == "client-123"
    assert fields["client_ip"] == "127.0.0.1"
    assert text.endswith(fields["peer"])
    (access,) = [r for r in caplog.records if r.name == "realtime.access"]
    text, fields = access.getMessage(), vars(access)
    assert text.startswith("127.0.0.1:")
    assert ' "GET /health HTTP/1.1" 200 ' in text
    assert "token" not in text
    assert (fields["method"], fields["path"], fields["status"]) == ("GET", "/health", 200)
    assert fields["bytes"] > 0


async def test_the_access_log_can_be_turned_off(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await start_gateway(nursery, feeds=False, access_log=False)
    with trio.fail_after(TIMEOUT):
        assert (await http_get(server.port, "/livez"))[0] == 200
    assert [r for r in caplog.records if r.name == "realtime.access"] == []


async def test_json_logs_behind_a_trusted_proxy_name_the_client() -> None:
    proxied = [("X-Forwarded-For", "6.6.6.6, 203.0.113.7")]
    with trio.fail_after(TIMEOUT * 2):
        process, port, log = await start_process(
            "--log-format", "json", "--forwarded-allow-ips", "127.0.0.1", "--feeds", "false"
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_log, process, log)
            headers = [(name.encode(), value.encode()) for name, value in proxied]
            async with open_ws(f"ws://127.0.0.1:{port}/ws/behind-nginx", extra_headers=headers):
                pass
            ((status, _, _),) = await http_requests(port, [("GET", "/readyz", b"")], proxied)
            assert status == 200
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    lines = b"".join(log).decode().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    (connected,) = [e for e in entries if e["message"].startswith("[WebSocket] Connected:")]
    assert connected["message"].startswith(
        "[WebSocket] Connected: behind-nginx from 203.0.113.7 via 127.0.0.1:"
    )
    assert connected["client_id"] == "behind-nginx"
    assert connected["client_ip"] == "203.0.113.7"
    assert connected["peer"].startswith("127.0.0.1:")
    (access,) = [e for e in entries if e["logger"] == "realtime.access"]
    assert access["message"].startswith("203.0.113.7 via 127.0.0.1:")
    assert access["client_ip"] == "203.0.113.7"
    assert (access["path"], access["status"]) == ("/readyz", 200)
    (disconnected,) = [e for e in entries if "Disconnected:" in e["message"]]
    assert disconnected["client_id"] == "behind-nginx"
