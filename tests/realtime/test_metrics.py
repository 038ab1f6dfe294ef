"""``/metrics`` on the real gateway: build info, connections opened, closes by code and
by who decided them, and the publish-to-write histogram."""

from __future__ import annotations

import platform
import re

import pytest
import trio
from trio_websocket import ConnectionClosed

from realtime import __version__
from realtime._latency import LatencyHistogram

from .helpers import TIMEOUT, close_of, connect, http_get, metric, open_ws, start_gateway, ws_url


async def _metrics(port: int) -> str:
    status, body = await http_get(port, "/metrics")
    assert status == 200
    return body.decode()


def _closes(code: str, by: str) -> str:
    # prometheus-client writes labels in name order.
    return f'realtime_connection_closes_total{{by="{by}",code="{code}"}}'


async def test_build_info_names_the_version_python_and_trio(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    with trio.fail_after(TIMEOUT):
        python, version = platform.python_version(), __version__
        labels = f'python="{python}",trio="{trio.__version__}",version="{version}"'
        assert await metric(server.port, f"realtime_build_info{{{labels}}}") == 1


async def test_opened_and_closes_by_code_and_by_whom(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False)
    with trio.fail_after(TIMEOUT):
        text = await _metrics(server.port)
        # Every close the server can decide is there from the start; no old per-code
        # counters beside them.
        assert f"{_closes('4499', 'server')} 0.0" in text
        assert f"{_closes('1011', 'server')} 0.0" in text
        assert "realtime_slow_consumer_closes" not in text
        assert "realtime_replaced_connections" not in text
        assert "realtime_heartbeat_timeouts" not in text
        async with connect(server, "plain"):
            pass  # the client closes with 1000
        async with open_ws(ws_url(server, "odd")) as ws:
            await ws.get_message()  # the welcome
            await ws.aclose(3123, "a code of its own")
        with pytest.raises(ConnectionClosed) as replaced:
            async with connect(server, "twin") as first, connect(server, "twin"):
                await first.receive()
        assert close_of(replaced.value)[0] == 4409
        # Counted once each close has finished: the 4409's may still be in flight.
        while await metric(server.port, _closes("4409", "server")) < 1:
            await trio.sleep(0.01)
        assert await metric(server.port, "realtime_connections_opened_total") == 4
        assert await metric(server.port, _closes("1000", "client")) >= 1
        assert await metric(server.port, _closes("other", "client")) == 1
        assert "3123" not in await _metrics(server.port)


async def test_the_publish_to_write_histogram_counts_flushes(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, tick_rate=50.0)
    with trio.fail_after(TIMEOUT):
        async with connect(server, "watcher") as client:
            await client.request({"type": "subscribe", "channel": "prices"}, "subscribed")
            # A tick's prices are one burst, one flush: one observation each.
            while await metric(server.port, "realtime_publish_to_write_seconds_count") < 3:
                await client.next("price_update")
        text = await _metrics(server.port)  # one scrape: the feed goes on meanwhile
    buckets = [
        float(value)
        for value in re.findall(
            r'^realtime_publish_to_write_seconds_bucket\{le="[^"]+"\} (\S+)$', text, re.MULTILINE
        )
    ]
    count = re.search(r"^realtime_publish_to_write_seconds_count (\S+)$", text, re.MULTILINE)
    assert count is not None
    assert buckets == sorted(buckets)  # cumulative
    assert buckets[-1] == float(count[1]) >= 3  # +Inf holds every observation


def test_the_histogram_counts_a_value_on_a_bound_in_that_bucket() -> None:
    histogram = LatencyHistogram((0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.002, 5.0):
        histogram.observe(seconds)
    assert histogram.cumulative() == [("0.001", 2), ("0.01", 3), ("+Inf", 4)]
    assert histogram.total == pytest.approx(5.0035)
