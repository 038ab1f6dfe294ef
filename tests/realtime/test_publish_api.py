"""POST /api/publish end to end: over a real socket, into the real gateway, out to a client."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from protocol import Channel
from realtime import Server
from realtime._bus import PublishUnavailable
from realtime._http_auth import HTTPAuth
from realtime._publish import PublishAPI

from .helpers import TIMEOUT, connect, http_requests, start_gateway

KEY = "test-key-0123456789abcdef"
ALERT = {
    "id": "ext-1",
    "symbol": "AAPL",
    "type": "price_above",
    "message": "AAPL crossed $185",
    "severity": "warning",
}
PRICE = {
    "price": 190.0,
    "change": 1.5,
    "change_pct": 0.8,
    "volume": 1200,
    "bid": 189.95,
    "ask": 190.05,
}


async def post(
    server: Server,
    body: bytes | dict[str, Any],
    *,
    key: str | None = KEY,
    method: str = "POST",
    headers: list[tuple[str, str]] | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One request on its own connection; the JSON response body."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    extra = [] if key is None else [("Authorization", f"Bearer {key}")]
    ((status, response_headers, content),) = await http_requests(
        server.port, [(method, "/api/publish", raw)], headers=extra + (headers or [])
    )
    return status, response_headers, json.loads(content)


async def test_publish_reaches_subscribers_and_to_targets_one(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False)
    with trio.fail_after(TIMEOUT):
        async with connect(server, "alice") as alice, connect(server, "bob") as bob:
            for client in (alice, bob):
                await client.request({"type": "subscribe", "channel": "alerts"}, "subscribed")
                await client.request({"type": "subscribe", "channel": "signals"}, "subscribed")
            status, _, body = await post(server, {"channel": "alerts", "data": ALERT})
            assert (status, body) == (202, {"status": "accepted", "channel": "alerts"})
            for client in (alice, bob):
                message = await client.next("alert_triggered")
                assert message["data"] == ALERT
                assert message["seq"] == 1
            signal = {"symbol": "MSFT", "action": "buy", "confidence": 0.7, "reasoning": "why"}
            status, _, body = await post(
                server, {"channel": "signals", "data": signal, "to": "bob"}
            )
            assert (status, body["to"]) == (202, "bob")
            assert (await bob.next("trading_signal"))["data"] == signal
            # Alice gets nothing of it: her next signal is the next broadcast one.
            await post(server, {"channel": "signals", "data": {**signal, "symbol": "KO"}})
            assert (await alice.next("trading_signal"))["data"]["symbol"] == "KO"
    assert server.publish_api.accepted == 3


async def test_every_channel_can_be_published(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False)
    portfolio = {
        "total_value": 1000.5,
        "cash": 500.25,
        "day_change": -1.5,
        "day_change_pct": -0.15,
        "positions": [
            {
                "symbol": "AAPL",
                "quantity": 2,
                "avg_cost": 200.0,
                "price": 250.125,
                "market_value": 500.25,
                "unrealized_pnl": 100.25,
                "unrealized_pnl_pct": 25.06,
            }
        ],
    }
    note = {"id": "n1", "message": "Model retrained", "type": "success"}
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            for channel in ("portfolio", "notifications"):
                await client.request({"type": "subscribe", "channel": channel}, "subscribed")
            assert (await post(server, {"channel": "portfolio", "data": portfolio}))[0] == 202
            assert (await client.next("portfolio_update"))["data"] == portfolio
            assert (await post(server, {"channel": "notifications", "data": note}))[0] == 202
            assert (await client.next("notification"))["data"] == note


BAD_BODIES: list[tuple[bytes | dict[str, Any], int, str, str]] = [
    (b"{nope", 400, "invalid_json", "The body is not valid JSON"),
    (b"[1, 2]", 400, "invalid_message", "The body must be a JSON object"),
    ({"channel": "alerts"}, 400, "invalid_message", "Field 'data' is required"),
    ({"data": ALERT}, 400, "invalid_message", "Field 'channel' is required"),
    (
        {"channel": "alerts", "data": ALERT, "extra": 1},
        400,
        "invalid_message",
        "Unknown field 'extra'",
    ),
    ({"channel": 5, "data": ALERT}, 400, "invalid_message", "Field 'channel' must be a string"),
    (
        {"channel": "invalid_channel", "data": ALERT},
        400,
        "unknown_channel",
        "Unknown channel: invalid_channel",
    ),
    ({"channel": "alerts", "data": [1]}, 400, "invalid_message", "Field 'data' must be an object"),
    (
        {"channel": "alerts", "data": {**ALERT, "severity": "apocalyptic"}},
        400,
        "invalid_message",
        "In 'data': ",
    ),
    (
        {"channel": "alerts", "data": {**ALERT, "symbol": "aapl"}},
        400,
        "invalid_symbol",
        "In 'data': ",
    ),
    (
        {"channel": "alerts", "data": {**ALERT, "colour": "red"}},
        400,
        "invalid_message",
        "In 'data': ",
    ),
    (
        {"channel": "alerts", "data": {k: v for k, v in ALERT.items() if k != "id"}},
        400,
        "invalid_message",
        "In 'data': ",
    ),
    (
        {
            "channel": "signals",
            "data": {"symbol": "A", "action": "buy", "confidence": 1.5, "reasoning": "x"},
        },
        400,
        "invalid_message",
        "In 'data': ",
    ),
    (
        {"channel": "alerts", "data": ALERT, "to": "bad id"},
        400,
        "invalid_message",
        "Field 'to' must be a client id",
    ),
    (
        {"channel": "alerts", "data": ALERT, "to": None},
        400,
        "invalid_message",
        "Field 'to' must be a client id",
    ),
    (
        {"channel": "prices", "data": PRICE},
        400,
        "invalid_message",
        "Field 'symbol' is required on prices",
    ),
    (
        {"channel": "prices", "symbol": "aapl", "data": PRICE},
        400,
        "invalid_symbol",
        "Invalid symbol: 'aapl'",
    ),
    (
        {"channel": "prices", "symbol": "ORCL", "data": PRICE},
        400,
        "unknown_symbol",
        "Unknown symbol: ORCL is not in the price universe",
    ),
    (
        {"channel": "prices", "symbol": "AAPL", "data": PRICE, "to": "bob"},
        400,
        "invalid_message",
        "Field 'to' is not for prices",
    ),
    (
        {"channel": "prices", "symbol": "AAPL", "data": {**PRICE, "price": -1.0}},
        400,
        "invalid_message",
        "In 'data': Field 'price' must be above 0, got -1.0",
    ),
    (
        {"channel": "prices", "symbol": "AAPL", "data": {**PRICE, "bid": 191.0}},
        400,
        "invalid_message",
        "In 'data': Field 'bid' (191.0) must not be above 'ask' (190.05)",
    ),
    (
        {"channel": "prices", "symbol": "AAPL", "data": {**PRICE, "volume": 1.5}},
        400,
        "invalid_message",
        "In 'data': ",
    ),
    (
        {"channel": "prices", "symbol": "AAPL", "data": {**PRICE, "price": "190"}},
        400,
        "invalid_message",
        "In 'data': ",
    ),
    (
        {"channel": "prices", "symbol": "AAPL", "data": PRICE, "user": "alice"},
        400,
        "invalid_message",
        "Field 'user' is not for prices",
    ),
    (
        {"channel": "alerts", "symbol": "AAPL", "data": ALERT},
        400,
        "invalid_message",
        "Field 'symbol' is only for prices",
    ),
    (
        {"events": [{"channel": "alerts", "data": ALERT}, {"channel": "alerts", "data": [1]}]},
        400,
        "invalid_message",
        "events[1]: Field 'data' must be an object",
    ),
    (
        {"events": [{"channel": "prices", "symbol": "AAPL", "data": PRICE}, {"channel": "x"}]},
        400,
        "invalid_message",
        "events[1]: Field 'data' is required",
    ),
    ({"events": []}, 400, "invalid_message", "Field 'events' must be a list of 1 to 1000"),
    ({"events": {}}, 400, "invalid_message", "Field 'events' must be a list of 1 to 1000"),
    (
        {"events": [{"channel": "alerts", "data": ALERT}], "channel": "alerts"},
        400,
        "invalid_message",
        "A batch body has the one field 'events'",
    ),
    ({"events": [5]}, 400, "invalid_message", "events[0]: An event must be a JSON object"),
]


async def test_bad_bodies_are_refused_with_protocol_codes_and_nothing_is_published(
    nursery: trio.Nursery,
) -> None:
    # Without feeds, the default universe (AAPL, MSFT, ...) is nobody's: prices may come.
    server = await start_gateway(nursery, api_key=KEY, feeds=False)
    with trio.fail_after(TIMEOUT):
        for body, status, code, text in BAD_BODIES:
            got_status, headers, got = await post(server, body)
            assert (got_status, got["code"]) == (status, code), body
            assert got["error"].startswith(text), (body, got)
            assert set(got) == {"error", "code"}
            assert headers["content-type"] == "application/json"
    assert server.hub.published == 0
    assert server.publish_api.rejected == len(BAD_BODIES)


async def test_keys_are_checked_and_never_logged(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False)
    good = {"channel": "alerts", "data": ALERT}
    with trio.fail_after(TIMEOUT):
        status, headers, body = await post(server, good, key=None)
        assert (status, body["code"]) == (401, "unauthorized")
        assert headers["www-authenticate"].startswith("Bearer")
        for key in ("wrong-key-0123456789abcdef", KEY + "x", KEY[:-1], KEY.upper()):
            status, _, body = await post(server, good, key=key)
            assert (status, body["code"]) == (401, "unauthorized"), key
        status, _, body = await post(
            server, good, key=None, headers=[("Authorization", f"Basic {KEY}")]
        )
        assert status == 401
        # The key is checked before the body is even read.
        status, _, body = await post(server, b"{nope", key="wrong-key-0123456789abcdef")
        assert status == 401
        assert (await post(server, good))[0] == 202
    assert server.hub.published == 1
    assert KEY not in caplog.text
    assert "Refused publish from 127.0.0.1" in caplog.text
    assert KEY not in repr(server.config)


async def test_without_a_key_the_api_is_off(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    with trio.fail_after(TIMEOUT):
        status, _, body = await post(server, {"channel": "alerts", "data": ALERT})
        assert (status, body["code"]) == (403, "forbidden")
        assert "--api-key" in body["error"]
    assert server.hub.published == 0


async def test_only_post(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False)
    with trio.fail_after(TIMEOUT):
        status, headers, body = await post(server, b"", method="GET")
        assert (status, headers["allow"], body["code"]) == (405, "POST", "invalid_message")


async def test_body_size_is_bounded(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False, publish_max_body=1024)
    padded = {"channel": "alerts", "data": {**ALERT, "message": "x" * 800}}
    with trio.fail_after(TIMEOUT):
        assert (await post(server, padded))[0] == 202  # just under
        too_big = {"channel": "alerts", "data": {**ALERT, "message": "x" * 1100}}
        status, _, body = await post(server, too_big)
        assert (status, body["code"]) == (413, "too_large")
        assert body["error"] == "The body is larger than 1024 bytes"
    assert server.hub.published == 1


async def test_a_trickled_body_gets_408_at_the_body_deadline(
    nursery: trio.Nursery, socket_clock: trio.testing.MockClock
) -> None:
    # A valid key and a body sent a byte a second: it was still being read after 24 s.
    server = await start_gateway(nursery, api_key=KEY, feeds=False, body_timeout=10.0)
    with trio.fail_after(TIMEOUT * 10):  # virtual seconds
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await stream.send_all(
                b"POST /api/publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: 100\r\n\r\n{"
            )
            started = trio.current_time()
            response = b""
            with trio.move_on_after(60):  # keeps trickling until the server answers
                async with trio.open_nursery() as trickle:

                    async def read() -> None:
                        nonlocal response
                        while b"\r\n\r\n" not in response:
                            response += await stream.receive_some()
                        trickle.cancel_scope.cancel()

                    trickle.start_soon(read)
                    while True:
                        await trio.sleep(1)
                        await stream.send_all(b" ")
            assert response.startswith(b"HTTP/1.1 408 "), response
            assert 10 <= trio.current_time() - started < 12  # virtual time: the deadline
    assert server.publish_api.accepted == 0


async def test_prices_one_at_a_time_or_in_a_batch(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False, universe="AAPL,ORCL")
    with trio.fail_after(TIMEOUT):
        async with connect(server) as client:
            await client.request({"type": "subscribe", "channel": "prices"}, "subscribed")
            await client.request({"type": "subscribe", "channel": "alerts"}, "subscribed")
            status, _, body = await post(
                server, {"channel": "prices", "symbol": "ORCL", "data": PRICE}
            )
            assert (status, body) == (202, {"status": "accepted", "channel": "prices"})
            update = await client.next("price_update")
            assert (update["symbol"], update["data"], update["seq"]) == ("ORCL", PRICE, 1)
            batch = {
                "events": [
                    {"channel": "prices", "symbol": "AAPL", "data": PRICE},
                    {"channel": "prices", "symbol": "ORCL", "data": {**PRICE, "price": 190.01}},
                    {"channel": "alerts", "data": ALERT},
                ]
            }
            status, _, body = await post(server, batch)
            assert (status, body) == (202, {"status": "accepted", "events": 3})
            got = await client.collect_until(lambda kept: len(kept) == 3, lambda m: True)
            # Prices may overtake other messages (they conflate); each stream keeps order.
            prices = [(m["symbol"], m["data"]["price"], m["seq"]) for m in got if "symbol" in m]
            assert sorted(prices) == [("AAPL", 190.0, 1), ("ORCL", 190.01, 2)]
            assert [m["data"] for m in got if m["type"] == "alert_triggered"] == [ALERT]
    assert server.publish_api.accepted == 4


async def test_prices_of_the_gateways_own_feed_are_refused(nursery: trio.Nursery) -> None:
    """Two writers of one symbol would interleave: the simulated market owns its symbols."""
    server = await start_gateway(nursery, api_key=KEY, derived_feeds=False)
    with trio.fail_after(TIMEOUT):
        status, _, body = await post(server, {"channel": "prices", "symbol": "AAPL", "data": PRICE})
    assert (status, body["code"]) == (409, "forbidden")
    assert body["error"].startswith("AAPL's prices come from the gateway's own price feed")


class _FailingBus:
    """A publisher that takes ``take`` events, then fails as a bus away from Redis."""

    def __init__(self, take: int, *, sent: bool) -> None:
        self.take = take
        self.sent = sent
        self.published: list[object] = []

    async def publish(self, channel: Channel, data: Any, **address: Any) -> None:
        if len(self.published) == self.take:
            raise PublishUnavailable("Redis is away", sent=self.sent)
        self.published.append(data)


async def _answer(api: PublishAPI, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    raw = json.dumps(body).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/publish",
        "headers": [(b"authorization", f"Bearer {KEY}".encode())],
        "client": ("127.0.0.1", 5000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await api(scope, receive, send)
    start, body_message = sent
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, json.loads(body_message["body"])


@pytest.mark.parametrize(
    ("take", "sent", "code", "says"),
    [
        (0, False, "unavailable", "Redis is away"),
        (0, True, "unconfirmed", "Redis is away: publishing again could repeat them"),
        (
            1,
            False,
            "unconfirmed",
            "Redis is away; 1 of the 2 events before it were published: publishing again",
        ),
    ],
)
async def test_a_bus_that_fails_says_whether_anything_went_out(
    take: int, sent: bool, code: str, says: str
) -> None:
    bus = _FailingBus(take, sent=sent)
    api = PublishAPI(
        bus,
        auth=HTTPAuth(api_key=KEY, verifier=None),
        max_body=64 * 1024,
        universe=("AAPL",),
    )
    event = {"channel": "alerts", "data": ALERT}
    status, headers, answer = await _answer(api, {"events": [event, event]})
    assert (status, answer["code"]) == (503, code)
    assert answer["error"].startswith(says)
    # Only what certainly published nothing invites a retry.
    assert ("retry-after" in headers) is (code == "unavailable")
    assert api.accepted == len(bus.published) == take
