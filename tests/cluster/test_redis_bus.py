"""The Redis bus against a real redis-server: numbering, history, catch-up and epochs.

Nodes here are a hub and its :class:`RedisBus` in the test's own Trio run; the
process-level tests (``test_cluster``) run real gateways.
"""

from __future__ import annotations

import typing
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import coredis
import orjson
import pytest
import trio
import trustme

from protocol import (
    ALL_SYMBOLS,
    Change,
    Channel,
    CloseCode,
    Codec,
    ErrorCode,
    NotificationData,
    NotificationType,
    PriceData,
    RemoteProtocolError,
)
from realtime._config import Config
from realtime._hub import Hub
from realtime._outbox import Outbox, OutboxLimits
from realtime._redis_bus import (
    EPOCH_KEY,
    KEYS,
    PRICES_KEY,
    SEQ_KEY,
    RedisBus,
    RedisPublisher,
    address,
    events_channel,
    open_redis,
    parse_address,
    redacted,
)

from .redis_server import RedisServer

TIMEOUT = 10.0
UNIVERSE = ("AAPL", "MSFT")
NOTES_KEY = KEYS[
    3 + list(c for c in Channel if c is not Channel.PRICES).index(Channel.NOTIFICATIONS)
]


def note(number: int) -> NotificationData:
    return NotificationData(id=str(number), message=f"note {number}", type=NotificationType.INFO)


def quote(value: float) -> PriceData:
    return PriceData(
        price=value, change=0, change_pct=0, volume=1, bid=value - 0.01, ask=value + 0.01
    )


class Node:
    """A hub following Redis, with one outbox subscribed to every channel. Its client id
    is held once in the cluster: nodes of one test need ids of their own."""

    def __init__(self, hub: Hub, bus: RedisBus, client_id: str = "watcher") -> None:
        self.hub = hub
        self.bus = bus
        self.outbox = Outbox(client_id, Codec.JSON, OutboxLimits(max_messages=10_000))
        hub.register(self.outbox)
        for channel in Channel:
            hub.apply(self.outbox, Change(channel, frozenset(), ALL_SYMBOLS))
        self.received: list[dict[str, Any]] = []

    def messages(self) -> list[dict[str, Any]]:
        """Every event offered so far, in order (prices by their conflated slot)."""
        for frame in self.outbox.take():
            length = frame[1] & 0x7F
            start = 2 if length < 126 else 4 if length == 126 else 10
            self.received.append(orjson.loads(frame[start:]))
        return self.received

    async def wait_for(self, done: Callable[[list[dict[str, Any]]], bool]) -> None:
        while not done(self.messages()):
            await trio.sleep(0.01)

    def seqs(self, kind: str) -> list[int]:
        return [m["seq"] for m in self.messages() if m["type"] == kind]


@pytest.fixture
def start_node(nursery: trio.Nursery) -> Callable[..., Any]:
    async def start(url: str, *, history_messages: int = 1000, client_id: str = "watcher") -> Node:
        hub = Hub(universe=UNIVERSE, clock=trio.current_time, history_messages=history_messages)
        bus = RedisBus(url, history_messages=history_messages, history_seconds=600)
        bus.attach(hub)
        node = Node(hub, bus, client_id)
        await nursery.start(bus.run)
        return node

    return start


@asynccontextmanager
async def publisher(
    url: str, *, events: str | None = None, history_messages: int = 1000
) -> AsyncIterator[tuple[RedisPublisher, coredis.Redis[bytes]]]:
    """A publisher as the feed has one, and its client for inspecting Redis.
    ``events`` another pub/sub channel: what it publishes no node hears."""
    async with open_redis(url) as client:
        yield (
            RedisPublisher(
                client,
                events=events or events_channel(url),
                history_messages=history_messages,
                history_seconds=600,
            ),
            client,
        )


