"""``/livez`` and ``/readyz`` on the real gateway: what flips readiness, and what does not.

The Redis side (a node whose Redis stops) is in tests/cluster/test_readiness.py.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import pytest
import trio

from feeds import Publisher, SignalFeed
from realtime import Server

from .helpers import TIMEOUT, connect, http_get, http_requests, start_gateway

SECRET = "s" * 32


async def _probe(server: Server, path: str) -> tuple[int, dict[str, Any]]:
    status, body = await http_get(server.port, path)
    decoded: dict[str, Any] = json.loads(body)
    return status, decoded


async def test_a_running_gateway_is_alive_and_ready(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        assert await _probe(server, "/livez") == (200, {"status": "alive"})
        assert await _probe(server, "/readyz") == (
            200,
            {"status": "ready", "checks": {"draining": "ok", "bus": "ok", "feeds": "ok"}},
        )


async def test_a_drain_makes_it_unready_but_still_alive(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    with trio.fail_after(TIMEOUT):
        async with connect(server, "watcher"):
            # What a drain does first; the listener stays open until the connections
            # are gone, which Server.shutdown would then wait for.
            server.sessions.drain()
            status, body = await _probe(server, "/readyz")
            assert status == 503
            assert body == {
                "status": "not ready",
                "checks": {
                    "draining": "the gateway is shutting down",
                    "bus": "ok",
                    "feeds": "ok",
                },
                "failed": ["draining"],
            }
            assert await _probe(server, "/livez") == (200, {"status": "alive"})
            status, body = await _probe(server, "/health")  # the spec's shape, as it was
            assert (status, body["status"]) == (503, "draining")


async def _fails(self: SignalFeed, publisher: Publisher) -> NoReturn:
    raise RuntimeError("the model is gone")


async def test_a_feed_that_is_down_makes_it_unready(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SignalFeed, "run", _fails)
    server = await start_gateway(nursery)
    with trio.fail_after(TIMEOUT):
        # Down from its first failure on: each restart fails before any other task runs.
        while (probe := await _probe(server, "/readyz"))[0] != 503:
            await trio.sleep(0.01)
    body = probe[1]
    assert body["failed"] == ["feeds"]
    assert body["checks"]["feeds"] == "signals failed: RuntimeError: the model is gone"
    assert body["checks"]["bus"] == "ok"


async def test_the_probes_need_no_credentials_with_authentication_on(
    nursery: trio.Nursery,
) -> None:
    server = await start_gateway(nursery, feeds=False, jwt_secret=SECRET)
    with trio.fail_after(TIMEOUT):
        assert (await _probe(server, "/livez"))[0] == 200
        assert (await _probe(server, "/readyz"))[0] == 200


async def test_the_probes_answer_get_and_head_only(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    with trio.fail_after(TIMEOUT):
        ((status, headers, _),) = await http_requests(server.port, [("POST", "/readyz", b"")])
        assert (status, headers["allow"]) == (405, "GET, HEAD")
        ((status, _, body),) = await http_requests(server.port, [("HEAD", "/livez", b"")])
        assert (status, body) == (200, b"")
