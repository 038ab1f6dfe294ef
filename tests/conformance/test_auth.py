"""Authentication and authorization (docs/protocol.md, "Authentication"), rule by rule,
against any server given a way to mint tokens (see conftest: ``--token-command``).

The ``auth`` fixture is the server these run against: ``--server-url``, or a gateway
of ours started with a secret. Tokens come from the token command only, so the suite
holds no key: forged tokens are made by altering minted ones. Nothing is timed: a
test that needs a token to expire waits until the wall clock is past its ``exp``, or
for the close the rule promises.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import trio

from .conftest import SUB, Target
from .test_protocol import new_id
from .wire import TIMEOUT, Peer

#: What the server sends on a refused token: an ``unauthorized`` error, then 4401.
UNAUTHORIZED = 4401
#: The longest the server may take to close a connection that sends no token: the
#: gateway's default --auth-timeout (5 s) and room to spare.
AUTH_TIMEOUT_GUARD = TIMEOUT + 10.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _decoded(segment: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return payload


def exp_of(token: str) -> float:
    return float(_decoded(token.split(".")[1])["exp"])


def forged(token: str) -> str:
    """``token`` with another ``sub`` in its payload and its signature kept."""
    header, payload, signature = token.split(".")
    claims = _decoded(payload)
    claims["sub"] = "mallory"
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def unsigned(token: str) -> str:
    """``token``'s claims under ``alg: none``, without a signature (RFC 8725 section 2.1)."""
    payload = token.split(".")[1]
    return f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{payload}."


async def wall_clock_past(seconds: float) -> None:
    """Wait until the wall clock (what ``exp`` counts in) is past ``seconds``."""
    while time.time() <= seconds:
        await trio.sleep(min(0.2, seconds - time.time() + 0.05))


async def refused(connection: Peer) -> tuple[list[dict[str, Any]], int]:
    """Every message until the close, and the close code."""
    messages = await connection.replies_until_closed()
    code, _ = await connection.closed()
    return messages, code


async def expired_token(target: Target) -> str:
    token = await target.mint(ttl=1)
    await wall_clock_past(exp_of(token))
    return token


# --- handing over the token ------------------------------------------------------------


async def test_a_program_authenticates_with_the_authorization_header(auth: Target) -> None:
    client_id = new_id("header")
    with trio.fail_after(TIMEOUT):
        async with auth.peer(client_id, token=await auth.mint()) as connection:
            assert connection.welcome["client_id"] == client_id
            assert connection.welcome["channels"]
            pong = await connection.request({"type": "ping", "id": 1}, "pong")
            assert pong["id"] == 1


async def test_a_browser_authenticates_with_an_auth_message_and_welcome_follows(
    auth: Target,
) -> None:
    client_id = new_id("message")
    with trio.fail_after(TIMEOUT):
        token = await auth.mint()
        async with auth.raw(client_id, anonymous=True) as ws:
            connection = Peer(ws, packed=False)
            await connection.send({"type": "auth", "token": token, "id": "a1"})
            welcome = await connection.receive()  # the first message, nothing before it
            assert welcome["type"] == "welcome"
            assert welcome["client_id"] == client_id
            await connection.request({"type": "ping", "id": 2}, "pong")


async def test_nothing_but_auth_is_read_first(auth: Target) -> None:
    """No ``welcome`` on connect: a first message of another type is refused, then 4401."""
    with trio.fail_after(TIMEOUT):
        async with auth.raw(new_id("first"), anonymous=True) as ws:
            connection = Peer(ws, packed=False)
            await connection.send({"type": "subscribe", "channel": "prices", "id": 3})
            messages, code = await refused(connection)
    assert [(m["type"], m.get("code")) for m in messages] == [("error", "unauthorized")]
    assert messages[0]["error"]
    assert code == UNAUTHORIZED


async def test_no_token_in_time_is_closed_with_4401(auth: Target) -> None:
    with trio.fail_after(AUTH_TIMEOUT_GUARD):
        async with auth.raw(new_id("silent"), anonymous=True) as ws:
            messages, code = await refused(Peer(ws, packed=False))
    assert [(m["type"], m.get("code")) for m in messages] == [("error", "unauthorized")]
    assert code == UNAUTHORIZED


async def test_a_token_in_the_url_is_not_taken(auth: Target) -> None:
    """Never from the query string: it would end up in access logs."""
    token = await auth.mint()
    with trio.fail_after(TIMEOUT):
        async with auth.raw(f"{new_id('query')}?token={token}", anonymous=True) as ws:
            connection = Peer(ws, packed=False)
            await connection.send({"type": "ping", "id": 4})
            messages, code = await refused(connection)
    assert [(m["type"], m.get("code")) for m in messages] == [("error", "unauthorized")]
    assert code == UNAUTHORIZED


@pytest.mark.parametrize("transport", ["header", "message"])
@pytest.mark.parametrize("kind", ["garbage", "forged", "alg none", "expired"])
async def test_a_refused_token_gets_unauthorized_then_4401(
    auth: Target, transport: str, kind: str
) -> None:
    if kind == "expired":
        token = await expired_token(auth)
    else:
        minted = await auth.mint()
        token = {"garbage": "not-a-jwt", "forged": forged(minted), "alg none": unsigned(minted)}[
            kind
        ]
    with trio.fail_after(TIMEOUT):
        if transport == "header":
            async with auth.raw(new_id("refused"), token=token) as ws:
                messages, code = await refused(Peer(ws, packed=False))
        else:
            async with auth.raw(new_id("refused"), anonymous=True) as ws:
                connection = Peer(ws, packed=False)
                await connection.send({"type": "auth", "token": token, "id": "bad"})
                messages, code = await refused(connection)
    assert [(m["type"], m.get("code")) for m in messages] == [("error", "unauthorized")]
    assert messages[0]["error"]
    if transport == "message":
        assert messages[0]["id"] == "bad"
    assert code == UNAUTHORIZED


