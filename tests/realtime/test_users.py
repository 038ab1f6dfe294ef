"""Users on the real gateway, over real sockets: client ids scoped to their user, the
per-user connection limit, per-user data, and the administrator's side of the HTTP API
with authentication on."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
import trio
from trio_websocket import ConnectionClosed

from realtime import Server

from .helpers import TIMEOUT, Client, close_of, http_requests, open_ws, start_gateway, ws_url
from .test_alert_rules_api import SYMBOL, current_price, next_alert_of, straddle

SECRET = "s" * 32


def token(sub: str, **extra: Any) -> str:
    return jwt.encode({"sub": sub, "exp": time.time() + 600, **extra}, SECRET, algorithm="HS256")


@asynccontextmanager
async def connect(server: Server, sub: str, client_id: str) -> AsyncIterator[Client]:
    """A connection of ``sub`` with ``client_id``, welcomed."""
    headers = [(b"Authorization", f"Bearer {token(sub)}".encode())]
    async with open_ws(ws_url(server, client_id), extra_headers=headers) as ws:
        welcome = json.loads(await ws.get_message())
        assert welcome["type"] == "welcome", welcome
        yield Client(ws, welcome)


async def refused(server: Server, sub: str, client_id: str) -> tuple[int, str]:
    """The close code and reason a connection of ``sub`` gets before any welcome."""
    headers = [(b"Authorization", f"Bearer {token(sub)}".encode())]
    async with open_ws(ws_url(server, client_id), extra_headers=headers) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    return close_of(closed.value)


async def closed_with(client: Client) -> tuple[int, str]:
    """The close code and reason ``client`` gets, after whatever comes before it."""
    with pytest.raises(ConnectionClosed) as closed:
        await client.collect_until(lambda _: False, lambda _: False)
    return close_of(closed.value)


async def until(condition: Any) -> None:
    """Wait until ``condition()`` holds: for what the server does after a client's
    close, which no message announces. The caller's ``fail_after`` bounds it."""
    while not condition():
        await trio.sleep(0.01)


async def gateway(nursery: trio.Nursery, **settings: Any) -> Server:
    settings.setdefault("jwt_secret", SECRET)
    return await start_gateway(nursery, feeds=False, **settings)


async def test_a_client_id_held_by_another_user_is_refused_and_the_holder_stays(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="realtime.websocket")
    server = await gateway(nursery)
    with trio.fail_after(TIMEOUT):
        async with connect(server, "alice", "desk-1") as alice:
            code, reason = await refused(server, "mallory", "desk-1")
            assert (code, reason) == (4409, "Client id in use by another user: choose another")
            # Alice's connection is untouched: it answers, and holds the id.
            assert (await alice.request({"type": "ping", "id": 1}, "pong"))["id"] == 1
            assert server.hub.holder("desk-1") is not None
            assert server.hub.connection_count_of("mallory") == 0
            # Her own newer connection replaces it, as before.
            async with connect(server, "alice", "desk-1"):
                assert await closed_with(alice) == (
                    4409,
                    "Replaced by a newer connection with the same client id",
                )
    assert server.sessions.refused_client_ids == 1
    assert "Refused desk-1 for user mallory from 127.0.0.1:" in caplog.text


async def test_a_user_has_at_most_max_connections_per_user(nursery: trio.Nursery) -> None:
    server = await gateway(nursery, max_connections_per_user=2)
    with trio.fail_after(TIMEOUT):
        async with connect(server, "alice", "a1"), connect(server, "alice", "a2") as second:
            code, reason = await refused(server, "alice", "a3")
            assert (code, reason) == (
                4429,
                "Too many connections for this user (at most 2): close one first",
            )
            # Another user is not affected, and a replacement adds no connection.
            async with connect(server, "bob", "b1"), connect(server, "alice", "a2"):
                assert await closed_with(second) == (
                    4409,
                    "Replaced by a newer connection with the same client id",
                )
        await until(lambda: server.hub.connection_count_of("alice") == 0)
        async with connect(server, "alice", "a3"):
            pass
    assert server.sessions.refused_over_user_limit == 1


