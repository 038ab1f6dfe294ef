"""A recovery storm across a cluster: three real nodes on one real Redis, a steady
publisher, and clients that are cut again and again (closing themselves, kicked by
``POST /api/disconnect``, taken over by their own newer connection on another node)
and resume each time on another node with ``since`` and ``epoch``; one node is
SIGKILLed half-way. Every client must end with every message of every channel it
follows exactly once, in order.

Raw WebSocket clients, not the Python client: it drops what it has already seen, and
so would hide a duplicate sent by the gateway, which is what this test looks for.
Nothing here is timed: the random pauses only shuffle when things happen (seeded per
client), the one bound (a connect's) only ends a connect to the node that died, and
the verdict is on what each client received.
"""

from __future__ import annotations

import json
import os
import random
import signal
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import attrs
import h11
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from protocol import Channel, NotificationData, NotificationType
from tests.realtime.helpers import close_of, http_requests

from .conftest import Cluster, Process
from .test_cluster import KEY
from .test_cluster_faults import alert
from .test_redis_bus import publisher

TIMEOUT = 90.0  # a hang guard for processes on a busy machine; nothing is timed
CLIENTS = 40
#: Messages published on each channel; the history window (1,000) holds them all.
MESSAGES = 200
#: Pause between two publishes (each channel in turn): a steady stream.
PUBLISH_PAUSE = 0.01
#: Longest stay on one connection before the next cut (uniformly random below it).
DWELL = 0.4
#: Seconds a connect may take before the client tries another node: a live node
#: answers within milliseconds; this only ends a connect to a node that died.
CONNECT_TIMEOUT = 5.0
CHANNELS = {"alerts": "alert_triggered", "notifications": "notification"}
#: How a client is cut: it closes, the node kicks it (4403), or its own newer
#: connection on another node takes its client id over (4409).
CUTS = ("close", "kick", "takeover")


@attrs.define
class Nodes:
    """The nodes, and which of them are still alive."""

    all: list[Process]
    killed: set[int] = attrs.Factory(set)

    def other_than(self, node: Process | None, rng: random.Random) -> Process:
        live = [each for each in self.all if each.port not in self.killed and each is not node]
        return rng.choice(live)


class Lost(Exception):
    """The connection ended (closed by the node, or the node died)."""