# --- grants ---------------------------------------------------------------------------------


async def test_channel_grants(auth: Target) -> None:
    token = await auth.mint(channels=["prices", "alerts"])
    with trio.fail_after(TIMEOUT):
        async with auth.peer(new_id("channels"), token=token) as connection:
            assert connection.welcome["channels"] == ["prices", "alerts"]
            error = await connection.request(
                {"type": "subscribe", "channel": "signals", "id": "s"}, "error", "subscribed"
            )
            assert (error["type"], error["code"], error["id"]) == ("error", "forbidden", "s")
            assert "signals" in error["error"]
            ack = await connection.request(
                {"type": "subscribe", "channel": "alerts", "id": "a"}, "subscribed", "error"
            )
            assert (ack["type"], ack["channel"]) == ("subscribed", "alerts")


async def test_symbol_grants(auth: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with auth.peer(new_id("universe")) as connection:
            universe: list[str] = connection.welcome["symbols"]
        assert len(universe) >= 3, "the server's universe is too small for this test"
        granted, other = universe[:2], universe[2]
        token = await auth.mint(symbols=granted)
        async with auth.peer(new_id("symbols"), token=token) as connection:
            assert sorted(connection.welcome["symbols"]) == sorted(granted)
            error = await connection.request(
                {"type": "subscribe", "channel": "prices", "symbols": [other], "id": "x"},
                "error",
                "subscribed",
            )
            assert (error["type"], error["code"]) == ("error", "forbidden")
            assert other in error["error"]
            ack = await connection.request(
                {"type": "subscribe", "channel": "prices", "id": "all"}, "subscribed", "error"
            )
            assert ack["type"] == "subscribed"
            assert ack["symbols"] == sorted(granted)  # every symbol: those granted


# --- refresh and expiry ---------------------------------------------------------------------


async def test_a_refresh_applies_new_grants_at_once(auth: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with auth.peer(new_id("narrow"), token=await auth.mint()) as connection:
            for channel in ("alerts", "signals"):
                await connection.request(
                    {"type": "subscribe", "channel": channel, "id": channel}, "subscribed"
                )
            narrower = await auth.mint(channels=["alerts"])
            await connection.send({"type": "auth", "token": narrower, "id": "r"})
            await connection.send({"type": "ping", "id": "after"})
            replies = await connection.collect_until(
                lambda got: any(m["type"] == "pong" for m in got)
            )
    answers = [m for m in replies if m["type"] in ("unsubscribed", "error", "pong")]
    assert [(m["type"], m.get("channel")) for m in answers] == [
        ("unsubscribed", "signals"),
        ("pong", None),
    ]  # a refresh that is taken is not answered itself
    assert answers[0]["reason"]


async def test_a_refresh_for_another_user_is_refused_and_changes_nothing(auth: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with auth.peer(new_id("other-sub"), token=await auth.mint()) as connection:
            await connection.request(
                {"type": "subscribe", "channel": "alerts", "id": 1}, "subscribed"
            )
            other = await auth.mint(sub=f"{SUB}-other")
            error = await connection.request({"type": "auth", "token": other, "id": "r"}, "error")
            assert (error["code"], error["id"]) == ("unauthorized", "r")
            # Still open, still subscribed: unsubscribing acknowledges what was held.
            ack = await connection.request(
                {"type": "unsubscribe", "channel": "alerts", "id": 2}, "unsubscribed"
            )
            assert ack["channel"] == "alerts"


async def test_at_exp_the_connection_is_closed_with_4401(auth: Target) -> None:
    token = await auth.mint(ttl=2)
    with trio.fail_after(TIMEOUT):
        async with auth.peer(new_id("expiry"), token=token) as connection:
            messages, code = await refused(connection)
    errors = [m for m in messages if m["type"] == "error"]
    assert [e["code"] for e in errors] == ["unauthorized"]
    assert code == UNAUTHORIZED


async def test_a_refresh_before_exp_keeps_the_connection(auth: Target) -> None:
    longer = await auth.mint()
    short = await auth.mint(ttl=2)
    with trio.fail_after(TIMEOUT):
        async with auth.peer(new_id("refresh"), token=short) as connection:
            await connection.send({"type": "auth", "token": longer, "id": "r"})
            await wall_clock_past(exp_of(short) + 1)
            pong = await connection.request({"type": "ping", "id": "still"}, "pong", "error")
            assert (pong["type"], pong["id"]) == ("pong", "still")


# --- authentication off ---------------------------------------------------------------------


async def test_without_authentication_auth_is_accepted_and_ignored(target: Target) -> None:
    if target.authentication:
        pytest.skip("the server has authentication on: the tests above cover auth there")
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("ignored")) as connection:
            await connection.send({"type": "auth", "token": "anything", "id": "a"})
            reply = await connection.request({"type": "ping", "id": "p"}, "pong", "error")
            assert (reply["type"], reply["id"]) == ("pong", "p")
