"""The alert rules of a cluster: ``/api/alert-rules`` on every node, the rules in
Redis, evaluated by the active ``realtime feed``; with real processes and a real
redis-server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs
import trio

from feeds import MAX_RULES, MAX_RULES_PER_USER, AlertRule
from realtime._cluster_rules import UNSEEDED, load, seed
from realtime._redis_bus import open_redis, rules_channel
from tests.realtime.helpers import http_requests
from tests.realtime.test_alert_rules_api import (
    current_price,
    is_http_alert,
    next_alert_of,
    straddle,
)

from .conftest import Cluster, Process
from .test_cluster import KEY, connect
from .test_feed_failover import TTL

TIMEOUT = 60.0  # a hang guard for processes on a busy machine; nothing is timed
RULES = "/api/alert-rules"
AUTH = [("authorization", f"Bearer {KEY}"), ("content-type", "application/json")]


async def call(
    node: Process, method: str, target: str = RULES, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, str], Any]:
    """One request with the API key: the status, headers and JSON body (None: none)."""
    raw = b"" if body is None else json.dumps(body).encode()
    ((status, headers, content),) = await http_requests(
        node.port, [(method, target, raw)], headers=AUTH
    )
    return status, headers, json.loads(content) if content else None


async def test_a_rule_added_through_one_node_fires_on_another_until_deleted_there(
    cluster: Cluster,
) -> None:
    with trio.fail_after(TIMEOUT):
        feed = await cluster.start_feed()
        node_a = await cluster.start_node("--api-key", KEY)
        node_b = await cluster.start_node("--api-key", KEY)
        async with connect(node_b, "watcher") as client:
            await client.request({"type": "subscribe", "channel": "alerts"}, "subscribed")
            for rule in straddle(await current_price(client), "http"):
                status, _, body = await call(node_a, "POST", body=rule)
                assert (status, body) == (201, {**rule, "hysteresis": 0.0})
            alert = (await next_alert_of(client, "http-"))["data"]
            assert alert["id"] in ("http-up-1", "http-down-1")
            # Both nodes list the same rules: the demo set the feed seeded, then these.
            _, _, listed_a = await call(node_a, "GET")
            _, _, listed_b = await call(node_b, "GET")
            assert listed_a == listed_b
            ids = [rule["id"] for rule in listed_b["rules"]]
            assert ids[-2:] == ["http-up", "http-down"]
            assert "aapl-above" in ids

            for rule_id in ("http-up", "http-down"):
                assert (await call(node_b, "DELETE", f"{RULES}/{rule_id}"))[0] == 204
            # A rule added after the deletes: the feed applies the changes in order, and
            # one task publishes its alerts in order, so once this one's alert is here
            # the deleted rules have fired their last.
            for rule in straddle(await current_price(client), "probe"):
                assert (await call(node_a, "POST", body=rule))[0] == 201
            await next_alert_of(client, "probe-")
            await client.request(
                {"type": "subscribe", "channel": "prices", "symbols": ["MSFT"]}, "subscribed"
            )
            # A second of the symbol's ticks, each a chance to fire had they stayed.
            late = await client.collect_until(
                lambda kept: sum(m["type"] == "price_update" for m in kept) >= 20,
                lambda m: m["type"] == "price_update" or is_http_alert(m),
            )
            late += await client.queued(is_http_alert)
    assert [m for m in late if is_http_alert(m)] == []
    assert re.search(r"Seeded the cluster's alert rules in Redis with \d+ rules", feed.text)
    assert "Alert rule http-up removed" in feed.text


def rule_file(path: Path, count: int) -> Path:
    path.write_text(
        "".join(
            f'[[rules]]\nid = "file-{n}"\nsymbol = "AAPL"\ntype = "price_above"\nthreshold = 1000\n'
            for n in range(count)
        )
    )
    return path


async def test_conflicts_and_limits_hold_across_nodes_even_when_they_race(
    cluster: Cluster, tmp_path: Path
) -> None:
    racers = 10
    # The file fills the set but for one user's rules and one more.
    seeded = MAX_RULES - MAX_RULES_PER_USER - 1
    first = MAX_RULES_PER_USER - racers // 2
    with trio.fail_after(TIMEOUT):
        await cluster.start_feed("--alerts", str(rule_file(tmp_path / "rules.toml", seeded)))
        node_a = await cluster.start_node("--api-key", KEY)
        node_b = await cluster.start_node("--api-key", KEY)

        def alice(n: int) -> dict[str, Any]:
            return {"id": f"a-{n}", "symbol": "AAPL", "type": "price_above", "threshold": 999}

        answers = await http_requests(
            node_a.port,
            [
                ("POST", RULES, json.dumps({**alice(n), "user": "alice"}).encode())
                for n in range(first)
            ],
            headers=AUTH,
        )
        assert {status for status, _, _ in answers} == {201}

        # Ten more of alice's at once, half through each node: her last five places go to
        # five of them, whichever Redis runs first.
        statuses: list[tuple[int, Any]] = []

        async def post(node: Process, n: int) -> None:
            status, _, body = await call(node, "POST", body={**alice(n), "user": "alice"})
            statuses.append((status, body))

        async with trio.open_nursery() as nursery:
            for n in range(first, first + racers):
                nursery.start_soon(post, (node_a, node_b)[n % 2], n)
        assert sorted(status for status, _ in statuses) == [201] * 5 + [409] * 5
        assert {json.dumps(body) for status, body in statuses if status == 409} == {
            json.dumps(
                {
                    "error": f"The user holds {MAX_RULES_PER_USER} alert rules, the most one "
                    "user may: delete one to add another",
                    "code": "too_many_rules",
                }
            )
        }
        _, _, hers = await call(node_b, "GET", f"{RULES}?user=alice")
        assert len(hers["rules"]) == MAX_RULES_PER_USER

        # Ids are per user, across nodes.
        taken = next(body for status, body in statuses if status == 201)
        status, _, body = await call(node_b, "POST", body=taken)
        assert (status, body["code"]) == (409, "conflict")
        assert body["error"] == (
            f"An alert rule with id {taken['id']!r} exists of user 'alice': delete it first "
            "to replace it"
        )
        assert (await call(node_a, "POST", body={**taken, "user": "bob"}))[0] == 201

        # The whole set: bob's was the last that fits.
        status, _, body = await call(node_a, "POST", body={**alice(0), "id": "one-more"})
        assert (status, body) == (
            409,
            {
                "error": f"The gateway holds {MAX_RULES} alert rules, the most it takes: "
                "delete one to add another",
                "code": "too_many_rules",
            },
        )
        assert (await call(node_b, "DELETE", f"{RULES}/file-0"))[0] == 204
        assert (await call(node_b, "DELETE", f"{RULES}/file-0"))[0] == 404
        assert (await call(node_a, "POST", body={**alice(0), "id": "one-more"}))[0] == 201
        _, _, every = await call(node_a, "GET")
    assert len(every["rules"]) == MAX_RULES


async def test_a_standby_that_takes_over_evaluates_the_rules_added_through_the_api(
    cluster: Cluster,
) -> None:
    with trio.fail_after(TIMEOUT):
        active = await cluster.start_feed(*TTL)
        standby = await cluster.start_feed(*TTL, until="Standing by")
        node = await cluster.start_node("--api-key", KEY)
        async with connect(node, "watcher") as client:
            await client.request({"type": "subscribe", "channel": "alerts"}, "subscribed")
            price = await current_price(client)
            active.process.kill()  # SIGKILL: from now on no feed but the standby fires
            for rule in straddle(price, "taken"):
                assert (await call(node, "POST", body=rule))[0] == 201
            await standby.logged("Active: feeding Redis")
            alert = (await next_alert_of(client, "taken-"))["data"]
    assert alert["id"] in ("taken-up-1", "taken-down-1")
    # Seeded once, by the first active feed; the standby loaded what Redis held.
    assert "Seeded the cluster's alert rules" in active.text
    assert "Seeded" not in standby.text
    assert re.search(r"Following the cluster's \d+ alert rules", standby.text)


async def test_a_node_changes_nothing_before_the_seed_or_without_redis(cluster: Cluster) -> None:
    rule = AlertRule(id="r1", symbol="AAPL", type="price_above", threshold=1)
    body = {"id": "r2", "symbol": "AAPL", "type": "price_above", "threshold": 1}
    url = cluster.redis.url
    with trio.fail_after(TIMEOUT):
        node = await cluster.start_node("--api-key", KEY)
        # No feed has seeded the rules: there is no rule set to show or change.
        for method, target in (("GET", RULES), ("POST", RULES), ("DELETE", f"{RULES}/r1")):
            status, headers, answer = await call(node, method, target, body)
            assert (status, answer) == (503, {"error": UNSEEDED, "code": "unavailable"})
            assert headers["retry-after"] == "2"

        # Seeded once: a second seed (a restart of the feed) writes nothing; a Redis that
        # lost its data is seeded again.
        channel = rules_channel(url)
        async with open_redis(url) as client:
            assert await seed(client, channel, [rule]) is True
            assert await seed(client, channel, [attrs.evolve(rule, id="other")]) is False
            assert (await call(node, "POST", body=body))[0] == 201
            assert [r.id for r in (await load(client) or (0, []))[1]] == ["r1", "r2"]
            await client.flushall()
            assert await load(client) is None
            assert await seed(client, channel, [rule]) is True
        _, _, listed = await call(node, "GET")
        assert [r["id"] for r in listed["rules"]] == ["r1"]

        # Redis away: refused at once, nothing sent.
        await trio.to_thread.run_sync(cluster.redis.stop)
        while True:
            status, headers, refused = await call(node, "POST", body=body)
            # Until the node notices, the call itself fails: perhaps made, it says.
            assert status == 503
            if refused["code"] == "unavailable":
                break
            assert refused["code"] == "unconfirmed"
            assert "may or may not have been added" in refused["error"]
            await trio.sleep(0.05)
    assert refused["error"].startswith("This node has lost its connection to Redis")
    assert headers["retry-after"] == "2"
