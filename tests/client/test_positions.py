"""Resuming from the subscription's position: the Python client against the gateway
as a process (``realtime serve``), killed and restarted, over real sockets.

Before positions, a client subscribed to a channel on which nothing had arrived had
no position to resume from, so an event published while it was away was lost without
a word, whether the gateway had restarted (no ``HistoryGap``) or not (no replay).
``subscribed`` now carries the channel's position, and the client resumes from it.

Between the client and the gateway sits a :class:`Gate`, a TCP relay the test shuts
and opens, so that "published before the client is back" is an order the test sets,
not a race it hopes to win.
"""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from protocol import AlertTriggered, Channel, CloseCode, EventMessage
from realtime.client import Backoff, Disconnected, HistoryGap, Item, Reconnected, open_client

from ..realtime.helpers import drain_log, http_requests, start_process
from .test_client import free_port, next_of

TIMEOUT = 30.0  # a hang guard for two process starts on a busy machine; nothing is timed
KEY = "test-key-0123456789abcdef"
FAST = Backoff(initial=0.05, max_delay=0.2, max_attempts=20, reset_after=5.0)
EVENT_CHANNELS = (Channel.ALERTS, Channel.SIGNALS, Channel.PORTFOLIO, Channel.NOTIFICATIONS)


class Gate:
    """A TCP relay between clients and the gateway's port that the test shuts and opens.

    A connection accepted while the gate is shut waits, connected but unanswered,
    until it opens; then it is relayed to the gateway, or closed if nothing listens
    there. :meth:`cut` drops every relayed connection at once, as a broken network
    does: neither side gets a close frame.
    """

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self._opened = trio.Event()
        self._opened.set()
        self._relays: set[trio.CancelScope] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._relay, listeners)

    def shut(self) -> None:
        if self._opened.is_set():
            self._opened = trio.Event()

    def open(self) -> None:
        self._opened.set()

    def cut(self) -> None:
        for relay in self._relays:
            relay.cancel()

    async def _relay(self, client: trio.SocketStream) -> None:
        # serve_listeners closes ``client`` when this returns.
        with trio.CancelScope() as relay:
            self._relays.add(relay)
            try:
                await self._opened.wait()
                try:
                    upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream)
                except OSError:
                    return  # nothing listens: the client sees its connection closed
                async with upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(_pipe, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(_pipe, upstream, client, nursery.cancel_scope)
            finally:
                self._relays.discard(relay)


async def _pipe(source: trio.SocketStream, sink: trio.SocketStream, pair: trio.CancelScope) -> None:
    """Copy until either side ends, then end the pair: a dead peer is passed on."""
    try:
        async for chunk in source:
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # reset or closed: the end of this connection, as EOF is
    finally:
        pair.cancel()


@asynccontextmanager
async def gateway_process(port: int) -> AsyncIterator[trio.Process]:
    """``realtime serve`` on ``port`` without feeds (every event is the test's) and
    with the publish API's key. SIGKILL it to crash it; at the end it is stopped."""
    process, _, log = await start_process(
        "--feeds", "false", port=port, env={"REALTIME_API_KEY": KEY}
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain_log, process, log)  # ends when the process does
        try:
            yield process
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            await process.wait()


async def publish_alert(port: int, alert_id: str) -> None:
    """``POST /api/publish`` an alert: answered 202 once it is in history and offered
    to every subscriber."""
    data = {
        "id": alert_id,
        "symbol": "AAPL",
        "type": "price_above",
        "message": f"alert {alert_id}",
        "severity": "warning",
    }
    body = json.dumps({"channel": "alerts", "data": data}).encode()
    ((status, _, content),) = await http_requests(
        port, [("POST", "/api/publish", body)], headers=[("Authorization", f"Bearer {KEY}")]
    )
    assert status == 202, content


async def items_until_alert(client: AsyncIterator[Item]) -> tuple[list[Any], AlertTriggered]:
    """Every item up to the next alert, and the alert."""
    before: list[Any] = []
    async for item in client:
        if isinstance(item, AlertTriggered):
            return before, item
        before.append(item)
    raise AssertionError(f"iteration ended before an alert, after {before}")


async def test_a_restart_while_away_is_reported_on_every_channel_even_with_nothing_received() -> (
    None
):
    port = free_port()
    gate = Gate(port)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(gate.run)
            async with (
                gateway_process(port) as first,
                open_client(f"ws://127.0.0.1:{gate.port}", "watcher", backoff=FAST) as client,
            ):
                assert client.welcome is not None
                old_epoch = client.welcome.epoch
                for channel in EVENT_CHANNELS:
                    ack = await client.subscribe(channel)
                    assert ack.seq == 0  # nothing published yet, and still a position
                assert (await client.subscribe(Channel.PRICES, ["AAPL"])).seq is None
                assert client.statistics().buffered == 0  # nothing has arrived

                gate.shut()  # the client stays away until the alert is published
                first.send_signal(signal.SIGKILL)
                await first.wait()
                gone = await next_of(client, Disconnected)
                assert gone.code == CloseCode.ABNORMAL_CLOSURE

                async with gateway_process(port):  # the same port, a new history
                    await publish_alert(port, "while-away")
                    gate.open()
                    back = await next_of(client, Reconnected)
                    assert back.welcome.epoch != old_epoch
                    gaps: set[tuple[Channel, int, str]] = set()
                    while len(gaps) < len(EVENT_CHANNELS):
                        item = await client.receive()
                        assert not isinstance(item, EventMessage), item  # no partial replay
                        if isinstance(item, HistoryGap):
                            gaps.add((item.channel, item.since, item.epoch))
                    assert gaps == {(channel, 0, old_epoch) for channel in EVENT_CHANNELS}

                    # Resubscribed in the new history, from its position there: the alert
                    # the gap stands for is not delivered late; the next one is.
                    ack = await client.subscribe(Channel.ALERTS)
                    assert ack.seq == 1
                    await publish_alert(port, "after")
                    before, alert = await items_until_alert(client)
                    assert (alert.data.id, alert.seq) == ("after", 2)
                    assert not [i for i in before if isinstance(i, HistoryGap)]
                    await client.aclose()  # before its gateway goes: no reconnecting
            nursery.cancel_scope.cancel()


async def test_a_cut_connection_replays_what_it_missed_exactly_once_with_nothing_received() -> None:
    port = free_port()
    gate = Gate(port)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(gate.run)
            async with (
                gateway_process(port),
                open_client(f"ws://127.0.0.1:{gate.port}", "watcher", backoff=FAST) as client,
            ):
                assert client.welcome is not None
                epoch = client.welcome.epoch
                assert (await client.subscribe(Channel.ALERTS)).seq == 0
                assert client.statistics().buffered == 0  # nothing has arrived

                gate.shut()
                gate.cut()  # the network drops the connection: no close frame either way
                gone = await next_of(client, Disconnected)
                assert gone.code == CloseCode.ABNORMAL_CLOSURE
                await publish_alert(port, "while-away")
                gate.open()

                before, alert = await items_until_alert(client)
                assert [type(i) for i in before if not isinstance(i, Disconnected)] == [Reconnected]
                assert before[-1].welcome.epoch == epoch  # the same gateway, the same history
                assert (alert.data.id, alert.seq) == ("while-away", 1)
                # Once: the next alert is the next one published, not the replay again.
                await publish_alert(port, "after")
                before, alert = await items_until_alert(client)
                assert before == []
                assert (alert.data.id, alert.seq) == ("after", 2)
                await client.aclose()
            nursery.cancel_scope.cancel()
