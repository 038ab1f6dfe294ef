"""A resume that outruns its node: the session waits, bounded, for the hub to reach
its ``since``. The hub is a node's (fed with :meth:`Hub.deliver` as the Redis bus
feeds it), the sessions run over in-memory streams, and Trio's MockClock moves only
when the test says so: the bound is judged in virtual time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import orjson
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from protocol import AlertData, AlertTriggered, Severity
from realtime import Config
from realtime._delivery import Delivery
from realtime._hub import Hub
from realtime._sessions import Sessions
from realtime.ws import parse_request_head

from .test_hub import NOW
from .test_hub_deliver import numbered_note
from .test_sessions import Peer

WAIT = Config().resume_wait  # the bound under test, 2 s
NOTES = "notifications"


def numbered_alert(seq: int) -> AlertTriggered:
    data = AlertData(
        id=str(seq), symbol="AAPL", type="price_above", message="up", severity=Severity.INFO
    )
    return AlertTriggered(data=data, seq=seq, timestamp=NOW)


@attrs.define
class Node:
    """A node's hub and sessions, and a peer connected to them."""

    hub: Hub
    sessions: Sessions
    peer: Peer
    received: list[dict[str, object]] = attrs.Factory(list)

    def deliver(self, *seqs: int) -> None:
        for seq in seqs:
            self.hub.deliver(numbered_note(seq), at=trio.current_time())

    async def resume(self, since: int) -> None:
        await self.peer.send(
            {"type": "subscribe", "channel": NOTES, "since": since, "epoch": self.hub.epoch}
        )

    async def record(self) -> None:
        """Keep the messages the peer receives in ``received``, and at last its close."""
        while True:
            event = await self.peer.next_event()
            if isinstance(event, TextMessage):
                self.received.append(orjson.loads(event.data))
            elif isinstance(event, CloseConnection):
                self.received.append({"type": "close", "seq": event.code})
                return

    def kinds(self) -> list[tuple[object, object]]:
        return [(m["type"], m.get("seq")) for m in self.received]


@asynccontextmanager
async def open_node(resume_wait: float) -> AsyncIterator[Node]:
    """A node whose hub holds notifications 1 to 3, and a peer past its welcome that
    records what it receives."""
    config = Config(flush_delay=0)
    hub = Hub(universe=("AAPL",), clock=trio.current_time)
    delivery = Delivery(flush_delay=0, write_timeout=config.write_timeout)
    sessions = Sessions(config, hub, delivery, server_version="test", resume_wait=resume_wait)
    async with trio.open_nursery() as nursery:
        await nursery.start(delivery.run)
        ours, theirs = trio.testing.memory_stream_pair()
        client = WSConnection(ConnectionType.CLIENT)
        head = parse_request_head(client.send(Request(host="test", target="/ws/resumer")))
        nursery.start_soon(sessions.handle, ours, head)
        peer = Peer(theirs, client)
        assert isinstance(await peer.next_event(), AcceptConnection)
        assert (await peer.next_message())["type"] == "welcome"
        node = Node(hub, sessions, peer)
        node.deliver(1, 2, 3)
        nursery.start_soon(node.record)
        try:
            yield node
        finally:
            # The server's close waits, bounded, for the peer's close frame, which never
            # comes: let virtual time run out the bound.
            clock = trio.lowlevel.current_clock()
            assert isinstance(clock, trio.testing.MockClock)
            clock.autojump_threshold = 0
            nursery.cancel_scope.cancel()


async def test_a_resume_ahead_of_the_node_waits_for_it_then_replays(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with open_node(WAIT) as node:
        await node.resume(4)  # the client came from a node that had 4 already
        await node.peer.send({"type": "ping", "id": "after"})
        await trio.testing.wait_all_tasks_blocked()
        assert node.received == []  # neither answered: the ping waits its turn
        mock_clock.jump(WAIT / 2)
        node.deliver(4, 5)  # Redis reaches this node: 4, and 5 before the session runs
        await trio.testing.wait_all_tasks_blocked()
        node.deliver(6)  # live from now on
        await trio.testing.wait_all_tasks_blocked()
    assert node.kinds() == [
        ("subscribed", 4),
        ("notification", 5),  # the replay after 4
        ("pong", None),
        ("notification", 6),
    ]


async def test_past_the_bound_the_resume_is_refused_and_the_connection_goes_on(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with open_node(WAIT) as node:
        await node.resume(5)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(WAIT - 0.001)
        await trio.testing.wait_all_tasks_blocked()
        assert node.received == []  # within the bound: still waiting
        mock_clock.jump(0.001)
        await trio.testing.wait_all_tasks_blocked()
        assert [m["code"] for m in node.received] == ["history_unavailable"]
        assert node.received[0]["error"] == (
            "This server has not received seq 5 of 'notifications' yet (it is at 3; resumes "
            "wait at most 2 s for it): subscribe without 'since' and resync, or reconnect and "
            "resume again"
        )
        node.deliver(4, 5, 6)  # too late: the refused resume subscribed to nothing
        await node.peer.send({"type": "ping", "id": "still-open"})
        await trio.testing.wait_all_tasks_blocked()
    assert node.kinds()[1:] == [("pong", None)]


async def test_the_resumes_of_one_connection_share_the_bound(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with open_node(WAIT) as node:
        node.hub.deliver(numbered_alert(1), at=trio.current_time())
        await node.resume(5)
        await node.peer.send(
            {"type": "subscribe", "channel": "alerts", "since": 2, "epoch": node.hub.epoch}
        )
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(WAIT)  # a node that far behind: both refused by then, not later
        await trio.testing.wait_all_tasks_blocked()
        assert [m["code"] for m in node.received] == ["history_unavailable"] * 2
        mock_clock.jump(WAIT)  # a later resume has the whole bound again
        await node.resume(4)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(WAIT / 2)
        node.deliver(4)
        await trio.testing.wait_all_tasks_blocked()
    assert node.kinds()[2:] == [("subscribed", 4)]


async def test_a_close_during_the_wait_ends_it(mock_clock: trio.testing.MockClock) -> None:
    async with open_node(WAIT) as node:
        await node.resume(4)
        await trio.testing.wait_all_tasks_blocked()
        node.sessions.drain()  # 1001 to every connection, this one waiting
        await trio.testing.wait_all_tasks_blocked()
        assert node.hub.connection_count == 0
        node.deliver(4)  # nobody waits for it any more
        await trio.testing.wait_all_tasks_blocked()
    assert node.kinds() == [("close", 1001)]


async def test_a_resume_into_another_epoch_or_within_reach_does_not_wait(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with open_node(WAIT) as node:
        await node.peer.send(
            {"type": "subscribe", "channel": NOTES, "since": 9, "epoch": "old", "id": 1}
        )
        await node.resume(2)
        await trio.testing.wait_all_tasks_blocked()
    assert node.kinds() == [
        ("error", None),
        ("subscribed", 2),
        ("notification", 3),
    ]
    assert node.received[0]["code"] == "history_unavailable"


async def test_without_a_wait_a_resume_ahead_is_refused_at_once_as_on_one_process(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with open_node(0.0) as node:  # the in-process bus: the hub numbers everything
        await node.resume(4)
        await trio.testing.wait_all_tasks_blocked()
    assert [m["code"] for m in node.received] == ["history_unavailable"]
    assert node.received[0]["error"] == (
        "History of 'notifications' holds seq 1 to 3; cannot replay after 4: subscribe "
        "without 'since' and resync"
    )
