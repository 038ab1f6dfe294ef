"""/api/alert-rules end to end: over real sockets, into the real gateway's alert engine,
and out to a subscribed client as alert_triggered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from feeds import MAX_RULES, AlertRule, load_rules
from protocol import PriceData
from realtime import Server
from realtime._http_auth import HTTPAuth
from realtime._rules_api import AlertRulesAPI, RulesUnavailable

from .helpers import TIMEOUT, Client, connect, http_requests, start_gateway

KEY = "test-key-0123456789abcdef"
RULES = "/api/alert-rules"
RULE = {
    "id": "ext-aapl-185",
    "symbol": "AAPL",
    "type": "price_above",
    "threshold": 185.0,
    "severity": "critical",
}


async def call(
    server: Server,
    method: str,
    target: str = RULES,
    body: bytes | dict[str, Any] | None = None,
    *,
    key: str | None = KEY,
) -> tuple[int, dict[str, str], Any]:
    """One request on its own connection; the status, headers and JSON body (None: none)."""
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    auth = [] if key is None else [("Authorization", f"Bearer {key}")]
    ((status, headers, content),) = await http_requests(
        server.port, [(method, target, raw)], headers=auth
    )
    return status, headers, json.loads(content) if content else None


async def rule_ids(server: Server) -> list[str]:
    status, _, body = await call(server, "GET")
    assert status == 200
    return [rule["id"] for rule in body["rules"]]


async def test_list_add_delete(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False)
    engine = server.feeds.alerts.engine
    demo = [rule.id for rule in engine.rules]
    with trio.fail_after(TIMEOUT):
        status, headers, body = await call(server, "GET")
        assert (status, headers["content-type"]) == (200, "application/json")
        assert [rule["id"] for rule in body["rules"]] == demo
        # The demo rules read as a rule file's entries: no hysteresis unless set.
        assert set(body["rules"][0]) == {"id", "symbol", "type", "threshold", "severity"}

        status, headers, body = await call(server, "POST", body=RULE)
        assert (status, body) == (201, RULE)
        assert headers["location"] == f"{RULES}/ext-aapl-185"
        # Only what is required; the defaults come back filled in.
        minimal = {"id": "m:1", "symbol": "MSFT", "type": "percent_move", "threshold": 2}
        status, _, body = await call(server, "POST", body={**minimal, "hysteresis": 0})
        assert status == 201
        assert body == {**minimal, "threshold": 2.0, "severity": "warning", "hysteresis": 0.0}
        assert await rule_ids(server) == [*demo, "ext-aapl-185", "m:1"]
        assert engine.rules[-2] == AlertRule(
            id="ext-aapl-185", symbol="AAPL", type="price_above", threshold=185, severity="critical"
        )

        status, headers, body = await call(server, "DELETE", f"{RULES}/ext-aapl-185")
        assert (status, body) == (204, None)
        assert "content-length" not in headers  # a 204 carries no body, nor its length
        assert "ext-aapl-185" not in engine
        status, _, body = await call(server, "DELETE", f"{RULES}/ext-aapl-185")
        assert (status, body["code"]) == (404, "not_found")
        assert body["error"] == "No alert rule has the id 'ext-aapl-185'"
        status, _, body = await call(server, "DELETE", f"{RULES}/{'x' * 300}")
        assert (status, body["code"]) == (404, "not_found")
        assert len(body["error"]) < 120  # a long path is not echoed whole
        # A demo rule (from the file, or built in) is deleted alike.
        assert (await call(server, "DELETE", f"{RULES}/{demo[0]}"))[0] == 204
        assert await rule_ids(server) == [*demo[1:], "m:1"]
    assert (server.alert_rules_api.added, server.alert_rules_api.removed) == (2, 2)


async def test_a_duplicate_id_is_a_conflict(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False)
    with trio.fail_after(TIMEOUT):
        assert (await call(server, "POST", body=RULE))[0] == 201
        status, _, body = await call(server, "POST", body={**RULE, "threshold": 1})
        assert (status, body["code"]) == (409, "conflict")
        assert body["error"] == (
            "An alert rule with id 'ext-aapl-185' exists: delete it first to replace it"
        )
        # A demo rule's id is taken too; the stored rule is untouched.
        demo = server.feeds.alerts.engine.rules[0]
        status, _, body = await call(server, "POST", body={**RULE, "id": demo.id})
        assert (status, body["code"]) == (409, "conflict")
        assert server.feeds.alerts.engine.rules[0] is demo
    assert [r.threshold for r in server.feeds.alerts.engine.rules if r.id == RULE["id"]] == [185]


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in RULE.items() if k != key}


#: (body, code, the error sentence exactly).
BAD_BODIES: list[tuple[bytes | dict[str, Any], str, str]] = [
    (b"{nope", "invalid_json", "The body is not valid JSON: "),
    (b"", "invalid_json", "The body is not valid JSON: "),
    (b"[1, 2]", "invalid_message", "The body must be a JSON object"),
    (b'"rule"', "invalid_message", "The body must be a JSON object"),
    (_without("id"), "invalid_message", "rule: missing field 'id'"),
    (_without("symbol"), "invalid_message", "rule: missing field 'symbol'"),
    (_without("type"), "invalid_message", "rule: missing field 'type'"),
    (_without("threshold"), "invalid_message", "rule: missing field 'threshold'"),
    (
        {**RULE, "colour": "red"},
        "invalid_message",
        "rule: unknown field 'colour' "
        "(allowed: hysteresis, id, severity, symbol, threshold, type, user)",
    ),
    ({**RULE, "id": 7}, "invalid_message", "rule.id must be a string, got 7"),
    (
        {**RULE, "id": "has space"},
        "invalid_message",
        "rule: rule id must be 1-64 of A-Z a-z 0-9 _ . : -, got 'has space'",
    ),
    (
        {**RULE, "id": "x" * 65},
        "invalid_message",
        f"rule: rule id must be 1-64 of A-Z a-z 0-9 _ . : -, got '{'x' * 65}'",
    ),
    ({**RULE, "id": None}, "invalid_message", "rule.id must not be null"),
    ({**RULE, "symbol": 5}, "invalid_message", "rule.symbol must be a string, got 5"),
    (
        {**RULE, "symbol": "aapl"},
        "invalid_symbol",
        "rule: symbol must be a ticker matching ^[A-Z][A-Z0-9.\\-]{0,9}$, got 'aapl'",
    ),
    (
        {**RULE, "type": "sideways"},
        "invalid_message",
        "rule.type must be one of price_above, price_below, percent_move, volume_spike, "
        "got 'sideways'",
    ),
    ({**RULE, "threshold": "185"}, "invalid_message", "rule.threshold must be a number, got '185'"),
    ({**RULE, "threshold": True}, "invalid_message", "rule.threshold must be a number, got True"),
    (
        {**RULE, "threshold": 0},
        "invalid_message",
        "rule: threshold must be a finite number above 0, got 0.0",
    ),
    (
        {**RULE, "threshold": -3},
        "invalid_message",
        "rule: threshold must be a finite number above 0, got -3.0",
    ),
    (
        {**RULE, "severity": "apocalyptic"},
        "invalid_message",
        "rule.severity must be one of info, warning, critical, got 'apocalyptic'",
    ),
    ({**RULE, "severity": None}, "invalid_message", "rule.severity must not be null"),
    (
        {**RULE, "hysteresis": 1},
        "invalid_message",
        "rule: hysteresis must be at least 0 and below 1, got 1.0",
    ),
    (
        {**RULE, "hysteresis": -0.1},
        "invalid_message",
        "rule: hysteresis must be at least 0 and below 1, got -0.1",
    ),
    ({**RULE, "hysteresis": None}, "invalid_message", "rule.hysteresis must not be null"),
    (
        {**RULE, "symbol": "ZZZZ"},
        "unknown_symbol",
        "rule.symbol: ZZZZ is not a symbol of the price feed (",
    ),
]


async def test_bad_bodies_are_refused_naming_the_field_and_change_nothing(
    nursery: trio.Nursery,
) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False)
    before = server.feeds.alerts.engine.rules
    with trio.fail_after(TIMEOUT):
        for body, code, text in BAD_BODIES:
            status, headers, got = await call(server, "POST", body=body)
            assert (status, got["code"]) == (400, code), (body, got)
            if text.endswith((": ", "(")):
                assert got["error"].startswith(text), (body, got)
            else:
                assert got["error"] == text, (body, got)
            assert set(got) == {"error", "code"}
            assert headers["content-type"] == "application/json"
    assert server.feeds.alerts.engine.rules == before
    assert server.alert_rules_api.rejected == len(BAD_BODIES)


#: The bad bodies a rule file can hold too (TOML has no null; the universe is checked apart).
FILE_EXPRESSIBLE = [
    (body, error)
    for body, code, error in BAD_BODIES
    if isinstance(body, dict) and None not in body.values() and code != "unknown_symbol"
]


@pytest.mark.parametrize(("body", "error"), FILE_EXPRESSIBLE)
def test_the_api_and_rule_files_refuse_alike(
    tmp_path: Path, body: dict[str, Any], error: str
) -> None:
    # A JSON string, number or boolean is written the same in TOML.
    entries = "".join(f"{key} = {json.dumps(value)}\n" for key, value in body.items())
    path = tmp_path / "alerts.toml"
    path.write_text(f"[[rules]]\n{entries}")
    with pytest.raises(ValueError, match=r"rules\[0\]") as refused:
        load_rules(path)
    assert str(refused.value).replace(f"{path}: rules[0]", "rule") == error


async def test_unknown_symbol_lists_the_universe(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False, symbols=3)
    with trio.fail_after(TIMEOUT):
        status, _, body = await call(server, "POST", body={**RULE, "symbol": "ZZZZ"})
    universe = ", ".join(sorted(server.feeds.symbols))
    assert (status, body["code"]) == (400, "unknown_symbol")
    assert body["error"] == f"rule.symbol: ZZZZ is not a symbol of the price feed ({universe})"


async def test_the_rule_count_is_bounded(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False)
    engine = server.feeds.alerts.engine
    # Filled in process: ten thousand requests would only make the test slow.
    for n in range(MAX_RULES - 1 - len(engine)):
        engine.add_rule(AlertRule(id=f"fill-{n}", symbol="AAPL", type="price_above", threshold=1))
    with trio.fail_after(TIMEOUT):
        assert (await call(server, "POST", body=RULE))[0] == 201  # the last one that fits
        assert len(engine) == MAX_RULES
        status, _, body = await call(server, "POST", body={**RULE, "id": "one-more"})
        assert (status, body["code"]) == (409, "too_many_rules")
        assert body["error"] == (
            f"The gateway holds {MAX_RULES} alert rules, the most it takes: "
            "delete one to add another"
        )
        assert (await call(server, "DELETE", f"{RULES}/fill-0"))[0] == 204
        assert (await call(server, "POST", body={**RULE, "id": "one-more"}))[0] == 201
    assert len(engine) == MAX_RULES


async def test_the_body_is_bounded(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False, publish_max_body=1024)
    with trio.fail_after(TIMEOUT):
        padded = json.dumps(RULE).encode().ljust(1024)  # JSON allows trailing whitespace
        assert (await call(server, "POST", body=padded))[0] == 201  # just at the limit
        status, _, body = await call(server, "POST", body=padded.replace(b"ext", b"big") + b" ")
        assert (status, body) == (
            413,
            {"error": "The body is larger than 1024 bytes", "code": "too_large"},
        )
    assert "big-aapl-185" not in server.feeds.alerts.engine


async def test_keys_are_checked_first_and_never_logged(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False)
    requests: list[tuple[str, str, bytes | dict[str, Any] | None]] = [
        ("GET", RULES, None),
        ("POST", RULES, RULE),
        ("POST", RULES, b"{nope"),  # the key is checked before the body is read
        ("DELETE", f"{RULES}/aapl-above", None),  # exists: a wrong key deletes nothing
        ("DELETE", f"{RULES}/no-such-rule", None),  # and learns nothing about ids
    ]
    with trio.fail_after(TIMEOUT):
        for key in (None, "wrong-key-0123456789abcdef", KEY[:-1], KEY + "x", KEY.upper()):
            for method, target, body in requests:
                status, headers, got = await call(server, method, target, body, key=key)
                assert (status, got["code"]) == (401, "unauthorized"), (key, method, target)
                assert headers["www-authenticate"].startswith("Bearer")
    assert "aapl-above" in server.feeds.alerts.engine
    assert "ext-aapl-185" not in server.feeds.alerts.engine
    assert KEY not in caplog.text
    assert "Refused alert-rules request from 127.0.0.1" in caplog.text


async def test_without_a_key_the_api_is_off(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    before = server.feeds.alerts.engine.rules
    with trio.fail_after(TIMEOUT):
        for method, target, body in [
            ("GET", RULES, None),
            ("POST", RULES, RULE),
            ("DELETE", f"{RULES}/aapl-above", None),
        ]:
            status, _, got = await call(server, method, target, body, key=KEY)
            assert (status, got["code"]) == (403, "forbidden")
            assert got["error"] == (
                "The alert rules API is off: start the gateway with --api-key "
                "(or REALTIME_API_KEY) to turn it on"
            )
    assert server.feeds.alerts.engine.rules == before


@pytest.mark.parametrize(
    ("method", "target", "allow"),
    [
        ("PUT", RULES, "GET, POST"),
        ("DELETE", RULES, "GET, POST"),
        ("PATCH", RULES, "GET, POST"),
        ("GET", f"{RULES}/aapl-above", "DELETE"),
        ("POST", f"{RULES}/aapl-above", "DELETE"),
        ("PUT", f"{RULES}/aapl-above", "DELETE"),
    ],
)
async def test_other_methods_are_405(
    nursery: trio.Nursery, method: str, target: str, allow: str
) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False)
    with trio.fail_after(TIMEOUT):
        status, headers, body = await call(server, method, target, RULE)
    assert (status, headers["allow"], body["code"]) == (405, allow, "invalid_message")
    assert "aapl-above" in server.feeds.alerts.engine


async def test_a_path_beside_the_api_is_not_found(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False)
    with trio.fail_after(TIMEOUT):
        status, _, _ = await call(server, "GET", "/api/alert-rulesx")
    assert status == 404


class _AwayRules:
    """Rules out of reach, as a node's are while Redis is away: ``unconfirmed`` says
    whether a change was sent before the failure."""

    def __init__(self, *, unconfirmed: bool) -> None:
        self.unconfirmed = unconfirmed

    async def rules(self) -> list[AlertRule]:
        raise RulesUnavailable("Redis is away")

    async def add(self, rule: AlertRule) -> None:
        raise RulesUnavailable("Redis is away", unconfirmed=self.unconfirmed)

    async def remove(self, rule_id: str, user: str | None) -> bool:
        raise RulesUnavailable("Redis is away", unconfirmed=self.unconfirmed)


@pytest.mark.parametrize(
    ("method", "target", "unconfirmed", "code"),
    [
        ("GET", RULES, False, "unavailable"),
        ("POST", RULES, False, "unavailable"),
        ("POST", RULES, True, "unconfirmed"),
        ("DELETE", f"{RULES}/r1", True, "unconfirmed"),
    ],
)
async def test_rules_out_of_reach_are_503_saying_whether_anything_changed(
    method: str, target: str, unconfirmed: bool, code: str
) -> None:
    api = AlertRulesAPI(
        _AwayRules(unconfirmed=unconfirmed),
        ("AAPL",),
        auth=HTTPAuth(api_key=KEY, verifier=None),
        max_body=64 * 1024,
    )
    scope = {
        "type": "http",
        "method": method,
        "path": target,
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {KEY}".encode())],
        "client": ("127.0.0.1", 5000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": json.dumps(RULE).encode(), "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await api(scope, receive, send)
    start, body = sent
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert (start["status"], json.loads(body["body"])) == (
        503,
        {"error": "Redis is away", "code": code},
    )
    # Only what certainly changed nothing invites a retry.
    assert ("retry-after" in headers) is (code == "unavailable")


# --- end to end: rules added over HTTP drive the live alert feed ---------------------------

SYMBOL = "MSFT"


async def current_price(client: Client) -> float:
    await client.request(
        {"type": "subscribe", "channel": "prices", "symbols": [SYMBOL]}, "subscribed"
    )
    price: float = (await client.next("price_update"))["data"]["price"]
    await client.request(
        {"type": "unsubscribe", "channel": "prices", "symbols": [SYMBOL]}, "unsubscribed"
    )
    return price


def straddle(price: float, prefix: str) -> list[dict[str, Any]]:
    """Two rules a cent either side of ``price`` with no hysteresis: the simulated walk
    (some cents a tick) crosses one of them within a few ticks, and again and again."""
    common = {"symbol": SYMBOL, "severity": "info", "hysteresis": 0}
    return [
        {**common, "id": f"{prefix}-up", "type": "price_above", "threshold": price + 0.01},
        {**common, "id": f"{prefix}-down", "type": "price_below", "threshold": price - 0.01},
    ]


async def next_alert_of(client: Client, prefix: str) -> dict[str, Any]:
    """The next alert_triggered of a rule whose id starts with ``prefix`` (the demo
    rules fire too)."""
    while True:
        message = await client.next("alert_triggered")
        if message["data"]["id"].startswith(prefix):
            return message


def is_http_alert(message: dict[str, Any]) -> bool:
    """An alert_triggered of a rule the test added over HTTP."""
    rule_id: str = message["data"]["id"] if message["type"] == "alert_triggered" else ""
    return rule_id.startswith("http-")


async def test_a_rule_added_over_http_fires_to_a_subscriber(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, tick_rate=20, api_key=KEY)
    with trio.fail_after(TIMEOUT):
        async with connect(server, "watcher") as client:
            await client.request({"type": "subscribe", "channel": "alerts"}, "subscribed")
            for rule in straddle(await current_price(client), "http"):
                assert (await call(server, "POST", body=rule))[0] == 201
            alert = (await next_alert_of(client, "http-"))["data"]
            assert alert["symbol"] == SYMBOL
            assert alert["severity"] == "info"
            assert alert["id"] in ("http-up-1", "http-down-1")
            assert alert["message"].startswith(f"{SYMBOL} crossed $")

            # Deleted, they fire no more (after what was already on its way).
            for rule_id in ("http-up", "http-down"):
                assert (await call(server, "DELETE", f"{RULES}/{rule_id}"))[0] == 204
            await client.queued(lambda m: False)
            # A second of the symbol's ticks (20 a second), each a chance for the rules to
            # fire had they stayed; then whatever the server still had for us.
            await client.request(
                {"type": "subscribe", "channel": "prices", "symbols": [SYMBOL]}, "subscribed"
            )
            late = await client.collect_until(
                lambda kept: sum(m["type"] == "price_update" for m in kept) >= 20,
                lambda m: m["type"] == "price_update" or is_http_alert(m),
            )
            late += await client.queued(is_http_alert)
            assert [m for m in late if is_http_alert(m)] == []


async def test_a_rule_added_over_http_survives_a_restart_of_the_alert_feed(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_gateway(nursery, tick_rate=20, api_key=KEY)
    engine = server.feeds.alerts.engine
    with trio.fail_after(TIMEOUT):
        async with connect(server, "watcher") as client:
            for channel in ("alerts", "notifications"):
                await client.request({"type": "subscribe", "channel": channel}, "subscribed")
            for rule in straddle(await current_price(client), "kept"):
                assert (await call(server, "POST", body=rule))[0] == 201

            # The feed's next evaluation raises, as a bug would: the supervisor logs it,
            # waits a second and runs the feed again.
            evaluate = engine.fire
            crashed = False

            def crash_once(symbol: str, quote: PriceData, now: float) -> list[Any]:
                nonlocal crashed
                if not crashed:
                    crashed = True
                    raise RuntimeError("injected crash")
                return evaluate(symbol, quote, now)

            monkeypatch.setattr(engine, "fire", crash_once)
            note = await client.next("notification")
            while "back up" not in note["data"]["message"]:
                assert "Feed alerts" in note["data"]["message"], note
                note = await client.next("notification")
            assert note["data"]["message"] == "Feed alerts is back up"

            assert server.feeds.alerts.engine is engine
            assert {"kept-up", "kept-down"} <= set(await rule_ids(server))
            # Fired after the restart: the rules were in the engine the restarted feed runs.
            assert (await next_alert_of(client, "kept-"))["data"]["symbol"] == SYMBOL
    assert crashed
