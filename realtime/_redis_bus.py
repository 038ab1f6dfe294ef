"""The Redis bus: many gateway nodes, one stream (the design is in docs/cluster.md).

Theory of operation
-------------------
Redis holds what a single gateway's hub keeps in memory: the epoch, each stream's
``seq`` (a stream is a channel, or for prices a symbol, exactly as the hub numbers
them), the history of the non-price channels and the last price of each symbol.

Publishing (:class:`RedisPublisher`: the ``realtime feed`` process, and the publish
API of every node) is one call of the :data:`PUBLISH` Lua script per batch of events
(the feed sends what queued while the previous call was in flight; the API one event),
atomic in Redis: it creates the epoch if there is none, and for each event, in order,
increments the stream's seq and appends the event with its seq to the channel's capped
history (or, for a price, replaces the symbol's last price), O(1) each; then it
``PUBLISH``-es the whole batch as one message on the events channel. The event
travels encoded as the protocol's JSON with ``seq`` 0; Redis prefixes the real one:
an entry is ``SEQ MS TO JSON`` (``MS`` Redis's clock, ``TO`` the event's address in
one word: the target client id, then ``@`` and the target user percent-encoded when
there is one, or empty for every subscriber), a published event ``EPOCH STREAM`` and
the entry, and a message one or more published events, one a line.

Following (:meth:`RedisBus.run`, in every node): subscribe to the events channel
first, then catch up: one :data:`CATCH_UP` script call returns, atomically, the
epoch, every stream's seq, every last price and each channel's history after the
node's position. From then on every published event (each line of each message) is
handed to the hub in seq order (:meth:`Hub.deliver`), one decode per event per node
whatever the number of clients, and the hub encodes and frames it once per codec as
for the in-process bus. An event the node already has (the overlap of catch-up and
subscription) is skipped; a hole in a channel (an event lost while the node was
disconnected) or a new epoch makes the node catch up again before it delivers
anything past it. So a node's hub holds a copy of Redis's history, in order and
without holes, and answers a resume (``since`` + ``epoch``) from any node as the
single gateway does; where the copy cannot be completed (Redis trimmed what the node
missed) the hub drops it (:meth:`Hub.forget`), so the resume is refused with
``history_unavailable`` rather than given a partial replay.

The epoch changes only when Redis loses the history: a script that finds no epoch
creates one (from a fresh random candidate) and deletes what the old one left. A
node that finds a new epoch under live connections tells them (an ``error``
notification) and closes them with 1001: their positions count in the old epoch, so
they reconnect, get the new one in ``welcome``, and their resume is refused with
``history_unavailable``: never a silent gap.

Faults
------
A node is *live* from a completed catch-up until its link to Redis fails: the
subscription's connection breaks, or Redis leaves a ``PING`` (sent every
``probe_interval``) unanswered for ``probe_timeout`` (a paused or unreachable Redis
breaks nothing, it just stops answering). Then the node drops that connection, tells
its subscribers of notifications that live data is interrupted (a node-local
notification, ``seq`` 0: :meth:`Hub.announce`), and reconnects with backoff, each
attempt bounded by ``connect_timeout``: subscribe, catch up from its position in
Redis (so nothing Redis still holds is lost), and tell them live data is back.
Its WebSocket connections stay open throughout. :attr:`RedisBus.connected` says
whether it is live, for readiness. Publishing goes through a client of its own that
is not dropped with the subscription, so a publish Redis received during a pause is
answered when Redis resumes; a publish while the node is not live is refused at once
(:exc:`PublishUnavailable`: 503 from the API), never taken and then lost.

Beside the events, a node follows the control channel, on which nodes tell each
other which connection lost its client id to another node's and whom to disconnect,
and runs its part of the cluster-wide rules (``_cluster.Membership``) for as long as
each connection lasts.
"""

from __future__ import annotations

import logging
import math
import typing
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Final
from urllib.parse import quote, unquote, urlsplit

import anyio
import attrs
import coredis
import trio
from coredis.commands import Script
from coredis.retry import NoRetryPolicy

from protocol import (
    CHANNEL_EVENTS,
    Channel,
    CloseCode,
    Codec,
    EventData,
    EventMessage,
    NotificationData,
    NotificationType,
    PriceData,
    PriceUpdate,
    decode_server,
    encode,
)

