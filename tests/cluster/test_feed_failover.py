"""Feed high availability: a standby ``realtime feed`` behind the feed lock, with real
processes killed and paused, and the lock and its fencing against a real Redis."""

from __future__ import annotations

import signal
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import coredis
import orjson
import pytest
import trio
import trio.testing

from protocol import Channel
from realtime._feed import NOT_MINE, FeedLock, FeedPublisher
from realtime._redis_bus import (
    FEED_LOCK_KEY,
    SEQ_KEY,
    NotActive,
    Prepared,
    RedisPublisher,
    events_channel,
    open_redis,
)

from .conftest import REFUSED_CONNECTIONS, Cluster
from .redis_server import RedisServer
from .test_cluster import connect
from .test_redis_bus import NOTES_KEY, note

TIMEOUT = 60.0  # a hang guard for processes on a busy machine; nothing is timed
#: A short lock, so that a takeover comes within a few seconds.
TTL = ["--feed-lock-ttl", "2"]


async def published(publisher: RedisPublisher, count: int) -> None:
    """Wait until Redis has confirmed ``count`` events of ``publisher``."""
    while publisher.published < count:
        await trio.sleep(0.01)


def contiguous(seqs: list[int]) -> bool:
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_a_standby_feed_takes_over_when_the_active_one_is_killed(
    cluster: Cluster,
) -> None:
    with trio.fail_after(TIMEOUT):
        active = await cluster.start_feed(*TTL)
        standby = await cluster.start_feed(*TTL, until="Standing by")
        node = await cluster.start_node()
        async with connect(node, "watcher") as client:
            await client.request({"type": "subscribe", "channel": "signals"}, "subscribed")
            await client.request(
                {"type": "subscribe", "channel": "prices", "symbols": ["AAPL"]}, "subscribed"
            )
            kept = ("trading_signal", "price_update")
            before = await client.collect_until(
                lambda got: sum(m["type"] == "trading_signal" for m in got) >= 10,
                lambda m: m["type"] in kept,
            )
            active.process.kill()  # SIGKILL: no release, the lock runs out
            await standby.logged("Active: feeding Redis")
            after = await client.collect_until(
                lambda got: sum(m["type"] == "trading_signal" for m in got) >= 20,
                lambda m: m["type"] in kept,
            )
    assert "Active: feeding Redis" not in standby.text.split("Standing by")[0]
    signals = [m["seq"] for m in before + after if m["type"] == "trading_signal"]
    # One stream across the takeover: what the dead feed published, then the
    # standby's, numbered on from it; no duplicate, no hole.
    assert contiguous(signals), signals
    prices = [m for m in before + after if m["type"] == "price_update"]
    seqs = [m["seq"] for m in prices]
    assert seqs == sorted(set(seqs))  # conflated maybe, never repeated or back
    # The standby carried the market on from the dead feed's last prices: AAPL's
    # session volume goes on growing (a market of its own would start again at 0).
    assert "Continuing 16 prices from the last ones in Redis" in standby.text
    volumes = [m["data"]["volume"] for m in prices]
    assert volumes == sorted(volumes), volumes


async def test_a_paused_active_feed_loses_the_lock_and_publishes_nothing_after(
    cluster: Cluster,
) -> None:
    with trio.fail_after(TIMEOUT):
        first = await cluster.start_feed(*TTL)
        second = await cluster.start_feed(*TTL, until="Standing by")
        node = await cluster.start_node()
        async with connect(node, "watcher") as client:
            await client.request({"type": "subscribe", "channel": "signals"}, "subscribed")
            signals = await signals_after(client, 10)
            first.process.send_signal(signal.SIGSTOP)  # hung: it renews nothing
            try:
                await second.logged("Active: feeding Redis")
                signals += await signals_after(client, 10)
            finally:
                first.process.send_signal(signal.SIGCONT)
            # Awake, with a lock it no longer holds: it stops at once, and stands by.
            await first.logged("Stopping the feeds at once(.|\n)*Standing by")
            signals += await signals_after(client, 20)
    assert contiguous(signals), signals


async def signals_after(client: Any, count: int) -> list[int]:
    """The seq of the next ``count`` trading signals ``client`` receives."""
    got = await client.collect_until(
        lambda kept: len(kept) >= count, lambda m: m["type"] == "trading_signal"
    )
    return [m["seq"] for m in got]