@attrs.define
class StormClient:
    """One client hopping across the nodes; what it received, per channel."""

    client_id: str
    seqs: dict[str, list[int]] = attrs.Factory(lambda: {channel: [] for channel in CHANNELS})
    positions: dict[str, int] = attrs.Factory(dict)
    epoch: str = ""
    errors: list[dict[str, Any]] = attrs.Factory(list)
    cuts: dict[str, int] = attrs.Factory(lambda: dict.fromkeys(CUTS, 0))
    closes: list[int] = attrs.Factory(list)
    #: Its connections not closed yet.
    connections: list[WebSocketConnection] = attrs.Factory(list)
    #: What it is doing, for the report of a test that hangs.
    doing: str = "starting"

    def record(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "error":
            self.errors.append(message)
        for channel, event in CHANNELS.items():
            if kind == event and message["seq"]:  # seq 0: a node's own notice
                self.seqs[channel].append(message["seq"])
                self.positions[channel] = message["seq"]
        if kind == "subscribed":
            self.positions.setdefault(message["channel"], message["seq"])

    def received(self) -> int:
        return sum(map(len, self.seqs.values()))

    def caught_up(self, last: int) -> bool:
        return all(seqs[-1:] == [last] for seqs in self.seqs.values())

    async def open(self, nursery: trio.Nursery, node: Process) -> WebSocketConnection:
        """A connection to ``node`` past its welcome, living in ``nursery``: several
        connections of one client may overlap, and end in any order. Raises
        ``trio.TooSlowError`` after ``CONNECT_TIMEOUT``: trio-websocket waits for ever
        for the handshake of a node that dies during it."""
        stream = await trio.open_tcp_stream("127.0.0.1", node.port)
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                ws = await wrap_client_stream(nursery, stream, "127.0.0.1", f"/ws/{self.client_id}")
                welcome = json.loads(await ws.get_message())
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        self.connections.append(ws)
        assert welcome["type"] == "welcome", welcome
        assert self.epoch in ("", welcome["epoch"]), welcome  # one epoch throughout
        self.epoch = welcome["epoch"]
        return ws

    async def close(self, ws: WebSocketConnection) -> None:
        """Close ``ws`` (if still open) and its socket: trio-websocket 0.12 leaks the
        socket when the server closed first (see ``open_ws``)."""
        if ws in self.connections:
            self.connections.remove(ws)
        await ws.aclose()
        await trio.aclose_forcefully(ws._stream)

    async def subscribe(self, ws: WebSocketConnection) -> None:
        """Subscribe to every channel, resuming from the positions held."""
        for channel in CHANNELS:
            request: dict[str, Any] = {"type": "subscribe", "channel": channel}
            if channel in self.positions:
                request |= {"since": self.positions[channel], "epoch": self.epoch}
            await ws.send_message(json.dumps(request))

    async def read(self, ws: WebSocketConnection, done: Callable[[], bool] = lambda: False) -> None:
        """Record until ``done()`` or cancelled; raises :exc:`Lost` when the connection
        ends first."""
        try:
            while not done():
                self.record(json.loads(await ws.get_message()))
        except ConnectionClosed as closed:
            self.closes.append(close_of(closed)[0])
            raise Lost from None

    async def run(self, nodes: Nodes, published: trio.Event, last: int) -> None:
        """Hop until the publisher is done, then read until every message came."""
        rng = random.Random(self.client_id)
        node: Process | None = None
        ws: WebSocketConnection | None = None
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    if ws is None:
                        node = nodes.other_than(node, rng)
                        self.doing = f"connecting to {node.port}"
                        ws = await self.open(nursery, node)
                        await self.subscribe(ws)
                    assert node is not None
                    while not published.is_set():
                        with trio.move_on_after(rng.uniform(0, DWELL)):
                            await self.read(ws)
                        if not published.is_set():
                            cut = rng.choice(CUTS)
                            self.cuts[cut] += 1
                            ws, node = await self.cut(cut, nursery, ws, node, nodes, rng)
                    self.doing = f"catching up on {node.port}"
                    await self.read(ws, lambda: self.caught_up(last))
                    self.doing = f"closing on {node.port}"
                    await self.close(ws)
                    self.doing = "done"
                    return
                except (Lost, ConnectionClosed):
                    pass  # cut by the node, or the node died: resume on another
                except (HandshakeError, OSError, trio.TooSlowError):
                    pass  # the node died before or during the connect
                for each in list(self.connections):
                    await self.close(each)
                ws = None

    async def cut(
        self,
        cut: str,
        nursery: trio.Nursery,
        ws: WebSocketConnection,
        node: Process,
        nodes: Nodes,
        rng: random.Random,
    ) -> tuple[WebSocketConnection, Process]:
        """Cut the connection to ``node`` as ``cut`` says, and resume on another node;
        the new connection and its node. Raises :exc:`Lost` when the connection ended
        some other way first."""
        other = nodes.other_than(node, rng)
        self.doing = f"{cut} from {node.port} to {other.port}"
        if cut == "kick":
            body = json.dumps({"client_id": self.client_id}).encode()
            try:
                ((status, _, answer),) = await http_requests(
                    node.port,
                    [("POST", "/api/disconnect", body)],
                    headers=[
                        ("Authorization", f"Bearer {KEY}"),
                        ("Content-Type", "application/json"),
                    ],
                )
            except (OSError, trio.BrokenResourceError, h11.RemoteProtocolError):
                raise Lost from None  # the node died
            # On every node, through Redis: a 503 says some node (the killed one, until
            # it counts as gone) did not answer, and lists the closes confirmed too.
            assert json.loads(answer)["disconnected"] == [self.client_id], (status, answer)
            await self.until_closed(ws)
            newer = await self.open(nursery, other)
        else:
            # Connected before the cut, so that the resume follows the last message at
            # once: the client races the new node's copy of the stream. The newer
            # connection takes the client id over, and the older one gets 4409 once
            # its node hears of it through Redis...
            newer = await self.open(nursery, other)
            if cut == "close":
                # ...unless the client cuts it first, right after its next message.
                received = self.received()
                with suppress(Lost):
                    await self.read(ws, lambda: self.received() > received)
            else:
                await self.until_closed(ws)
        await self.close(ws)
        await self.subscribe(newer)
        return newer, other

    async def until_closed(self, ws: WebSocketConnection) -> None:
        with suppress(Lost):
            await self.read(ws)


async def test_clients_hopping_and_kicked_across_nodes_get_every_message_once(
    cluster: Cluster,
) -> None:
    redis = cluster.redis
    with trio.move_on_after(TIMEOUT) as hang_guard:
        nodes = Nodes([await cluster.start_node("--api-key", KEY) for _ in range(3)])
        victim = nodes.all[2]
        clients = [StormClient(f"storm-{index}") for index in range(CLIENTS)]
        published = trio.Event()
        async with trio.open_nursery() as nursery, publisher(redis.url) as (feed, _):
            for client in clients:
                nursery.start_soon(client.run, nodes, published, MESSAGES)
            # Every client holds its first position before the first message.
            while not all(len(client.positions) == len(CHANNELS) for client in clients):
                await trio.sleep(0.02)
            for number in range(1, MESSAGES + 1):
                await feed.publish(Channel.ALERTS, alert(number))
                await trio.sleep(PUBLISH_PAUSE)
                await feed.publish(Channel.NOTIFICATIONS, note(number))
                await trio.sleep(PUBLISH_PAUSE)
                if number == MESSAGES // 2:
                    nodes.killed.add(victim.port)
                    os.kill(victim.process.pid, signal.SIGKILL)
            published.set()
    assert not hang_guard.cancelled_caught, report(
        [client for client in clients if client.doing != "done"], nodes, victim
    )
    for client in clients:
        assert not client.errors, (client.client_id, client.errors)
        for channel, seqs in client.seqs.items():
            # Every message once, in order: nothing lost, nothing twice.
            assert seqs == list(range(1, MESSAGES + 1)), (client.client_id, channel, seqs)
    cuts = {cut: sum(client.cuts[cut] for client in clients) for cut in CUTS}
    assert all(cuts.values()), cuts  # every kind of cut happened
    closes = [code for client in clients for code in client.closes]
    assert {4403, 4409, 1006} <= set(closes), sorted(set(closes))


def report(stuck: list[StormClient], nodes: Nodes, victim: Process) -> str:
    """What the clients that never caught up were doing, and what the nodes logged
    of them."""
    lines = [f"killed: {victim.port}"]
    for client in stuck:
        tails = {channel: seqs[-3:] for channel, seqs in client.seqs.items()}
        lines.append(f"{client.client_id}: {client.doing}, {tails}, closes {client.closes[-5:]}")
        for node in nodes.all:
            logged = [line for line in node.text.splitlines() if f" {client.client_id} " in line]
            lines += [f"  {node.port}: {line}" for line in logged[-6:]]
    return "\n".join(lines)


def note(number: int) -> NotificationData:
    return NotificationData(id=f"n{number}", message=f"note {number}", type=NotificationType.INFO)