from ._bus import PublishUnavailable, check_event
from ._cluster import DISCONNECT_WAIT, HEARTBEAT, Membership
from ._hub import Hub, utc_now

logger = logging.getLogger("realtime.bus")

#: Seconds before the first reconnection to Redis; it doubles up to MAX_BACKOFF.
INITIAL_BACKOFF: Final = 0.5
MAX_BACKOFF: Final = 30.0
#: Seconds between two PINGs of a live node, and how long Redis may leave one
#: unanswered before the node counts its link as lost.
PROBE_INTERVAL: Final = 1.0
PROBE_TIMEOUT: Final = 3.0
#: Seconds a (re)connection may take: connect, load the scripts, subscribe, catch up.
CONNECT_TIMEOUT: Final = 10.0

#: Every key shares the hash tag ``{realtime}``: one slot, so the scripts, which
#: touch them all, can run on Redis Cluster too.
EPOCH_KEY: Final = "{realtime}:epoch"
SEQ_KEY: Final = "{realtime}:seq"
PRICES_KEY: Final = "{realtime}:prices"
#: The feed's price universe, for nodes to check theirs against.
SYMBOLS_KEY: Final = "{realtime}:symbols"
#: The lock the active ``realtime feed`` holds (``_feed``): its token, with a TTL.
FEED_LOCK_KEY: Final = "{realtime}:feed-lock"
#: A publisher's lane (``RedisPublisher.send``): the last counter it published.
LANE_PREFIX: Final = "{realtime}:lane:"
#: Milliseconds Redis remembers a lane's counter after its last publish.
LANE_TTL_MS: Final = 24 * 3600 * 1000
#: The channels that keep history, in the order of their keys in :data:`KEYS`.
HISTORY_CHANNELS: Final[tuple[Channel, ...]] = tuple(
    channel for channel in Channel if channel is not Channel.PRICES
)
KEYS: Final = (
    EPOCH_KEY,
    SEQ_KEY,
    PRICES_KEY,
    *(f"{{realtime}}:history:{channel}" for channel in HISTORY_CHANNELS),
)
#: The Lua index (1-based) in KEYS of each channel's history.
_HISTORY_INDEX: Final[dict[Channel, int]] = {
    channel: 4 + i for i, channel in enumerate(HISTORY_CHANNELS)
}

# Shared by both scripts: a missing epoch means Redis lost the history (a flush, a
# restart without persistence), so what is left of the old one (there should be
# nothing) goes, and a new epoch begins. Only the history's own keys go: PUBLISH is
# given more.
_ENSURE_EPOCH: Final = f"""
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', unpack(KEYS, 2, {len(KEYS)}))
  redis.call('SET', KEYS[1], epoch)
end
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
"""

#: What PUBLISH returns for a batch that a feed which no longer holds the feed lock
#: sent (nothing is published), and for the retry of one already published.
NOT_ACTIVE: Final = -1
ALREADY_PUBLISHED: Final = 0

#: KEYS: :data:`KEYS`, :data:`FEED_LOCK_KEY`, the publisher's lane key. ARGV:
#: candidate epoch, events channel, history messages, history milliseconds, the feed
#: lock's token (empty: not fenced), the lane's counter (empty: no lane), the lane's
#: TTL in milliseconds; then three per event: stream, index of the stream's history
#: in KEYS (0: a price), ``TO JSON``. Returns the events' seqs in order, or
#: :data:`NOT_ACTIVE` when the lock is not the token's, or :data:`ALREADY_PUBLISHED`
#: when the lane has published this counter. The whole batch is one pub/sub message:
#: its events, one a line (no entry holds a newline: see :meth:`RedisPublisher.prepare`).
PUBLISH: Final = (
    """
local lock, lane = KEYS[#KEYS - 1], KEYS[#KEYS]
if ARGV[5] ~= '' and redis.call('GET', lock) ~= ARGV[5] then
  return -1
end
if ARGV[6] ~= '' then
  local done = redis.call('GET', lane)
  if done and tonumber(done) >= tonumber(ARGV[6]) then
    return 0
  end
end
"""
    + _ENSURE_EPOCH
    + """
local seqs, published, trimmed = {}, {}, {}
for i = 8, #ARGV, 3 do
  local stream, index = ARGV[i], tonumber(ARGV[i + 1])
  local seq = redis.call('HINCRBY', KEYS[2], stream, 1)
  local entry = seq .. ' ' .. ms .. ' ' .. ARGV[i + 2]
  if index == 0 then
    redis.call('HSET', KEYS[3], stream, entry)
  else
    redis.call('RPUSH', KEYS[index], entry)
    trimmed[index] = true
  end
  seqs[#seqs + 1] = seq
  published[#published + 1] = epoch .. ' ' .. stream .. ' ' .. entry
end
-- Trimmed once per batch: every entry of the batch has the same ms, so none of them
-- ages out (pops from the oldest end: amortized O(1)).
local horizon = ms - tonumber(ARGV[4])
for index in pairs(trimmed) do
  local history = KEYS[index]
  redis.call('LTRIM', history, -tonumber(ARGV[3]), -1)
  while tonumber(string.match(redis.call('LINDEX', history, 0), '^%d+ (%d+) ')) < horizon do
    redis.call('LPOP', history)
  end
end
redis.call('PUBLISH', ARGV[2], table.concat(published, '\\n'))
if ARGV[6] ~= '' then
  redis.call('SET', lane, ARGV[6], 'PX', ARGV[7])
end
return seqs
"""
)

