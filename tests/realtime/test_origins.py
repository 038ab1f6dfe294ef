"""The Origin allow-list of WebSocket handshakes: the policy, then the real gateway."""

from __future__ import annotations

import time

import pytest
import trio

from realtime import Config
from realtime._auth import mint_token
from realtime._origins import OriginPolicy

from .helpers import TIMEOUT, start_gateway

SECRET = "s" * 32


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "gw.example.com", True),  # a program
        ("https://gw.example.com", "gw.example.com", True),  # its own page
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("https://GW.example.com", "gw.example.com", True),
        ("https://gw.example.com", "gw.example.com:8443", False),
        ("https://evil.example", "gw.example.com", False),
        ("null", "gw.example.com", False),
        ("https://app.example.org", "gw.example.com", True),  # listed
        ("https://a.trading.example.net", "gw.example.com", True),  # the pattern
        ("https://a.b.trading.example.net", "gw.example.com", True),
        ("https://trading.example.net", "gw.example.com", False),  # not the domain itself
        ("https://eviltrading.example.net", "gw.example.com", False),
        ("http://a.trading.example.net", "gw.example.com", False),  # scheme as written
        ("https://a.trading.example.net:8443", "gw.example.com", False),  # port as written
        ("http://localhost:5173", "gw.example.com", False),  # a list replaces localhost
    ],
)
def test_own_origin_list_and_patterns(origin: str | None, host: str, allowed: bool) -> None:
    config = Config(allowed_origins="https://app.example.org, https://*.trading.example.net")
    policy = OriginPolicy(config.websocket_origins, localhost=False)
    assert policy.allows(origin, host) is allowed


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:5173", True),
        ("https://localhost", True),
        ("http://127.0.0.1:3000", True),
        ("http://[::1]:3000", True),
        ("http://localhost.evil.example", False),
        ("http://127.0.0.1.evil.example", False),
    ],
)
def test_the_localhost_default(origin: str, allowed: bool) -> None:
    assert OriginPolicy((), localhost=True).allows(origin, "127.0.0.1:8000") is allowed


def test_any_origin() -> None:
    assert OriginPolicy(("*",), localhost=False).allows("https://anyone.example", "gw")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("https://*.com", "'https://*.com' is too broad"),
        ("https://app.example.org/", "is not an origin"),
        ("*, https://app.example.org", "'*' allows every origin; give it alone"),
        ("https://*.example.com:443", "leave out the default port"),
    ],
)
def test_bad_allowed_origins_name_the_setting(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"--allowed-origins \(REALTIME_ALLOWED_ORIGINS\)") as info:
        Config.from_env({"REALTIME_ALLOWED_ORIGINS": value})
    assert message in str(info.value)


async def handshake(port: int, *headers: tuple[str, str]) -> tuple[bytes, bytes]:
    """A raw WebSocket handshake with ``headers``: the status line and the body."""
    lines = [
        "GET /ws/origin-test HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        *(f"{name}: {value}" for name, value in headers),
    ]
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some()
            assert chunk, data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n")[0]
        if status.startswith(b"HTTP/1.1 403"):
            while chunk := await stream.receive_some():  # read to the close
                body += chunk
    return status, body


OK = b"HTTP/1.1 101 Switching Protocols"
FORBIDDEN = b"HTTP/1.1 403 Forbidden"


async def test_by_default_own_origin_and_localhost_pages_connect(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    port = server.port
    with trio.fail_after(TIMEOUT):
        assert (await handshake(port))[0] == OK  # no Origin: a program
        assert (await handshake(port, ("Origin", f"http://127.0.0.1:{port}")))[0] == OK
        assert (await handshake(port, ("Origin", "http://localhost:5173")))[0] == OK
        status, body = await handshake(port, ("Origin", "https://evil.example"))
    assert status == FORBIDDEN
    assert body == (
        b"Origin https://evil.example may not open a WebSocket on this gateway: "
        b"the gateway's --allowed-origins must list it"
    )
    assert server.sessions.refused_origins == 1


async def test_an_allow_list_refuses_others_before_the_upgrade(nursery: trio.Nursery) -> None:
    server = await start_gateway(
        nursery, feeds=False, allowed_origins="https://*.example.com, http://localhost:5173"
    )
    port = server.port
    with trio.fail_after(TIMEOUT):
        assert (await handshake(port, ("Origin", "https://app.example.com")))[0] == OK
        assert (await handshake(port, ("Origin", "http://localhost:5173")))[0] == OK
        assert (await handshake(port, ("Origin", f"http://127.0.0.1:{port}")))[0] == OK
        for origin in ("http://localhost:3000", "https://example.com", "null"):
            assert (await handshake(port, ("Origin", origin)))[0] == FORBIDDEN, origin


async def test_with_authentication_only_the_own_origin_by_default(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False, jwt_secret=SECRET)
    port = server.port
    token = mint_token(SECRET, sub="alice", now=time.time(), ttl=60)
    with trio.fail_after(TIMEOUT):
        assert (await handshake(port, ("Origin", f"http://127.0.0.1:{port}")))[0] == OK
        # A valid token does not open the door to another origin.
        for origin in ("http://localhost:5173", "https://evil.example"):
            headers = [("Origin", origin), ("Authorization", f"Bearer {token}")]
            assert (await handshake(port, *headers))[0] == FORBIDDEN, origin
