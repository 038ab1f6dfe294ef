"""``realtime feed --bus redis://...``: the producers, once for a whole cluster.

The same feeds as a single gateway runs (``_server.build_feeds``: the simulated or
replayed prices through the price tap, alerts, signals, portfolio and the demo's
notifications), each supervised, publishing through a :class:`RedisPublisher`
instead of the in-process bus. The nodes (``realtime serve --bus``) run none and
deliver what this process publishes.

Theory of operation
-------------------
**One active feed.** Several ``realtime feed`` processes may run on one Redis: one is
active, the others stand by. The active one holds the feed lock
(:data:`FEED_LOCK_KEY`): a random token of its own, with a TTL of
``--feed-lock-ttl``, renewed every third of it by a Lua compare-and-extend. A
standby tries to take it as often (``SET NX PX``, in a script that also takes back a
lock that is already its own), so it takes over within the TTL and a third of it
once the active one stops renewing (killed, hung, cut off from Redis).

The active feed stops publishing at once when it learns that the lock is not its
own (a renewal finds another token), and, when Redis does not answer its renewals,
before the lock expires by its own clock (the TTL counted from before the last
renewal Redis confirmed, never later than Redis's own expiry). Either way it cancels
its feeds and stands by again. Whatever it knows, Redis enforces it: every event
carries the token, and the ``PUBLISH`` script refuses, in the same atomic step, an
event whose token is not the lock's (:exc:`NotActive`). So two feeds never publish
at once, not even one that was paused past its TTL and wakes up with an event in
hand, and the ``seq`` of every stream goes on from the last one Redis numbered.

**Alert rules.** The cluster's rules live in Redis (``_cluster_rules``): the first
active feed seeds them with its own (``--alerts``, or the demo set), and the active
feed's alert engine follows every change the nodes' API makes, from before its feeds
start until it stands down.

**Batches.** The feeds queue their events (:class:`FeedPublisher`, at most
:data:`FEED_QUEUE`) and one task sends them: everything queued while a call was in
flight goes in the next call of the ``PUBLISH`` script, one round trip, one fencing
check and one pub/sub message for the whole batch.

**Redis away.** Each batch waits and is sent again, with backoff, until Redis
confirms it; the queue fills and the feeds block meanwhile, so nothing is generated
that could be dropped. A retry is safe: the sender is a *lane* that numbers its calls,
and Redis remembers the last number of each lane, so a batch that Redis published
before the connection broke is not published again. If the outage outlasts the lock,
the feeds stop (the events queued and in flight are logged as perhaps unpublished)
and the process stands by until it can take the lock again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Final

import attrs
import coredis
import trio

from feeds import PriceFeed
from protocol import Channel, EventData

from ._cluster_rules import RuleFollower
from ._config import Config
from ._redis_bus import (
    FEED_LOCK_KEY,
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    SYMBOLS_KEY,
    BusUnavailable,
    NotActive,
    Prepared,
    RedisPublisher,
    events_channel,
    failure,
    last_prices,
    load_scripts,
    open_redis,
    redacted,
    unreachable,
)
from ._server import Feeds, build_feeds, start_feeds
from ._universe import PriceUniverse

logger = logging.getLogger("realtime.feed")

#: The settings ``realtime feed`` takes: the bus, what the feeds are, how long Redis
#: keeps history, the feed lock, and the log.
FEED_SETTINGS: Final = (
    "bus",
    "feed_lock_ttl",
    "feed",
    "replay_speed",
    "symbols",
    "universe",
    "universe_file",
    "tick_rate",
    "updates_per_tick",
    "seed",
    "derived_feeds",
    "demo_events",
    "alerts",
    "portfolio",
    "signal_interval",
    "portfolio_interval",
    "history_messages",
    "history_seconds",
    "log_file",
    "log_max_bytes",
    "log_backups",
    "log_level",
    "log_format",
)

#: KEYS: the lock. ARGV: the token, the TTL in milliseconds. Takes the lock if it is
#: free, extends it if it is the token's already; 1 if the token holds it now, else 0.
ACQUIRE: Final = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

#: KEYS: the lock. ARGV: the token, the TTL in milliseconds. Compare-and-extend: 1 if
#: the token held the lock (its TTL starts again), 0 if it did not (nothing changes).
RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

#: KEYS: the lock. ARGV: the token. Compare-and-delete: the token's lock goes.
RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

#: Why a feed stops when a renewal finds that the lock is not its own.
NOT_MINE: Final = "the feed lock is no longer this feed's (another took it, or Redis lost it)"

#: Events the feed queues for Redis (:class:`FeedPublisher`), besides the batch in
#: flight; one call sends at most that many. The benchmark's busiest load (6,000
#: events/s, in ticks of 100) averages about 12 events a call, so 256 lets Redis stall
#: for tens of ms before the feeds block, while one call stays within a few ms of
#: Redis's time (about 10 µs an event, and it serves nobody else while a script runs)
#: and a stop leaves at most that many events unsent.
FEED_QUEUE: Final = 256

#: Seconds a stopping feed gives Redis to take its lock back, so that a standby takes
#: over at once rather than after the TTL.
RELEASE_TIMEOUT: Final = 1.0


class FeedLock:
    """The feed lock of one ``realtime feed`` process (see the module doc).

    ``token`` is this process's, random. ``clock`` is monotonic (Trio's).
    """

    def __init__(
        self,
        client: coredis.Redis[bytes],
        *,
        ttl: float,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.token = uuid.uuid4().hex
        self._ttl = ttl
        self._ttl_ms = max(1, round(ttl * 1000))
        self._clock = clock
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        #: Until when (``clock``'s time) this process may count on holding the lock.
        self._valid_until = -float("inf")
        #: Times this process took the lock (standby to active).
        self.acquired = 0

    @property
    def held(self) -> bool:
        """Whether this process holds the lock, as far as it can know."""
        return self._clock() < self._valid_until

    async def acquire(self) -> None:
        """Block until this process holds the lock: standing by meanwhile, trying every
        third of the TTL. Redis being away is logged and waited out with backoff."""
        standing_by = False
        backoff = INITIAL_BACKOFF
        while True:
            sent = self._clock()
            try:
                taken: object = await self._acquire(
                    keys=[FEED_LOCK_KEY], args=[self.token, self._ttl_ms]
                )
            except Exception as exc:
                if not unreachable(exc):
                    raise
                logger.error("Cannot reach Redis for the feed lock: %s", failure(exc))
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = INITIAL_BACKOFF
            if taken:
                self._valid_until = sent + self._ttl
                self.acquired += 1
                return
            if not standing_by:
                standing_by = True
                logger.info(
                    "Standing by: another realtime feed holds the feed lock; taking over "
                    "within %gs of its end",
                    self._ttl * 4 / 3,
                )
            await trio.sleep(self._ttl / 3)

    async def hold(self, lost: Callable[[str], None]) -> None:
        """Renew the lock every third of the TTL until cancelled. Calls ``lost(why)``
        and returns as soon as the lock is another's, or when its TTL would run out
        (by this process's clock) before Redis confirms a renewal."""
        while True:
            await trio.sleep(self._ttl / 3)
            while True:
                sent = self._clock()
                with trio.move_on_at(self._valid_until):
                    try:
                        renewed: object = await self._renew(
                            keys=[FEED_LOCK_KEY], args=[self.token, self._ttl_ms]
                        )
                    except Exception as exc:
                        if not unreachable(exc):
                            raise
                        logger.error("Cannot renew the feed lock: %s", failure(exc))
                        await trio.sleep(self._ttl / 10)
                        continue
                    if not renewed:
                        self._valid_until = -float("inf")
                        lost(NOT_MINE)
                        return
                    self._valid_until = sent + self._ttl
                    break
                self._valid_until = -float("inf")
                lost(f"Redis did not renew the feed lock within its {self._ttl:g}s")
                return

    async def release(self, url: str) -> None:
        """Give the lock back if this process holds it (compare-and-delete), so that a
        standby takes over at once. For a process that stops: shielded, bounded by
        :data:`RELEASE_TIMEOUT`, through a client of its own (``url``'s), since the
        cancellation that stops the process also closes the connections it had."""
        if not self.held:
            return
        self._valid_until = -float("inf")
        with trio.move_on_after(RELEASE_TIMEOUT, shield=True):
            try:
                async with open_redis(url) as client:
                    await client.register_script(RELEASE)(keys=[FEED_LOCK_KEY], args=[self.token])
            except Exception as exc:
                logger.warning("Could not release the feed lock: %s", failure(exc))
                return
            logger.info("Released the feed lock: a standby takes over at once")


class FeedPublisher:
    """The :class:`feeds.Publisher` of ``realtime feed``: the feeds queue their events,
    and :meth:`run` sends what is queued, a batch per call of the ``PUBLISH`` script,
    each batch until Redis confirms it (see the module doc), none after the lock is
    lost.

    :meth:`publish` returns once the event is queued, not once Redis confirms it: a
    feed task publishes its events one after the other, so only that lets one call
    carry many. The queue holds at most ``queue`` events (:data:`FEED_QUEUE`), and
    ``publish`` blocks while it is full: the backpressure. One task sends, in queue
    order, so the events of every stream reach Redis in the order they were published.
    The sender is one lane that numbers its calls, which is what lets Redis tell a
    retry from a new batch. ``lost`` is called when Redis refuses a batch because the
    lock is another feed's; :meth:`run` then waits to be cancelled with the feeds.
    """

    def __init__(
        self,
        publisher: RedisPublisher,
        *,
        url: str,
        lost: Callable[[str], None],
        queue: int = FEED_QUEUE,
    ) -> None:
        self._publisher = publisher
        self._url = redacted(url)
        self._lost = lost
        self._max_batch = queue
        self._queue_in, self._queue = trio.open_memory_channel[Prepared](queue)
        self._lane = uuid.uuid4().hex
        #: Calls begun, the one in flight included: the lane's counter.
        self._calls = 0

    async def publish(
        self,
        channel: Channel,
        data: EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
        user: str | None = None,
    ) -> None:
        """Queue the event, addressed to ``to`` and ``user`` (see
        :class:`feeds.Publisher`), for :meth:`run` to publish; blocks while the queue is
        full. Raises ``TypeError`` for data that is not the channel's."""
        await self._queue_in.send(
            self._publisher.prepare(channel, data, symbol=symbol, to=to, user=user)
        )

    async def run(self) -> None:
        """Send the queued events until cancelled: all that are queued (at most
        ``queue``) in each call, the next call once Redis confirmed the previous. A
        call Redis does not answer is sent again, with backoff, as long as it takes.
        Events still queued or unconfirmed when cancelled are logged as perhaps
        unpublished, and dropped: a feed that stands by must not publish them later."""
        batch: list[Prepared] = []
        try:
            while True:
                batch = [await self._queue.receive()]
                while len(batch) < self._max_batch:
                    try:
                        batch.append(self._queue.receive_nowait())
                    except trio.WouldBlock:
                        break
                self._calls += 1
                await self._send(batch, self._calls)
                batch = []
        finally:
            unsent = len(batch)
            while True:
                try:
                    self._queue.receive_nowait()
                except trio.WouldBlock:
                    break
                unsent += 1
            if unsent:
                logger.warning(
                    "Stopped before Redis confirmed %d events: they may not be published",
                    unsent,
                )

    async def _send(self, batch: list[Prepared], counter: int) -> None:
        backoff = INITIAL_BACKOFF
        waiting = False
        while True:
            try:
                await self._publisher.send(batch, lane=self._lane, counter=counter)
            except NotActive as exc:
                self._lost(str(exc))
                await trio.sleep_forever()  # cancelled with the feeds
            except Exception as exc:
                # Away, or answering with a refusal (out of memory under noeviction,
                # say): either way the batch waits and the feeds block, rather than the
                # process end with its queue.
                if not (unreachable(exc) or isinstance(exc, coredis.exceptions.ResponseError)):
                    raise
                if not waiting:
                    waiting = True
                    logger.warning(
                        "Redis at %s: %s; %d events wait and are sent again (nothing is dropped)",
                        self._url,
                        failure(exc),
                        len(batch),
                    )
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if waiting:
                logger.info("Redis answers again: %d events are published", len(batch))
            return


@attrs.frozen
class FeedProcess:
    """Handle on a running ``realtime feed``: its feeds, its publisher and its lock."""

    feeds: Feeds
    publisher: RedisPublisher
    lock: FeedLock


async def run_feed(
    config: Config, *, task_status: trio.TaskStatus[FeedProcess] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the feeds into the Redis of ``config.bus`` until cancelled, while this
    process holds the feed lock; stand by while another does (see the module doc).

    Raises ``ValueError`` without a bus or for a bad replay, alerts or portfolio file
    (see ``build_feeds``), and :exc:`BusUnavailable` when Redis cannot be reached at
    start. Reports started once connected, before it holds the lock.
    """
    if config.bus is None:
        raise ValueError("realtime feed publishes into Redis: give --bus redis://HOST:PORT/DB")
    async with open_redis(config.bus) as client:
        try:
            await load_scripts(client)
        except Exception as exc:
            raise BusUnavailable(
                f"Cannot use Redis at {redacted(config.bus)}: {failure(exc)}"
            ) from None
        lock = FeedLock(client, ttl=config.feed_lock_ttl)
        publisher = RedisPublisher(
            client,
            events=events_channel(config.bus),
            history_messages=config.history_messages,
            history_seconds=config.history_seconds,
            fence=lock.token,
        )
        active = trio.CancelScope()

        def lost(why: str) -> None:
            if not active.cancel_called:
                logger.error("Stopping the feeds at once: %s", why)
            active.cancel()

        feed_publisher = FeedPublisher(publisher, url=config.bus, lost=lost)
        feeds = build_feeds(config, feed_publisher)
        # Seeds Redis with the file's (or the demo's) rules if it has none, then keeps
        # the alert engine holding the cluster's rules while this feed is active.
        rules = RuleFollower(config.bus, feeds.alerts.engine)
        # Every node checks its universe against SYMBOLS_KEY at start: a symbol added
        # here would be unknown to them (docs/cluster.md).
        universe = PriceUniverse(
            symbols=feeds.symbols,
            fixed="a cluster's universe is fixed at start: name every symbol in "
            "--universe, on the feed and on every node",
        )
        task_status.started(FeedProcess(feeds, publisher, lock))
        try:
            while True:
                await lock.acquire()
                active = trio.CancelScope()
                with active:
                    await _announce_symbols(client, feeds)
                    if isinstance(feeds.prices, PriceFeed):
                        await _continue_prices(client, feeds.prices)
                    logger.info(
                        "Active: feeding Redis at %s: %d symbols, %s",
                        redacted(config.bus),
                        len(feeds.symbols),
                        "replay"
                        if config.replay_file
                        else f"feed hook {config.feed_hook}"
                        if config.feed_hook
                        else "simulated market",
                    )
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(lock.hold, lost)
                        nursery.start_soon(feed_publisher.run)
                        # The rules first: the first tick is evaluated on the cluster's.
                        await nursery.start(rules.run)
                        start_feeds(nursery, config, feeds, feed_publisher, universe=universe)
        finally:
            await lock.release(config.bus)


async def _continue_prices(client: coredis.Redis[bytes], prices: PriceFeed) -> None:
    """Carry the simulated market on from the last prices in Redis, so that prices go
    on from where the feed before this one left them rather than jump to this
    process's own (its open, at the first start). A replay starts its file again, and
    a feed hook decides for itself."""
    try:
        carried = prices.continue_from(await last_prices(client))
    except Exception as exc:
        if not unreachable(exc):
            raise
        logger.warning(
            "Could not read the last prices; the market goes on from its own: %s", failure(exc)
        )
        return
    if carried:
        logger.info("Continuing %d prices from the last ones in Redis", carried)


async def _announce_symbols(client: coredis.Redis[bytes], feeds: Feeds) -> None:
    """Write the price universe for the nodes: a node started with other --symbols,
    --universe or --feed would refuse the symbols this feed publishes, and compares
    them at start."""
    try:
        await client.set(SYMBOLS_KEY, " ".join(feeds.symbols))
    except Exception as exc:
        if not unreachable(exc):
            raise
        logger.warning("Could not write the symbols for the nodes: %s", failure(exc))