#: KEYS: :data:`KEYS`. ARGV: candidate epoch, the caller's epoch (or empty), then the
#: caller's position in each history channel. Returns the epoch, Redis's time (ms),
#: the seqs and the last prices (flat field/value lists), then each channel's
#: entries after the caller's position (all of them in another epoch).
CATCH_UP: Final = (
    _ENSURE_EPOCH
    + """
local result = {epoch, tostring(ms), redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3])}
for i = 4, #KEYS do
  local after = 0
  if epoch == ARGV[2] then after = tonumber(ARGV[i - 1]) end
  local start = 0
  local head = redis.call('LINDEX', KEYS[i], 0)
  if head then
    -- The entries of a history hold consecutive seqs: the one after 'after' is at
    -- a known index.
    start = math.max(0, after + 1 - tonumber(string.match(head, '^%d+')))
  end
  result[#result + 1] = redis.call('LRANGE', KEYS[i], start, -1)
end
return result
"""
)


class BusUnavailable(Exception):
    """Redis could not be reached, or refused us, when a node or the feed started."""


class NotActive(Exception):
    """Redis refused an event of a feed that no longer holds the feed lock (another
    feed took over): nothing was published."""


def failure(exc: BaseException) -> str:
    """What went wrong, in one line: the first error inside the exception groups that
    the client's task groups wrap errors in."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


#: What a Redis that is away, paused, restarting or cut off raises: nothing our code
#: or the scripts did wrong.
_UNREACHABLE: Final = (
    coredis.exceptions.ConnectionError,  # also BusyLoadingError: a restart loading its data
    coredis.exceptions.ReadOnlyError,  # a replica, during a failover
    TimeoutError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or every error inside its groups) says Redis could not be
    reached, rather than that a command or script was wrong."""
    if isinstance(exc, BaseExceptionGroup):
        return all(unreachable(inner) for inner in exc.exceptions)
    return isinstance(exc, _UNREACHABLE)


def events_channel(url: str) -> str:
    """The pub/sub channel of the database ``url`` names: pub/sub ignores databases,
    so two clusters on two databases of one Redis must not share it."""
    return f"realtime:events:{_database(url)}"


def control_channel(url: str) -> str:
    """The pub/sub channel on which nodes tell each other what to do (``_cluster``)."""
    return f"realtime:control:{_database(url)}"


def rules_channel(url: str) -> str:
    """The pub/sub channel that announces each change of the cluster's alert rules
    (``_cluster_rules``)."""
    return f"realtime:rules:{_database(url)}"


def _database(url: str) -> str:
    path = urlsplit(url).path.strip("/")
    return path if path.isdigit() else "0"


def redacted(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + netloc).geturl()


def open_redis(url: str) -> coredis.Redis[bytes]:
    """A client of the Redis at ``url``; open it with ``async with``.

    Nothing is retried behind our back: a publish that failed after Redis ran it
    would run twice (a duplicate event with a new seq), and a subscription that
    reconnects silently would lose events unnoticed. Both are the caller's business.
    """
    return coredis.Redis.from_url(url, retry_policy=NoRetryPolicy())