async def test_one_script_call_numbers_keeps_and_announces(
    redis_server: RedisServer, start_node: Callable[..., Any]
) -> None:
    with trio.fail_after(TIMEOUT):
        node = await start_node(redis_server.url)
        async with publisher(redis_server.url) as (bus, client):
            for number in (1, 2, 3):
                await bus.publish(Channel.NOTIFICATIONS, note(number))
            await bus.publish(Channel.PRICES, quote(10), symbol="AAPL")
            await bus.publish(Channel.PRICES, quote(11), symbol="AAPL")
            await bus.publish(Channel.PRICES, quote(20), symbol="MSFT")
            await node.wait_for(lambda m: len(m) == 5)  # AAPL conflated in the outbox

            epoch = await client.get(EPOCH_KEY)
            assert epoch is not None
            assert node.hub.epoch == epoch.decode()
            assert await client.hgetall(SEQ_KEY) == {
                b"notifications": b"3",
                b"AAPL": b"2",
                b"MSFT": b"1",
            }
            history = await client.lrange(NOTES_KEY, 0, -1)
            assert [entry.split(b" ", 1)[0] for entry in history] == [b"1", b"2", b"3"]
            last_aapl = (await client.hgetall(PRICES_KEY))[b"AAPL"]
            assert last_aapl.startswith(b"2 ")
        assert node.seqs("notification") == [1, 2, 3]
        assert [m["data"]["id"] for m in node.messages() if m["type"] == "notification"] == [
            "1",
            "2",
            "3",
        ]
        last = node.hub.last_price("AAPL")
        assert last is not None
        assert (last.seq, last.data.price) == (2, 11)


async def test_a_batch_is_numbered_contiguously_kept_and_announced_in_one_message(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    with trio.fail_after(TIMEOUT):
        async with (
            publisher(url) as (first, client),
            publisher(url) as (second, _),
            client.pubsub(channels=[events_channel(url)], ignore_subscribe_messages=True) as heard,
        ):
            batch = [
                first.prepare(Channel.NOTIFICATIONS, note(1)),
                first.prepare(Channel.PRICES, quote(10), symbol="AAPL"),
                first.prepare(Channel.NOTIFICATIONS, note(2)),
                first.prepare(Channel.PRICES, quote(11), symbol="AAPL"),
            ]
            assert await first.send(batch) == [1, 1, 2, 2]
            async for message in heard:
                lines = typing.cast(bytes, message["data"]).split(b"\n")
                break
            # One message, one line per event in order, each a published event.
            assert [line.split(b" ", 3)[1:3] for line in lines] == [
                [b"notifications", b"1"],
                [b"AAPL", b"1"],
                [b"notifications", b"2"],
                [b"AAPL", b"2"],
            ]
            assert (await client.hgetall(PRICES_KEY))[b"AAPL"].startswith(b"2 ")

            # Two publishers' batches never interleave: each is one atomic step.
            seqs: list[list[int]] = []

            async def send_batches(bus: RedisPublisher) -> None:
                for _ in range(20):
                    events = [bus.prepare(Channel.NOTIFICATIONS, note(n)) for n in range(10)]
                    seqs.append(await bus.send(events))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_batches, first)
                nursery.start_soon(send_batches, second)
            assert all(batch == list(range(batch[0], batch[0] + 10)) for batch in seqs)
            assert sorted(seq for batch in seqs for seq in batch) == list(range(3, 403))
            history = await client.lrange(NOTES_KEY, 0, -1)
            assert [int(entry.split(b" ", 1)[0]) for entry in history] == list(range(1, 403))


