"""``GET /ws/stats`` over real HTTP: the spec's shape, per client id, a bounded page at a time."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from protocol import Codec
from realtime import Server
from realtime._outbox import Outbox, OutboxLimits
from realtime._stats import DEFAULT_LIMIT, MAX_LIMIT

from .helpers import TIMEOUT, connect, http_get, metric, start_gateway


async def stats(server: Server, query: str = "") -> dict[str, Any]:
    status, body = await http_get(server.port, f"/ws/stats{query}")
    assert status == 200, body
    decoded: dict[str, Any] = json.loads(body)
    return decoded


def register_idle(server: Server, client_ids: list[str]) -> None:
    """Clients registered with the hub without a socket or a subscription: as many as a
    test needs, at no cost (what ``/ws/stats`` lists is the hub's registry)."""
    for client_id in client_ids:
        server.hub.register(Outbox(client_id, Codec.JSON, OutboxLimits()))


async def test_the_spec_example(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    with trio.fail_after(TIMEOUT):
        async with (
            connect(server, "client-1") as one,
            connect(server, "client-2") as two,
            connect(server, "client-3"),
        ):
            await one.request(
                {"type": "subscribe", "channel": "prices", "symbols": ["MSFT", "AAPL"]},
                "subscribed",
            )
            await one.request({"type": "subscribe", "channel": "alerts"}, "subscribed")
            await two.request({"type": "subscribe", "channel": "signals"}, "subscribed")
            assert await stats(server) == {
                "total_connections": 3,
                "clients": ["client-1", "client-2", "client-3"],
                "channel_subscriptions": {
                    "client-1": ["prices", "alerts"],
                    "client-2": ["signals"],
                },
                "symbol_subscriptions": {"client-1": ["AAPL", "MSFT"]},
            }
            # Unsubscribing shows at once; a client holding nothing leaves both maps.
            await one.request({"type": "unsubscribe", "channel": "prices"}, "unsubscribed")
            await two.request({"type": "unsubscribe", "channel": "signals"}, "unsubscribed")
            body = await stats(server)
            assert body["channel_subscriptions"] == {"client-1": ["alerts"]}
            assert body["symbol_subscriptions"] == {}
        # Disconnected clients are gone.
        while server.hub.connection_count:
            await trio.sleep(0.01)
        assert await stats(server) == {
            "total_connections": 0,
            "clients": [],
            "channel_subscriptions": {},
            "symbol_subscriptions": {},
        }


async def test_every_symbol_is_a_star(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    with trio.fail_after(TIMEOUT):
        async with connect(server, "all") as client:
            await client.request({"type": "subscribe", "channel": "prices"}, "subscribed")
            body = await stats(server)
            assert body["channel_subscriptions"] == {"all": ["prices"]}
            assert body["symbol_subscriptions"] == {"all": ["*"]}
            # /metrics keeps the per-symbol totals: every symbol has this subscriber.
            assert await metric(server.port, 'realtime_symbol_subscribers{symbol="TSLA"}') == 1


async def test_pages_in_id_order_with_a_cursor(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    ids = ["b", "a-2", "c", "A", "a-10", "a-1", "Z9"]
    register_idle(server, ids)
    ordered = sorted(ids)  # code-point order: "A" < "Z9" < "a-1" < "a-10" < ...
    assert ordered == ["A", "Z9", "a-1", "a-10", "a-2", "b", "c"]
    with trio.fail_after(TIMEOUT):
        first = await stats(server, "?limit=3")
        assert first["clients"] == ordered[:3]
        assert (first["truncated"], first["next_after"]) == (True, "a-1")
        assert first["total_connections"] == 7
        second = await stats(server, f"?limit=3&after={first['next_after']}")
        assert second["clients"] == ordered[3:6]
        assert second["next_after"] == "b"
        last = await stats(server, "?limit=3&after=b")
        assert last["clients"] == ["c"]
        assert "truncated" not in last
        assert "next_after" not in last
        # The cursor need not be connected: the page starts after where it would sort.
        assert (await stats(server, "?after=a-11"))["clients"] == ["a-2", "b", "c"]
        # limit=0: the total alone.
        assert await stats(server, "?limit=0") == {
            "total_connections": 7,
            "clients": [],
            "channel_subscriptions": {},
            "symbol_subscriptions": {},
            "truncated": True,
        }
        # A client that leaves leaves the order too.
        outbox = server.hub.outboxes()[0]
        server.hub.unregister(outbox, [])
        assert outbox.client_id not in (await stats(server))["clients"]


async def test_default_and_largest_page(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    ids = [f"c{n:05d}" for n in range(MAX_LIMIT + 1)]
    register_idle(server, ids)
    with trio.fail_after(TIMEOUT * 3):
        body = await stats(server)
        assert body["total_connections"] == MAX_LIMIT + 1
        assert DEFAULT_LIMIT == 1000
        assert body["clients"] == ids[:DEFAULT_LIMIT]
        assert body["truncated"] is True
        body = await stats(server, f"?limit={MAX_LIMIT}")
        assert MAX_LIMIT == 10_000
        assert body["clients"] == ids[:MAX_LIMIT]
        assert body["next_after"] == ids[MAX_LIMIT - 1]
        body = await stats(server, f"?limit={MAX_LIMIT}&after={body['next_after']}")
        assert body["clients"] == ids[MAX_LIMIT:]
        assert "truncated" not in body


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("?limit=10001", "limit must be a whole number from 0 to 10000, got '10001'"),
        ("?limit=-1", "limit must be a whole number from 0 to 10000, got '-1'"),
        ("?limit=ten", "limit must be a whole number from 0 to 10000, got 'ten'"),
        ("?limit=", "limit must be a whole number from 0 to 10000, got ''"),
        ("?after=", "after must be a client id (1-64 characters of A-Z a-z 0-9 _ . : -), got ''"),
        ("?after=a%20b", "after must be a client id"),
        ("?page=2", "Unknown query parameter 'page': /ws/stats takes limit, after and scope"),
        ("?limit=1&limit=2", "Query parameter 'limit' given twice"),
        ("?limit=1&after=a&scope=node&x=1", "Unreadable query string: /ws/stats takes ?limit="),
        ("?scope=all", "scope must be node or cluster, got 'all'"),
        ("?limit", "Unreadable query string"),
        ("?after=%ff", "after must be a client id"),
    ],
)
async def test_a_bad_query_is_a_400_that_says_what_to_send(
    nursery: trio.Nursery, query: str, error: str
) -> None:
    server = await start_gateway(nursery, feeds=False)
    with trio.fail_after(TIMEOUT):
        status, body = await http_get(server.port, f"/ws/stats{query}")
    assert status == 400
    assert json.loads(body)["error"].startswith(error)