async def load_scripts(client: coredis.Redis[bytes]) -> None:
    """Load the scripts into Redis's cache, so that their first calls need no retry
    (they are loaded again by the client after a Redis restart emptied the cache)."""
    for script in (PUBLISH, CATCH_UP):
        await client.script_load(script)


@contextmanager
def closed_on_teardown() -> Iterator[None]:
    """coredis 6.9's pub/sub, when cancelled from outside, may try to unsubscribe on
    a connection that the same cancellation already closed, and raise
    ``anyio.ClosedResourceError`` from its cleanup beside the ``Cancelled``. That error
    says nothing about Redis: drop it, and let the cancellation (or the lost
    connection) go on as it would."""
    try:
        yield
    except* anyio.ClosedResourceError:
        pass


def address(to: str | None, user: str | None) -> bytes:
    """The one-word ``TO`` of an entry: ``to``, then ``@`` and ``user`` percent-encoded
    (so it holds no space and no ``@``) when there is one; empty for everyone."""
    word = to or ""
    if user is not None:
        word += "@" + quote(user, safe="")
    return word.encode()


def parse_address(word: bytes) -> tuple[str | None, str | None]:
    """``(to, user)`` of a ``TO`` word written by :func:`address`."""
    to, at, user = word.decode().partition("@")
    return to or None, unquote(user) if at else None


@attrs.frozen
class Prepared:
    """An event stamped and encoded for the :data:`PUBLISH` script: sent as many times
    as it takes, it stays the same event."""

    channel: Channel
    #: The stream it counts in: the channel's name, or for a price its symbol.
    stream: str
    #: ``TO JSON``: the event's address (see :func:`address`) and the event with ``seq`` 0.
    body: bytes


class RedisPublisher:
    """A :class:`feeds.Publisher` into Redis: events numbered, kept in history and
    announced to every node by one call of the :data:`PUBLISH` script per batch
    (:meth:`send`).

    ``publish`` sends one event and returns once Redis has it: one round trip, the
    backpressure. Raises what the client raises when Redis cannot be reached
    (``coredis`` errors, see :func:`unreachable`); the event is then lost, or was
    published: never twice.

    ``fence``: the feed lock's token (``_feed``). Redis then refuses, in the same
    atomic step, every event once the lock is not this token's, and :meth:`send`
    raises :exc:`NotActive`: a feed that lost the lock cannot publish, even an event
    that reached Redis late.
    """

    def __init__(
        self,
        client: coredis.Redis[bytes],
        *,
        events: str,
        history_messages: int,
        history_seconds: float,
        fence: str | None = None,
    ) -> None:
        self._script = client.register_script(PUBLISH)
        self._events = events
        self._history_messages = history_messages
        self._history_ms = max(1, round(history_seconds * 1000))
        self._fence = fence or ""
        #: Events published since start.
        self.published = 0

    def prepare(
        self,
        channel: Channel,
        data: EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
        user: str | None = None,
    ) -> Prepared:
        """Stamp ``data`` with the publish time and encode it for :meth:`send`,
        addressed to ``to`` and ``user`` (see :class:`feeds.Publisher`). The body holds
        no newline, which separates the events of a message: the address is one word
        of a client id (no newline allowed) and a percent-encoded user, and the JSON
        encoder writes no whitespace and escapes the newlines inside strings.

        Raises ``TypeError`` when ``data`` is not the channel's payload or a price has
        no symbol: a bug in the producer, caught where it happens.
        """
        check_event(channel, data, symbol)
        timestamp = utc_now()
        message: EventMessage
        if symbol is not None:
            message = PriceUpdate(
                symbol=symbol, data=typing.cast(PriceData, data), seq=0, timestamp=timestamp
            )
        else:
            message_class = typing.cast(Callable[..., EventMessage], CHANNEL_EVENTS[channel][0])
            message = message_class(data=data, seq=0, timestamp=timestamp)
        body = address(to, user) + b" " + encode(message, Codec.JSON)
        return Prepared(channel, symbol if symbol is not None else str(channel), body)

    async def send(
        self, events: Sequence[Prepared], *, lane: str | None = None, counter: int = 0
    ) -> list[int]:
        """Publish ``events`` (at least one), in order: one call of the :data:`PUBLISH`
        script, so all of them or none, and one pub/sub message. Returns their seqs.

        ``lane`` and ``counter`` make a retry safe: a lane is one sender's sequence of
        calls (``counter`` counts them from 1, each sent until Redis confirms it), and
        Redis remembers the last counter of each lane for a day. A retry of a batch
        that Redis did publish (the connection broke before the answer) is then not
        published again: no seqs (an empty list) are returned instead.

        Raises :exc:`NotActive` when the publisher is fenced and the lock is not its
        token's, and what the client raises when Redis cannot be reached; and
        ``ValueError`` for no events, before Redis is asked (the nodes could not read
        an empty message).
        """
        if not events:
            raise ValueError("a batch holds at least one event")
        args: list[str | bytes | int] = [
            uuid.uuid4().hex,
            self._events,
            self._history_messages,
            self._history_ms,
            self._fence,
            counter if lane is not None else "",
            LANE_TTL_MS,
        ]
        for event in events:
            args += (event.stream, _HISTORY_INDEX.get(event.channel, 0), event.body)
        reply: object = await self._script(
            keys=(*KEYS, FEED_LOCK_KEY, LANE_PREFIX + (lane or "-")), args=args
        )
        if reply == NOT_ACTIVE:
            raise NotActive("Redis refused the events: this feed no longer holds the feed lock")
        if reply == ALREADY_PUBLISHED:
            return []
        seqs = typing.cast(list[int], reply)
        self.published += len(seqs)
        return seqs

    async def publish(
        self,
        channel: Channel,
        data: EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
        user: str | None = None,
    ) -> None:
        """Stamp ``data`` with the publish time and publish it in Redis, addressed to
        ``to`` and ``user`` (see the class and :meth:`prepare`)."""
        await self.send([self.prepare(channel, data, symbol=symbol, to=to, user=user)])