async def test_without_authentication_there_is_no_per_user_limit(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False, max_connections_per_user=1)
    with trio.fail_after(TIMEOUT):
        async with open_ws(ws_url(server, "one")) as one, open_ws(ws_url(server, "two")) as two:
            for ws in (one, two):
                assert json.loads(await ws.get_message())["type"] == "welcome"


async def test_the_demo_portfolio_is_the_demo_user_s(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, jwt_secret=SECRET, tick_rate=20.0)
    with trio.fail_after(TIMEOUT):
        async with (
            connect(server, "demo", "demo-1") as demo,
            connect(server, "alice", "a1") as alice,
        ):
            for client in (demo, alice):
                await client.request({"type": "subscribe", "channel": "portfolio"}, "subscribed")
            for _ in range(2):
                assert (await demo.next("portfolio_update"))["data"]["positions"]
            # Offered to every addressee at once: had Alice been one, it would be queued.
            assert await alice.queued(lambda m: m["type"] == "portfolio_update") == []


async def test_without_authentication_every_connection_sees_the_demo_portfolio(
    nursery: trio.Nursery,
) -> None:
    server = await start_gateway(nursery, tick_rate=20.0)
    with trio.fail_after(TIMEOUT):
        async with open_ws(ws_url(server, "anyone")) as ws:
            client = Client(ws, json.loads(await ws.get_message()))
            await client.request({"type": "subscribe", "channel": "portfolio"}, "subscribed")
            assert (await client.next("portfolio_update"))["data"]["positions"]


# --- the HTTP side with authentication on ---------------------------------------------

KEY = "test-key-0123456789abcdef"
ADMIN = token("root", roles=["admin"])
NOTE = {"id": "n", "message": "for you", "type": "info"}