async def test_the_lock_is_one_feed_s_and_fences_the_publishes_of_another(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    with trio.fail_after(TIMEOUT):
        async with open_redis(url) as client:

            def fenced(lock: FeedLock) -> RedisPublisher:
                return RedisPublisher(
                    client,
                    events=events_channel(url),
                    history_messages=10,
                    history_seconds=60,
                    fence=lock.token,
                )

            first, second = FeedLock(client, ttl=0.5), FeedLock(client, ttl=0.5)
            await first.acquire()
            with trio.move_on_after(0.2):  # less than the TTL: it stands by
                await second.acquire()
            assert (first.held, second.held) == (True, False)
            # The first renews nothing (hung): the lock runs out, the second takes it.
            await second.acquire()
            assert second.held
            # Redis refuses what the first sends now, atomically: nothing is numbered.
            with pytest.raises(NotActive):
                await fenced(first).publish(Channel.NOTIFICATIONS, note(1))
            assert await client.hget(SEQ_KEY, "notifications") is None
            await fenced(second).publish(Channel.NOTIFICATIONS, note(1))
            assert await client.hget(SEQ_KEY, "notifications") == b"1"
            # The first, waking, knows its time is up before it asks Redis.
            lost: list[str] = []
            await first.hold(lost.append)
            assert lost == ["Redis did not renew the feed lock within its 0.5s"]
            # A feed that stops gives the lock back: a standby takes it at once.
            await second.release(url)
            assert not second.held
            await first.acquire()
            # Had the lock gone to another meanwhile (a Redis that lost its data, and a
            # standby quicker to take it), the next renewal says so.
            await client.set(FEED_LOCK_KEY, second.token)
            await first.hold(lost.append)
            assert lost[1:] == [NOT_MINE]
            assert not first.held


async def test_a_retry_of_an_event_redis_published_is_not_published_again(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    async with open_redis(url) as client:
        publisher = RedisPublisher(
            client, events=events_channel(url), history_messages=10, history_seconds=60
        )
        event = publisher.prepare(Channel.NOTIFICATIONS, note(1))
        assert await publisher.send([event], lane="a", counter=1) == [1]
        # Sent again (the answer was lost): Redis has it already.
        assert await publisher.send([event], lane="a", counter=1) == []
        batch = [publisher.prepare(Channel.NOTIFICATIONS, note(n)) for n in (2, 3)]
        assert await publisher.send(batch, lane="a", counter=2) == [2, 3]
        # A retried batch is skipped whole.
        assert await publisher.send(batch, lane="a", counter=2) == []
        # Another lane counts on its own.
        assert await publisher.send([event], lane="b", counter=1) == [4]
        assert await client.hget(SEQ_KEY, "notifications") == b"4"
        history = await client.lrange(NOTES_KEY, 0, -1)
        assert [entry.split(b" ", 1)[0] for entry in history] == [b"1", b"2", b"3", b"4"]


@REFUSED_CONNECTIONS
@pytest.mark.usefixtures("collected")
async def test_a_feed_s_publish_waits_out_a_redis_restart_and_is_published_once(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis", persistent=True)
    server.start()
    try:
        with trio.fail_after(TIMEOUT):
            async with open_redis(server.url) as client:
                publisher = RedisPublisher(
                    client,
                    events=events_channel(server.url),
                    history_messages=10,
                    history_seconds=60,
                )
                lost: list[str] = []
                feed = FeedPublisher(publisher, url=server.url, lost=lost.append)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(feed.run)
                    await feed.publish(Channel.NOTIFICATIONS, note(1))
                    await published(publisher, 1)
                    await trio.to_thread.run_sync(server.stop)
                    # Queued: the sender waits for Redis and sends it again.
                    await feed.publish(Channel.NOTIFICATIONS, note(2))
                    await trio.to_thread.run_sync(server.restart)
                    await published(publisher, 2)
                    nursery.cancel_scope.cancel()
                history = await client.lrange(NOTES_KEY, 0, -1)
    finally:
        server.stop()
    assert [entry.split(b" ", 1)[0] for entry in history] == [b"1", b"2"]
    assert lost == []


async def test_a_batch_redis_refuses_waits_until_redis_takes_it(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = redis_server.url
    with trio.fail_after(TIMEOUT):
        async with open_redis(url) as client:
            publisher = RedisPublisher(
                client, events=events_channel(url), history_messages=10, history_seconds=60
            )
            lost: list[str] = []
            feed = FeedPublisher(publisher, url=url, lost=lost.append)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed.run)
                await feed.publish(Channel.NOTIFICATIONS, note(1))
                await published(publisher, 1)
                # Full under noeviction: Redis answers a write with an OOM error.
                await client.config_set({"maxmemory": "1"})
                await feed.publish(Channel.NOTIFICATIONS, note(2))
                while "OOM" not in caplog.text:
                    await trio.sleep(0.01)
                await client.config_set({"maxmemory": "0"})
                await published(publisher, 2)
                nursery.cancel_scope.cancel()
            history = await client.lrange(NOTES_KEY, 0, -1)
    assert [entry.split(b" ", 1)[0] for entry in history] == [b"1", b"2"]
    assert "1 events wait and are sent again (nothing is dropped)" in caplog.text
    assert lost == []


async def test_fencing_refuses_the_whole_batch_of_a_feed_that_lost_the_lock(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = redis_server.url
    with trio.fail_after(TIMEOUT):
        async with open_redis(url) as client:
            mine, another = FeedLock(client, ttl=60), FeedLock(client, ttl=60)
            await another.acquire()
            publisher = RedisPublisher(
                client,
                events=events_channel(url),
                history_messages=10,
                history_seconds=60,
                fence=mine.token,
            )
            lost: list[str] = []
            feed = FeedPublisher(publisher, url=url, lost=lost.append)
            async with trio.open_nursery() as nursery:
                for number in (1, 2, 3):  # queued: nothing sends yet
                    await feed.publish(Channel.NOTIFICATIONS, note(number))
                nursery.start_soon(feed.run)
                while not lost:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()  # as the feeds are, when the lock is lost
            # Nothing of the batch was numbered, kept or announced.
            assert await client.hget(SEQ_KEY, "notifications") is None
            assert await client.llen(NOTES_KEY) == 0
    assert lost == ["Redis refused the events: this feed no longer holds the feed lock"]
    assert "Stopped before Redis confirmed 3 events: they may not be published" in caplog.messages


async def test_the_feed_s_queue_blocks_publishers_while_full_and_bounds_each_call(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    with trio.fail_after(TIMEOUT):
        async with (
            open_redis(url) as client,
            client.pubsub(channels=[events_channel(url)], ignore_subscribe_messages=True) as heard,
        ):
            publisher = RedisPublisher(
                client, events=events_channel(url), history_messages=10, history_seconds=60
            )
            feed = FeedPublisher(publisher, url=url, lost=pytest.fail, queue=2)
            queued = 0

            async def publish(count: int) -> None:
                nonlocal queued
                for number in range(1, count + 1):
                    await feed.publish(Channel.NOTIFICATIONS, note(number))
                    queued += 1

            batches: list[list[bytes]] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish, 5)
                await trio.testing.wait_all_tasks_blocked()
                assert queued == 2  # the third waits for room, since nothing sends yet
                nursery.start_soon(feed.run)
                async for message in heard:
                    batches.append(typing.cast(bytes, message["data"]).split(b"\n"))
                    if sum(map(len, batches)) == 5:
                        break
                nursery.cancel_scope.cancel()
    assert queued == 5
    # One call sends at most what the queue holds, in the order published.
    assert all(len(batch) <= 2 for batch in batches)
    events = [line.split(b" ", 5) for batch in batches for line in batch]
    assert [(orjson.loads(e[5])["data"]["id"], int(e[2])) for e in events] == [
        (str(n), n) for n in range(1, 6)
    ]


class _AnswerLost(RedisPublisher):
    """A publisher whose first call reaches Redis but whose answer is lost, as when
    the connection breaks just after Redis ran the script."""

    calls = 0

    async def send(
        self, events: Sequence[Prepared], *, lane: str | None = None, counter: int = 0
    ) -> list[int]:
        self.calls += 1
        seqs = await super().send(events, lane=lane, counter=counter)
        if self.calls == 1:
            raise coredis.exceptions.ConnectionError("connection lost before the answer")
        return seqs


async def test_a_batch_whose_answer_was_lost_is_sent_again_and_published_once(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    with trio.fail_after(TIMEOUT):
        async with open_redis(url) as client:
            publisher = _AnswerLost(
                client, events=events_channel(url), history_messages=10, history_seconds=60
            )
            feed = FeedPublisher(publisher, url=url, lost=pytest.fail)
            async with trio.open_nursery() as nursery:
                for number in (1, 2, 3):  # one batch: the sender starts after them
                    await feed.publish(Channel.NOTIFICATIONS, note(number))
                nursery.start_soon(feed.run)
                while publisher.calls < 2:
                    await trio.sleep(0.01)
                await feed.publish(Channel.NOTIFICATIONS, note(4))
                await published(publisher, 4)
                nursery.cancel_scope.cancel()
            history = await client.lrange(NOTES_KEY, 0, -1)
    # The retry of the first batch was skipped: every event once, in order.
    assert [entry.split(b" ", 1)[0] for entry in history] == [b"1", b"2", b"3", b"4"]
    assert [orjson.loads(entry.split(b" ", 3)[3])["data"]["id"] for entry in history] == [
        "1",
        "2",
        "3",
        "4",
    ]