async def test_an_empty_batch_is_refused_before_redis_is_asked(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    with trio.fail_after(TIMEOUT):
        async with publisher(url) as (bus, client):
            with pytest.raises(ValueError, match="at least one event"):
                await bus.send([])
            # Nothing was numbered: no epoch was even made.
            assert await client.get(EPOCH_KEY) is None


async def test_no_event_holds_a_newline_which_separates_the_events_of_a_message(
    redis_server: RedisServer,
) -> None:
    data = NotificationData(id="line\nbreak", message="two\nlines\r\n", type=NotificationType.INFO)
    async with publisher(redis_server.url) as (bus, _):
        event = bus.prepare(Channel.NOTIFICATIONS, data, to="desk-1", user="alice\nsmith")
    assert b"\n" not in event.body
    assert orjson.loads(event.body.split(b" ", 1)[1])["data"]["message"] == "two\nlines\r\n"


async def test_two_nodes_deliver_the_same_stream_in_the_same_epoch(
    redis_server: RedisServer, start_node: Callable[..., Any]
) -> None:
    with trio.fail_after(TIMEOUT):
        first = await start_node(redis_server.url)
        second = await start_node(redis_server.url, client_id="other-watcher")
        async with publisher(redis_server.url) as (bus, _):
            for number in range(20):
                await bus.publish(Channel.NOTIFICATIONS, note(number))
                await bus.publish(Channel.PRICES, quote(100 + number), symbol="MSFT")
        for node in (first, second):
            await node.wait_for(lambda _, node=node: node.seqs("notification")[-1:] == [20])
            await node.wait_for(lambda _, node=node: node.seqs("price_update")[-1:] == [20])

    def notifications(node: Node) -> list[dict[str, Any]]:
        return [m for m in node.messages() if m["type"] == "notification"]

    # The same seq, data and timestamp: each is Redis's, decoded from the same bytes.
    assert notifications(first) == notifications(second)
    assert first.seqs("notification") == list(range(1, 21))
    assert first.hub.last_price("MSFT") == second.hub.last_price("MSFT")
    assert first.hub.epoch == second.hub.epoch


async def test_a_node_started_later_holds_the_history_and_the_last_prices(
    redis_server: RedisServer, start_node: Callable[..., Any]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with publisher(redis_server.url) as (bus, _):
            for number in range(1, 6):
                await bus.publish(Channel.NOTIFICATIONS, note(number))
            await bus.publish(Channel.PRICES, quote(42), symbol="AAPL")
        node = await start_node(redis_server.url)
    replay = node.hub.replay(Channel.NOTIFICATIONS, 2, node.hub.epoch, "anyone")
    assert [frames.message.seq for frames in replay] == [3, 4, 5]
    last = node.hub.last_price("AAPL")
    assert last is not None
    assert last.data.price == 42
    assert node.hub.last_price("MSFT") is None


async def test_history_in_redis_is_capped_and_a_resume_before_it_is_refused(
    redis_server: RedisServer, start_node: Callable[..., Any]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with publisher(redis_server.url, history_messages=3) as (bus, client):
            for number in range(1, 6):
                await bus.publish(Channel.NOTIFICATIONS, note(number))
            assert await client.llen(NOTES_KEY) == 3
        node = await start_node(redis_server.url)
    assert [f.message.seq for f in node.hub.replay(Channel.NOTIFICATIONS, 2, node.hub.epoch, "c")]
    with pytest.raises(RemoteProtocolError) as refused:
        node.hub.replay(Channel.NOTIFICATIONS, 1, node.hub.epoch, "c")
    assert refused.value.code == ErrorCode.HISTORY_UNAVAILABLE


async def test_a_hole_in_what_a_node_heard_is_filled_from_redis_in_order(
    redis_server: RedisServer, start_node: Callable[..., Any]
) -> None:
    with trio.fail_after(TIMEOUT):
        node = await start_node(redis_server.url)
        url = redis_server.url
        async with publisher(url) as (heard, _), publisher(url, events="elsewhere") as (unheard, _):
            await heard.publish(Channel.NOTIFICATIONS, note(1))
            await node.wait_for(lambda m: len(m) == 1)
            # As if the node's subscription had lost them: Redis has them, it did not hear.
            await unheard.publish(Channel.NOTIFICATIONS, note(2))
            await unheard.publish(Channel.NOTIFICATIONS, note(3))
            await heard.publish(Channel.NOTIFICATIONS, note(4))
            await node.wait_for(lambda m: len(m) == 4)
    assert node.seqs("notification") == [1, 2, 3, 4]
    assert [m["data"]["id"] for m in node.messages()] == ["1", "2", "3", "4"]
    assert node.bus.catch_ups == 2
    replay = node.hub.replay(Channel.NOTIFICATIONS, 0, node.hub.epoch, "c")
    assert [f.message.seq for f in replay] == [1, 2, 3, 4]


async def test_a_node_delivers_each_event_of_a_message_in_order_and_fills_a_hole_first(
    redis_server: RedisServer, start_node: Callable[..., Any]
) -> None:
    with trio.fail_after(TIMEOUT):
        node = await start_node(redis_server.url)
        url = redis_server.url
        async with publisher(url) as (heard, _), publisher(url, events="elsewhere") as (unheard, _):
            await heard.send([heard.prepare(Channel.NOTIFICATIONS, note(n)) for n in (1, 2)])
            await node.wait_for(lambda m: len(m) == 2)
            await unheard.send([unheard.prepare(Channel.NOTIFICATIONS, note(3))])
            # Its first event follows a hole: the node catches up, then has them all.
            await heard.send(
                [
                    heard.prepare(Channel.NOTIFICATIONS, note(4)),
                    heard.prepare(Channel.PRICES, quote(10), symbol="AAPL"),
                    heard.prepare(Channel.NOTIFICATIONS, note(5)),
                ]
            )
            await node.wait_for(lambda m: len(m) == 6)
            await heard.send([heard.prepare(Channel.NOTIFICATIONS, note(n)) for n in (6, 7)])
            await node.wait_for(lambda m: len(m) == 8)
    assert node.seqs("notification") == [1, 2, 3, 4, 5, 6, 7]
    assert [m["data"]["id"] for m in node.messages() if m["type"] == "notification"] == [
        str(n) for n in range(1, 8)
    ]
    assert node.bus.catch_ups == 2
    replay = node.hub.replay(Channel.NOTIFICATIONS, 0, node.hub.epoch, "c")
    assert [f.message.seq for f in replay] == [1, 2, 3, 4, 5, 6, 7]


async def test_a_hole_redis_no_longer_holds_drops_the_copy_instead_of_replaying_around_it(
    redis_server: RedisServer, start_node: Callable[..., Any]
) -> None:
    with trio.fail_after(TIMEOUT):
        url = redis_server.url
        node = await start_node(url, history_messages=2)
        async with (
            publisher(url, history_messages=2) as (heard, _),
            publisher(url, events="elsewhere", history_messages=2) as (unheard, _),
        ):
            await heard.publish(Channel.NOTIFICATIONS, note(1))
            await node.wait_for(lambda m: len(m) == 1)
            for number in range(2, 7):
                await unheard.publish(Channel.NOTIFICATIONS, note(number))
            await heard.publish(Channel.NOTIFICATIONS, note(7))
            await node.wait_for(lambda m: len(m) == 3)
    assert node.seqs("notification") == [1, 6, 7]
    epoch = node.hub.epoch
    with pytest.raises(RemoteProtocolError):
        node.hub.replay(Channel.NOTIFICATIONS, 1, epoch, "c")  # 2 to 5 are gone
    assert [f.message.seq for f in node.hub.replay(Channel.NOTIFICATIONS, 5, epoch, "c")] == [6, 7]


async def test_flushing_redis_begins_a_new_epoch_the_old_one_is_refused_and_clients_are_told(
    redis_server: RedisServer, start_node: Callable[..., Any]
) -> None:
    with trio.fail_after(TIMEOUT):
        node = await start_node(redis_server.url)
        async with publisher(redis_server.url) as (bus, client):
            await bus.publish(Channel.NOTIFICATIONS, note(1))
            await bus.publish(Channel.NOTIFICATIONS, note(2))
            await node.wait_for(lambda m: len(m) == 2)
            old = node.hub.epoch
            await client.flushall()
            await bus.publish(Channel.NOTIFICATIONS, note(3))
            await node.wait_for(lambda m: len(m) == 3)
            new = await client.get(EPOCH_KEY)
    assert new is not None
    assert node.hub.epoch == new.decode() != old
    # The live connection counts in the old epoch: it is told (a node-local notice,
    # seq 0) and closed with 1001, to reconnect into the new one and resync.
    assert node.seqs("notification") == [1, 2, 0]
    assert node.messages()[-1]["data"]["type"] == "error"
    assert node.outbox.close_code == CloseCode.GOING_AWAY
    with pytest.raises(RemoteProtocolError) as refused:
        node.hub.replay(Channel.NOTIFICATIONS, 1, old, "c")
    assert refused.value.code == ErrorCode.HISTORY_UNAVAILABLE
    replay = node.hub.replay(Channel.NOTIFICATIONS, 0, new.decode(), "c")
    assert [f.message.seq for f in replay] == [1]  # a new history counts from 1


async def test_a_targeted_event_reaches_only_its_client_and_stays_so_in_history(
    redis_server: RedisServer, start_node: Callable[..., Any]
) -> None:
    with trio.fail_after(TIMEOUT):
        node = await start_node(redis_server.url)
        async with publisher(redis_server.url) as (bus, _):
            await bus.publish(Channel.NOTIFICATIONS, note(1), to="someone-else")
            await bus.publish(Channel.NOTIFICATIONS, note(2), to="watcher")
            await node.wait_for(lambda m: len(m) == 1)
    assert node.seqs("notification") == [2]
    epoch = node.hub.epoch
    assert [f.message.seq for f in node.hub.replay(Channel.NOTIFICATIONS, 0, epoch, "x")] == []
    for_someone = node.hub.replay(Channel.NOTIFICATIONS, 0, epoch, "someone-else")
    assert [f.message.seq for f in for_someone] == [1]


async def test_a_user_s_events_reach_that_user_on_every_node_and_in_every_history(
    redis_server: RedisServer, start_node: Callable[..., Any]
) -> None:
    # A sub may hold spaces and "@": the address word must survive both.
    user = "alice @ example.com"
    with trio.fail_after(TIMEOUT):
        live = await start_node(redis_server.url)
        mine = Outbox("a1", Codec.JSON, OutboxLimits(), user=user)
        live.hub.register(mine)
        live.hub.apply(mine, Change(Channel.NOTIFICATIONS, frozenset(), ALL_SYMBOLS))
        async with publisher(redis_server.url) as (bus, _):
            await bus.publish(Channel.NOTIFICATIONS, note(1), user=user)
            await bus.publish(Channel.NOTIFICATIONS, note(2), user="bob")
            await bus.publish(Channel.NOTIFICATIONS, note(3), to="a1", user=user)
            await bus.publish(Channel.NOTIFICATIONS, note(4), to="a1", user="bob")
            await bus.publish(Channel.NOTIFICATIONS, note(5))
            await live.wait_for(lambda m: len(m) == 1)  # the watcher is nobody's
        late = await start_node(redis_server.url)  # holds the history from catch-up
    assert live.seqs("notification") == [5]
    assert [orjson.loads(frame[2:])["seq"] for frame in mine.take()] == [1, 3, 5]
    for node in (live, late):
        hub = node.hub
        for client_id, who, expected in (
            ("a1", user, [1, 3, 5]),
            ("a1", "bob", [2, 4, 5]),  # were a1 ever bob's
            ("a1", None, [5]),
            ("b1", "bob", [2, 5]),
        ):
            replay = hub.replay(Channel.NOTIFICATIONS, 0, hub.epoch, client_id, who)
            assert [f.message.seq for f in replay] == expected, (client_id, who)


def test_an_address_is_one_word_and_reads_back() -> None:
    for to, user in [
        (None, None),
        ("c-1", None),
        (None, "alice"),
        ("c-1", "a b@c%d"),
        (None, "\u00e9l\u00e8ve"),
    ]:
        word = address(to, user)
        assert b" " not in word
        assert parse_address(word) == (to, user)
    assert parse_address(b"client-1") == ("client-1", None)  # written before users


async def test_a_password_in_the_url_and_tls_with_rediss(
    tmp_path: Path, start_node: Callable[..., Any]
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = RedisServer(
        tmp_path / "redis",
        password="s3cret-pw",
        tls=(tmp_path / "cert.pem", tmp_path / "key.pem"),
    )
    server.start()
    try:
        url = f"{server.url}?ssl_ca_certs={tmp_path / 'ca.pem'}"
        assert url.startswith("rediss://:s3cret-pw@")
        with trio.fail_after(TIMEOUT):
            node = await start_node(url)
            async with publisher(url) as (bus, _):
                await bus.publish(Channel.NOTIFICATIONS, note(1))
                await node.wait_for(lambda m: len(m) == 1)
        assert "s3cret" not in redacted(url)
        assert redacted(url).startswith("rediss://:***@127.0.0.1:")
    finally:
        server.stop()


def test_the_bus_setting_takes_redis_urls_and_never_repeats_one() -> None:
    assert Config(bus="redis://:pw@10.0.0.5:6379/2").bus == "redis://:pw@10.0.0.5:6379/2"
    assert Config.from_env({"REALTIME_BUS": "rediss://redis.internal:6380/0"}).bus is not None
    with pytest.raises(ValueError, match=r"--bus \(REALTIME_BUS\) must be a Redis URL") as bad:
        Config(bus="http://:secret@example.com/")
    assert "secret" not in str(bad.value)
    assert "secret" not in repr(Config(bus="redis://:secret@h:1/0"))
    assert events_channel("redis://h:1/3") == "realtime:events:3"
    assert events_channel("redis://h:1") == "realtime:events:0"