async def request(
    server: Server,
    method: str,
    target: str,
    body: dict[str, Any] | None = None,
    credential: str | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request on its own connection: status, headers, and the body (JSON when it
    is JSON)."""
    raw = b"" if body is None else json.dumps(body).encode()
    auth = [] if credential is None else [("Authorization", f"Bearer {credential}")]
    ((status, headers, content),) = await http_requests(
        server.port, [(method, target, raw)], headers=auth
    )
    is_json = headers.get("content-type") == "application/json" and content
    return status, headers, json.loads(content) if is_json else content


GUARDED = [
    ("GET", "/ws/stats", None),
    ("GET", "/metrics", None),
    ("POST", "/api/publish", {"channel": "notifications", "data": NOTE}),
    ("POST", "/api/disconnect", {"user": "nobody"}),
]


async def test_the_admin_side_needs_the_key_or_an_admin_token(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    server = await gateway(nursery, api_key=KEY)
    user = token("alice")
    with trio.fail_after(TIMEOUT):
        for method, target, body in GUARDED:
            for credential in (None, "garbage", token("alice") + "x", KEY[:-1]):
                status, headers, got = await request(server, method, target, body, credential)
                assert (status, got["code"]) == (401, "unauthorized"), (target, credential)
                assert headers["www-authenticate"].startswith("Bearer")
            status, _, got = await request(server, method, target, body, user)
            assert (status, got["code"]) == (403, "forbidden"), target
            assert "roles claim lists 'admin'" in got["error"]
            for credential in (KEY, ADMIN):
                status, _, got = await request(server, method, target, body, credential)
                assert status in (200, 202), (target, got)
        # A user's token reads the user's own alert rules; nothing without one.
        assert (await request(server, "GET", "/api/alert-rules", None, user))[0] == 200
        assert (await request(server, "GET", "/api/alert-rules"))[0] == 401
        # /health stays open, for load balancers.
        assert (await request(server, "GET", "/health"))[0] == 200
    assert server.http_auth.unauthorized == 4 * len(GUARDED) + 1
    assert server.http_auth.forbidden == len(GUARDED)
    assert "[API] Refused /ws/stats request from 127.0.0.1: Unauthorized" in caplog.text
    for secret in (KEY, user, ADMIN):
        assert secret not in caplog.text


async def test_stats_name_each_client_s_user_for_the_admin(nursery: trio.Nursery) -> None:
    server = await gateway(nursery)  # no API key: admin tokens alone
    with trio.fail_after(TIMEOUT):
        status, _, got = await request(server, "GET", "/ws/stats", credential="garbage")
        assert (status, got["code"]) == (401, "unauthorized")
        assert got["error"].startswith("Unauthorized (not a token): send the gateway's API key")
        async with connect(server, "alice", "a1"), connect(server, "bob", "b1"):
            status, _, body = await request(server, "GET", "/ws/stats", credential=ADMIN)
    assert status == 200
    assert body["clients"] == ["a1", "b1"]
    assert body["users"] == {"a1": "alice", "b1": "bob"}


async def subscribed(client: Client, channel: str = "notifications") -> Client:
    await client.request({"type": "subscribe", "channel": channel}, "subscribed")
    return client


async def publish(server: Server, **fields: Any) -> tuple[int, Any]:
    body = {"channel": "notifications", "data": {**NOTE, "id": fields.pop("id")}, **fields}
    status, _, got = await request(server, "POST", "/api/publish", body, KEY)
    return status, got


def ids(messages: list[dict[str, Any]]) -> list[str]:
    return [m["data"]["id"] for m in messages if m["type"] == "notification"]


async def test_publish_to_a_user_reaches_that_user_only_live_and_on_resume(
    nursery: trio.Nursery,
) -> None:
    server = await gateway(nursery, api_key=KEY)
    with trio.fail_after(TIMEOUT):
        async with (
            connect(server, "alice", "a1") as a1,
            connect(server, "alice", "a2") as a2,
            connect(server, "bob", "b1") as b1,
        ):
            for client in (a1, a2, b1):
                await subscribed(client)
            assert await publish(server, id="alice", user="alice") == (
                202,
                {"status": "accepted", "channel": "notifications", "user": "alice"},
            )
            assert (await publish(server, id="bob", user="bob"))[0] == 202
            assert (await publish(server, id="all"))[0] == 202
            assert (await publish(server, id="a2", to="a2", user="alice"))[0] == 202
            assert (await publish(server, id="not-b1", to="b1", user="alice"))[0] == 202
            status, got = await publish(server, id="x", to="a1")
            assert (status, got["code"]) == (400, "invalid_message")
            assert got["error"].startswith("With authentication on, 'to' needs 'user' too")
            received = {
                c.welcome["client_id"]: ids(await c.queued(lambda m: True)) for c in (a1, a2, b1)
            }
        assert received == {
            "a1": ["alice", "all"],
            "a2": ["alice", "all", "a2"],
            "b1": ["bob", "all"],
        }
        # Resumes replay what was addressed to the connection, and nothing else: not
        # even to someone who takes a client id its user no longer holds.
        for sub, client_id, expected in [
            ("alice", "a3", ["alice", "all"]),
            ("mallory", "a2", ["all"]),
            ("bob", "b1", ["bob", "all"]),
        ]:
            async with connect(server, sub, client_id) as client:
                await client.send(
                    {
                        "type": "subscribe",
                        "channel": "notifications",
                        "since": 0,
                        "epoch": client.welcome["epoch"],
                    }
                )
                await client.next("subscribed")
                assert ids(await client.queued(lambda m: True)) == expected, (sub, client_id)
            await until(lambda: server.hub.connection_count == 0)


async def test_disconnect_closes_a_user_s_connections_with_4403(nursery: trio.Nursery) -> None:
    server = await gateway(nursery, api_key=KEY)
    with trio.fail_after(TIMEOUT):
        async with (
            connect(server, "alice", "a1") as a1,
            connect(server, "alice", "a2") as a2,
            connect(server, "bob", "b1") as b1,
        ):
            status, _, got = await request(
                server, "POST", "/api/disconnect", {"user": "alice"}, ADMIN
            )
            assert (status, got) == (200, {"disconnected": ["a1", "a2"]})
            for client in (a1, a2):
                assert await closed_with(client) == (
                    4403,
                    "Disconnected by the gateway's administrator",
                )
            assert (await b1.request({"type": "ping", "id": 1}, "pong"))["id"] == 1
            # Both given: that client, if it is that user's.
            body = {"user": "alice", "client_id": "b1"}
            assert (await request(server, "POST", "/api/disconnect", body, KEY))[2] == {
                "disconnected": []
            }
            body = {"client_id": "b1"}
            assert (await request(server, "POST", "/api/disconnect", body, KEY))[2] == {
                "disconnected": ["b1"]
            }
            assert (await closed_with(b1))[0] == 4403
        for bad in ({}, {"user": ""}, {"client_id": "no spaces"}, {"who": "alice"}):
            status, _, got = await request(server, "POST", "/api/disconnect", bad, KEY)
            assert (status, got["code"]) == (400, "invalid_message"), bad
        _, _, metrics = await request(server, "GET", "/metrics", credential=KEY)
    assert server.sessions.disconnected == 3
    assert b"realtime_disconnected_total 3.0" in metrics
    for name in ("refused_origins", "unauthorized", "refused_refreshes", "refused_client_ids"):
        assert f"realtime_{name}_total 0.0".encode() in metrics


async def test_alert_rules_belong_to_the_user_whose_token_added_them(
    nursery: trio.Nursery,
) -> None:
    server = await start_gateway(nursery, jwt_secret=SECRET, api_key=KEY, tick_rate=20.0)
    alice, bob = token("alice"), token("bob")
    rules = "/api/alert-rules"
    with trio.fail_after(TIMEOUT):
        async with connect(server, "alice", "a1") as a1, connect(server, "bob", "b1") as b1:
            for client in (a1, b1):
                await subscribed(client, "alerts")
            mine = straddle(await current_price(a1), "mine")
            for rule in mine:
                status, headers, got = await request(server, "POST", rules, rule, alice)
                assert (status, got["user"]) == (201, "alice")
                assert headers["location"] == f"{rules}/{rule['id']}"
            # Bob may use the same id for a rule of his own, not add one for Alice.
            _, _, got = await request(server, "POST", rules, {**mine[0], "threshold": 1}, bob)
            assert got["user"] == "bob"
            status, _, got = await request(server, "POST", rules, {**mine[1], "user": "alice"}, bob)
            assert (status, got["code"]) == (403, "forbidden")
            # Each lists and deletes only their own; another's rule is as if absent.
            _, _, listed = await request(server, "GET", rules, None, alice)
            assert [(r["id"], r["user"]) for r in listed["rules"]] == [
                ("mine-up", "alice"),
                ("mine-down", "alice"),
            ]
            status, _, got = await request(server, "DELETE", f"{rules}/mine-down", None, bob)
            assert (status, got["code"]) == (404, "not_found")
            status, _, got = await request(server, "GET", f"{rules}?user=alice", None, bob)
            assert (status, got["code"]) == (403, "forbidden")
            # Alice's rules fire to Alice alone: had Bob been an addressee of the alert,
            # it would be queued for him by the time it reached her (his own "mine-up",
            # at $1, never fires: the price starts above it and stays there).
            alert = await next_alert_of(a1, "mine-")
            assert alert["data"]["symbol"] == SYMBOL
            assert [m for m in await b1.queued(lambda m: True) if is_alert_of(m, "mine-")] == []
            # The key sees every rule, with its user, and deletes anyone's by naming them.
            _, _, everything = await request(server, "GET", rules, None, KEY)
            owners = {(r["id"], r.get("user")) for r in everything["rules"]}
            assert {("mine-up", "alice"), ("mine-down", "alice"), ("mine-up", "bob")} <= owners
            assert ("aapl-above", None) in owners  # the demo set: everyone's
            status, _, _ = await request(server, "DELETE", f"{rules}/mine-up?user=alice", None, KEY)
            assert status == 204
            assert (await request(server, "DELETE", f"{rules}/mine-down", None, alice))[0] == 204
            assert server.feeds.alerts.engine.rules_of("alice") == ()


def is_alert_of(message: dict[str, Any], prefix: str) -> bool:
    rule_id: str = message["data"]["id"] if message["type"] == "alert_triggered" else ""
    return rule_id.startswith(prefix)