@attrs.frozen
class _Entry:
    """One event as Redis keeps it: ``SEQ MS TO JSON``."""

    seq: int
    ms: int
    to: str | None
    user: str | None
    body: bytes

    @classmethod
    def parse(cls, raw: bytes) -> _Entry:
        seq, ms, word, body = raw.split(b" ", 3)
        to, user = parse_address(word)
        return cls(int(seq), int(ms), to, user, body)


def _pairs(flat: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
    return zip(flat[::2], flat[1::2], strict=True)


async def last_prices(client: coredis.Redis[bytes]) -> dict[str, PriceData]:
    """The last price of each symbol that Redis keeps, by symbol: where a feed that
    takes over carries the prices on from."""
    kept = await client.hgetall(PRICES_KEY)
    prices = {}
    for symbol, raw in kept.items():
        message = typing.cast(PriceUpdate, decode_server(_Entry.parse(raw).body))
        prices[symbol.decode()] = message.data
    return prices


class _Stalled(Exception):
    """Redis left the node waiting past a deadline (a paused or unreachable server)."""


class RedisBus:
    """A node's bus: publishes into Redis, and hands what Redis publishes to the hub.

    :meth:`run` is the service that follows Redis (see the module doc); it reports
    started once the hub holds Redis's epoch, history and last prices, and raises if
    Redis cannot be reached then. :meth:`publish` works while it runs and the node is
    live (:attr:`connected`).

    ``probe_interval``, ``probe_timeout`` and ``connect_timeout`` (seconds, see the
    module doc) default to :data:`PROBE_INTERVAL`, :data:`PROBE_TIMEOUT` and
    :data:`CONNECT_TIMEOUT`; ``heartbeat`` is the node's report interval, and
    ``disconnect_wait`` how long a disconnect waits for the nodes' answers
    (``_cluster``). ``clock`` is the hub's monotonic clock.
    """

    def __init__(
        self,
        url: str,
        *,
        history_messages: int,
        history_seconds: float,
        clock: Callable[[], float] = trio.current_time,
        probe_interval: float = PROBE_INTERVAL,
        probe_timeout: float = PROBE_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        heartbeat: float = HEARTBEAT,
        disconnect_wait: float = DISCONNECT_WAIT,
    ) -> None:
        self.url = url
        self._heartbeat = heartbeat
        self._disconnect_wait = disconnect_wait
        self.events = events_channel(url)
        self.control = control_channel(url)
        self._history_messages = history_messages
        self._history_seconds = history_seconds
        self._clock = clock
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._connect_timeout = connect_timeout
        self._hub: Hub | None = None
        #: The node's part in the cluster-wide rules; set by :meth:`attach`.
        self.membership: Membership
        self._publisher: RedisPublisher | None = None
        self._client: coredis.Redis[bytes] | None = None
        self._epoch: bytes | None = None
        #: The last seq handed to the hub, per stream (channel name or symbol).
        self._positions: dict[bytes, int] = {}
        self._channels = {channel.value.encode(): channel for channel in HISTORY_CHANNELS}
        self._live = False
        #: When the node stopped being live (``clock``'s time); None while it is.
        self._down_since: float | None = None
        #: Catch-ups since start (the first one included).
        self.catch_ups = 0
        #: Times the node's link to Redis was lost since start.
        self.interruptions = 0

    @property
    def connected(self) -> bool:
        """Whether the node follows Redis live: caught up, subscribed, and Redis
        answering. False before :meth:`run` has started, and while it reconnects:
        the node is then not ready for new clients, and its publishes are refused."""
        return self._live

    @property
    def client(self) -> coredis.Redis[bytes] | None:
        """The client of the node's own requests (publishes, the alert rules API)
        while the node follows Redis live (:attr:`connected`); ``None`` otherwise."""
        return self._client if self._live else None

    def attach(self, hub: Hub) -> None:
        """Deliver to ``hub``, and hold its client ids once in the cluster
        (:attr:`membership`); before :meth:`run`."""
        self._hub = hub
        self.membership = Membership(
            hub,
            control=self.control,
            heartbeat=self._heartbeat,
            disconnect_wait=self._disconnect_wait,
        )

    async def publish(
        self,
        channel: Channel,
        data: EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
        user: str | None = None,
    ) -> None:
        """Publish through Redis, to every node (this one included, once Redis
        announces it), addressed to ``to`` and ``user`` (see :class:`feeds.Publisher`).
        Returns once Redis confirms it: while Redis is paused, that is when it resumes.

        Raises :exc:`PublishUnavailable` at once, having sent nothing, while the node
        is not live (Redis away, or :meth:`run` not running); and with ``sent`` True
        when the call to Redis failed (the event may have been published). Raises
        ``TypeError`` for data that is not the channel's (see
        :meth:`RedisPublisher.prepare`).
        """
        publisher = self._publisher
        if publisher is None or not self._live:
            raise PublishUnavailable(
                "This node has lost its connection to Redis and is reconnecting: the "
                "event was not published; retry later",
                sent=False,
            )
        event = publisher.prepare(channel, data, symbol=symbol, to=to, user=user)
        try:
            await publisher.send([event])
        except Exception as exc:
            if not unreachable(exc):
                raise
            raise PublishUnavailable(
                f"Redis did not confirm the event ({failure(exc)}): it may or may not "
                "have been published",
                sent=True,
            ) from exc

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow Redis until cancelled (see the module doc).

        Raises :exc:`BusUnavailable` if the first connection or catch-up fails. Once
        started, a lost link is logged, announced to subscribers, and retried with
        backoff (from ``INITIAL_BACKOFF`` doubling to ``MAX_BACKOFF``), each time with
        a catch-up.
        """
        if self._hub is None:
            raise RuntimeError("attach the bus to a hub before running it")
        async with open_redis(self.url) as client:  # publishes: outlives subscriptions
            self._client = client
            self._publisher = RedisPublisher(
                client,
                events=self.events,
                history_messages=self._history_messages,
                history_seconds=self._history_seconds,
            )
            try:
                await self._keep_following(task_status)
            finally:
                self._publisher = self._client = None
                self._live = False

    async def _keep_following(self, task_status: trio.TaskStatus[None]) -> None:
        """:meth:`_follow`, and again after each lost link, with backoff."""
        backoff = INITIAL_BACKOFF
        while True:
            try:
                await self._follow(task_status)
                problem = "the subscription ended"
            except Exception as exc:
                if self._epoch is None:  # never caught up: the node cannot start
                    raise BusUnavailable(
                        f"Cannot use Redis at {redacted(self.url)}: {failure(exc)}"
                    ) from None
                if isinstance(exc, _Stalled):
                    problem = str(exc)
                else:
                    problem = failure(exc)
                    if not unreachable(exc):  # a bug: its traceback
                        logger.error("Following Redis failed", exc_info=exc)
            task_status = trio.TASK_STATUS_IGNORED
            if self._live:  # a new interruption: start again from the shortest wait
                backoff = INITIAL_BACKOFF
            self._interrupted(problem)
            logger.info("Reconnecting to Redis in %gs", backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _follow(self, task_status: trio.TaskStatus[None]) -> None:
        """Connect, subscribe, catch up, report started, deliver; returns (or raises)
        when the link is lost. Raises :exc:`_Stalled` when Redis takes longer than
        ``connect_timeout`` to get there, or leaves a probe unanswered."""
        stalled = f"Redis did not answer within {self._connect_timeout:g}s"
        with trio.CancelScope(deadline=trio.current_time() + self._connect_timeout) as scope:
            async with open_redis(self.url) as client:
                await load_scripts(client)
                self._check_symbols(await client.get(SYMBOLS_KEY))
                catch_up = client.register_script(CATCH_UP)
                with closed_on_teardown():
                    async with client.pubsub(
                        channels=[self.events, self.control],
                        ignore_subscribe_messages=True,
                        retry_policy=None,
                    ) as pubsub:
                        await self._catch_up(catch_up)
                        # From now on only the probe cancels the scope.
                        scope.deadline = math.inf
                        stalled = f"Redis left a PING unanswered for {self._probe_timeout:g}s"
                        self._resumed()
                        task_status.started()
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._probe, client, scope)
                            nursery.start_soon(self.membership.run, client)
                            await self._deliver_published(pubsub, catch_up)
                            nursery.cancel_scope.cancel()
        if scope.cancelled_caught:
            raise _Stalled(stalled)

    async def _deliver_published(self, pubsub: typing.Any, catch_up: Script[bytes]) -> None:
        control = self.control.encode()
        async for message in pubsub:
            data = typing.cast(bytes, message["data"])
            if message["channel"] == control:
                self.membership.control(data)
                continue
            for event in data.split(b"\n"):  # a batch: one event a line, in seq order
                if not self._receive(event):
                    # Redis ran the catch-up after it published this message: the
                    # node now holds every event of it.
                    await self._catch_up(catch_up)
                    break

    async def _probe(self, client: coredis.Redis[bytes], scope: trio.CancelScope) -> None:
        """PING Redis every ``probe_interval``; cancel ``scope`` (the node's link) when
        one is not answered within ``probe_timeout``. A failed PING raises."""
        while True:
            await trio.sleep(self._probe_interval)
            with trio.move_on_after(self._probe_timeout):
                await client.ping()
                continue
            scope.cancel()
            return

    def _resumed(self) -> None:
        """The node is live again: say so, if it had been interrupted."""
        assert self._hub is not None
        self._live = True
        logger.info(
            "Following Redis at %s (epoch %s)",
            redacted(self.url),
            self._epoch.decode() if self._epoch else "?",
        )
        if self._down_since is None:
            return
        down = self._clock() - self._down_since
        self._down_since = None
        self._hub.announce(
            NotificationData(
                id=uuid.uuid4().hex,
                message=f"Live data is back: caught up with the message store after "
                f"{down:.1f} s; nothing published meanwhile was lost",
                type=NotificationType.SUCCESS,
            )
        )

    def _interrupted(self, problem: str) -> None:
        """The node's link to Redis is lost: log it and, the first time since it was
        live, tell the subscribers of notifications."""
        assert self._hub is not None
        if not self._live:
            logger.error("Redis at %s: %s", redacted(self.url), problem)
            return
        self._live = False
        self._down_since = self._clock()
        self.interruptions += 1
        logger.warning(
            "Lost Redis at %s (%s): live data is interrupted; reconnecting",
            redacted(self.url),
            problem,
        )
        self._hub.announce(
            NotificationData(
                id=uuid.uuid4().hex,
                message="Live data interrupted: this server lost its connection to the "
                "message store and is reconnecting; messages published meanwhile follow "
                "once it is back",
                type=NotificationType.WARNING,
            )
        )

    def _check_symbols(self, stored: bytes | None) -> None:
        assert self._hub is not None
        if stored is not None and stored.decode().split() != list(self._hub.symbols):
            logger.error(
                "The feed's symbols differ from this node's (%s): start the nodes with "
                "the feed's --symbols (or --universe) and --feed",
                ", ".join(sorted(set(stored.decode().split()) ^ set(self._hub.symbols))[:20]),
            )

    def _receive(self, raw: bytes) -> bool:
        """Hand one published event to the hub unless the node has it already; False
        when it cannot be handed on without a catch-up (a new epoch, or a hole)."""
        epoch, stream, seq_text, _ms, word, body = raw.split(b" ", 5)
        if epoch != self._epoch:
            return False
        seq = int(seq_text)
        positions = self._positions
        last = positions.get(stream, 0)
        if seq <= last:
            return True
        if seq != last + 1 and stream in self._channels:
            return False  # prices are state: a newer one needs nothing before it
        to, user = parse_address(word)
        self._deliver(body, seq, to, user, self._clock())
        positions[stream] = seq
        return True

    def _deliver(self, body: bytes, seq: int, to: str | None, user: str | None, at: float) -> None:
        assert self._hub is not None
        message = typing.cast(EventMessage, decode_server(body))
        self._hub.deliver(attrs.evolve(message, seq=seq), to, user, at=at)

    async def _catch_up(self, script: Script[bytes]) -> None:
        """Bring the hub up to Redis: the epoch, every stream's position, each
        channel's history after the node's position, every newer last price."""
        assert self._hub is not None
        hub, positions = self._hub, self._positions
        args: list[str | bytes | int] = [uuid.uuid4().hex, self._epoch or b""]
        args += [positions.get(channel.value.encode(), 0) for channel in HISTORY_CHANNELS]
        reply = typing.cast(list[typing.Any], await script(keys=KEYS, args=args))
        epoch: bytes = reply[0]
        now_ms: bytes = reply[1]
        seqs: list[bytes] = reply[2]
        prices: list[bytes] = reply[3]
        histories: list[list[bytes]] = reply[4:]
        self.catch_ups += 1
        now, redis_ms = self._clock(), int(now_ms)
        if epoch != self._epoch:
            if self._epoch is not None:
                self._history_lost(self._epoch, epoch)
            self._epoch = epoch
            positions.clear()
            hub.restart(epoch.decode())

        def age(entry: _Entry) -> float:
            return now - max(0, redis_ms - entry.ms) / 1000

        for symbol, raw in _pairs(prices):
            entry = _Entry.parse(raw)
            if entry.seq > positions.get(symbol, 0):
                self._deliver(entry.body, entry.seq, entry.to, entry.user, age(entry))
                positions[symbol] = entry.seq
        newest = dict(_pairs(seqs))
        for channel, entries in zip(HISTORY_CHANNELS, histories, strict=True):
            stream = channel.value.encode()
            last = positions.get(stream, 0)
            for raw in entries:
                entry = _Entry.parse(raw)
                if entry.seq <= last:
                    continue
                if entry.seq != last + 1:
                    self._lost(channel, last, entry.seq - 1)
                self._deliver(entry.body, entry.seq, entry.to, entry.user, age(entry))
                last = entry.seq
            head = int(newest.get(stream, 0))
            if head > last:  # aged or trimmed out of Redis before this node saw them
                self._lost(channel, last, head)
                last = head
            positions[stream] = last

    def _history_lost(self, old: bytes, new: bytes) -> None:
        """Redis lost the history the node's connections count in: tell them, and
        close them with 1001 (after what is pending), so that they reconnect into the
        new epoch and learn from their refused resume what they missed."""
        assert self._hub is not None
        hub = self._hub
        outboxes = hub.outboxes()
        logger.warning(
            "Redis lost the history (epoch %s is now %s): closing %d connections with "
            "1001; their resumes get history_unavailable",
            old.decode(),
            new.decode(),
            len(outboxes),
        )
        hub.announce(
            NotificationData(
                id=uuid.uuid4().hex,
                message="The message store lost its history (it restarted without its "
                "data): messages may be missing. Reconnect and resync",
                type=NotificationType.ERROR,
            )
        )
        for outbox in outboxes:
            outbox.close(
                CloseCode.GOING_AWAY,
                "History lost: the message store restarted; reconnect and resync",
                flush=True,
            )

    def _lost(self, channel: Channel, last: int, seq: int) -> None:
        assert self._hub is not None
        if last:
            logger.warning(
                "Messages %d to %d of %s left Redis's history before this node had them",
                last + 1,
                seq,
                channel,
            )
        self._hub.forget(channel, seq)
