"""Authentication on the real gateway over real sockets: the token in the upgrade's
``Authorization`` header (programs) or in the first message (browsers), channel and
symbol grants, and what a refused token gets."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from trio_websocket import ConnectionClosed, WebSocketConnection

from realtime import Server

from .helpers import TIMEOUT, Client, close_of, open_ws, start_gateway, ws_url
from .test_auth import handmade, unsigned

SECRET = "s" * 32
WAYS = ["header", "message"]


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": time.time() + 60, "aud": "gw", "iss": "idp", **extra}


def token(**extra: Any) -> str:
    return jwt.encode(claims(**extra), SECRET, algorithm="HS256")


@asynccontextmanager
async def open_with(
    server: Server, way: str, credential: str, client_id: str = "alice-1"
) -> AsyncIterator[WebSocketConnection]:
    headers = [(b"Authorization", f"Bearer {credential}".encode())] if way == "header" else []
    async with open_ws(ws_url(server, client_id), extra_headers=headers) as ws:
        if way == "message":
            await ws.send_message(json.dumps({"type": "auth", "token": credential}))
        yield ws


@asynccontextmanager
async def connect(
    server: Server, way: str, credential: str, client_id: str = "alice-1"
) -> AsyncIterator[Client]:
    async with open_with(server, way, credential, client_id) as ws:
        welcome = json.loads(await ws.get_message())
        assert welcome["type"] == "welcome", welcome
        yield Client(ws, welcome)


async def refusal(server: Server, way: str, credential: str) -> tuple[dict[str, Any], int]:
    """The error and the close code a refused token gets."""
    async with open_with(server, way, credential) as ws:
        error = json.loads(await ws.get_message())
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    return error, close_of(closed.value)[0]


async def gateway(nursery: trio.Nursery, **settings: Any) -> Server:
    settings.setdefault("jwt_secret", SECRET)
    return await start_gateway(
        nursery, feeds=False, jwt_audience="gw", jwt_issuer="idp", **settings
    )


@pytest.mark.parametrize("way", WAYS)
async def test_a_valid_token_is_welcomed_with_its_grants(
    nursery: trio.Nursery, way: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="realtime.websocket")
    server = await gateway(nursery)
    grants = {"channels": ["prices", "notifications"], "symbols": ["AAPL", "MSFT", "NOPE"]}
    with trio.fail_after(TIMEOUT):
        async with connect(server, way, token(**grants)) as client:
            forbidden = await client.request(
                {"type": "subscribe", "channel": "alerts", "id": 1}, "error"
            )
            outside = await client.request(
                {"type": "subscribe", "channel": "prices", "symbols": ["AAPL", "TSLA"], "id": 2},
                "error",
            )
            everything = await client.request(
                {"type": "subscribe", "channel": "prices", "id": 3}, "subscribed"
            )
            pong = await client.request({"type": "ping", "id": 4}, "pong")
            welcome = client.welcome
    assert welcome["channels"] == ["prices", "notifications"]
    assert welcome["symbols"] == ["AAPL", "MSFT"]  # the universe's, as granted
    assert (forbidden["code"], forbidden["id"]) == ("forbidden", 1)
    assert forbidden["error"] == "Forbidden: your token does not grant channel 'alerts'"
    assert (outside["code"], outside["error"]) == (
        "forbidden",
        "Forbidden: your token does not grant symbol TSLA",
    )
    assert everything["symbols"] == ["AAPL", "MSFT"]
    assert pong["id"] == 4  # refusals leave the connection open
    assert "[WebSocket] Connected: alice-1 (user alice)" in caplog.text


def _rsa_public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


BAD: list[tuple[str, Callable[[], str], str]] = [
    ("expired", lambda: token(exp=time.time() - 5), "expired"),
    ("nbf ahead", lambda: token(nbf=time.time() + 60), "not valid yet"),
    ("wrong key", lambda: jwt.encode(claims(), "x" * 32, algorithm="HS256"), "bad signature"),
    ("alg none", lambda: unsigned(claims()), "algorithm 'none' refused"),
    ("wrong aud", lambda: token(aud="other"), "wrong audience"),
    ("wrong iss", lambda: token(iss="evil"), "wrong issuer"),
    ("no sub", lambda: jwt.encode({**claims(), "sub": None}, SECRET, algorithm="HS256"), "sub"),
    ("garbage", lambda: "garbage", "malformed token"),
]


@pytest.mark.parametrize("way", WAYS)
async def test_refused_tokens_get_unauthorized_then_4401(
    nursery: trio.Nursery, way: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="realtime.websocket")
    server = await gateway(nursery)
    with trio.fail_after(TIMEOUT):
        for name, make, reason in BAD:
            credential = make()
            error, code = await refusal(server, way, credential)
            assert (error["type"], error["code"], code) == ("error", "unauthorized", 4401), name
            assert reason in error["error"], (name, error)
            assert credential not in caplog.text
    assert server.sessions.unauthorized == len(BAD)
    assert server.hub.connection_count == 0
    assert "Authentication failed for alice-1 from 127.0.0.1:" in caplog.text


@pytest.mark.parametrize("way", WAYS)
async def test_the_rsa_public_key_as_an_hmac_secret_is_refused(
    nursery: trio.Nursery, way: str, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "key.pem"
    path.write_bytes(_rsa_public_pem(key))
    server = await gateway(nursery, jwt_secret=None, jwt_public_key=path)
    with trio.fail_after(TIMEOUT):
        forged = handmade(claims(), _rsa_public_pem(key))
        error, code = await refusal(server, way, forged)
        genuine = jwt.encode(claims(), key, algorithm="RS256")
        async with connect(server, way, genuine) as client:
            assert client.welcome["client_id"] == "alice-1"
    assert (error["code"], code) == ("unauthorized", 4401)
    assert "algorithm 'HS256' refused: this key verifies RS256 only" in error["error"]


async def test_a_header_that_is_not_bearer_is_refused(nursery: trio.Nursery) -> None:
    server = await gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with open_ws(
            ws_url(server, "basic"), extra_headers=[(b"Authorization", b"Basic YWxpY2U6cHc=")]
        ) as ws:
            error = json.loads(await ws.get_message())
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    assert error["error"] == "Unauthorized: the Authorization header must be 'Bearer <jwt>'"
    assert close_of(closed.value)[0] == 4401


async def test_a_msgpack_connection_authenticates_in_msgpack(nursery: trio.Nursery) -> None:
    import msgpack

    server = await gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with open_ws(ws_url(server, "packed"), subprotocols=["realtime.v1.msgpack"]) as ws:
            await ws.send_message(msgpack.packb({"type": "auth", "token": token(), "id": 1}))
            welcome = msgpack.unpackb(await ws.get_message())
        async with open_ws(ws_url(server, "packed"), subprotocols=["realtime.v1.msgpack"]) as ws:
            await ws.send_message(msgpack.packb({"type": "auth", "token": "garbage", "id": 2}))
            error = msgpack.unpackb(await ws.get_message())
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    assert welcome["type"] == "welcome"
    assert (error["code"], error["id"]) == ("unauthorized", 2)
    assert close_of(closed.value)[0] == 4401
