"""The Redis bus: many gateway nodes, one stream (the design is in docs/cluster.md).

Theory of operation
-------------------
Redis holds what a single gateway's hub keeps in memory: the epoch, each stream's
``seq`` (a stream is a channel, or for prices a symbol, exactly as the hub numbers
them), the history of the non-price channels and the last price of each symbol.

Publishing (:class:`RedisPublisher`: the ``realtime feed`` process, and the publish
API of every node) is one call of the :data:`PUBLISH` Lua script per event, atomic in
Redis: it creates the epoch if there is none, increments the stream's seq, appends
the event with its seq to the channel's capped history (or, for a price, replaces
the symbol's last price), and ``PUBLISH``-es it on the events channel, all in O(1).
The event travels encoded as the protocol's JSON with ``seq`` 0; Redis prefixes the
real one: an entry is ``SEQ MS TO JSON`` (``MS`` Redis's clock, ``TO`` the event's
address in one word: the target client id, then ``@`` and the target user
percent-encoded when there is one, or empty for every subscriber), a published event
``EPOCH STREAM`` and the entry.

Following (:meth:`RedisBus.run`, in every node): subscribe to the events channel
first, then catch up: one :data:`CATCH_UP` script call returns, atomically, the
epoch, every stream's seq, every last price and each channel's history after the
node's position. From then on every published event is handed to the hub in seq
order (:meth:`Hub.deliver`), one decode per event per node whatever the number of
clients, and the hub encodes and frames it once per codec as for the in-process bus.
An event the node already has (the overlap of catch-up and subscription) is
skipped; a hole in a channel (an event lost while the node was disconnected) or a
new epoch makes the node catch up again before it delivers anything past it. So a
node's hub holds a copy of Redis's history, in order and without holes, and answers
a resume (``since`` + ``epoch``) from any node as the single gateway does; where the
copy cannot be completed (Redis trimmed what the node missed) the hub drops it
(:meth:`Hub.forget`), so the resume is refused with ``history_unavailable`` rather
than given a partial replay.

The epoch changes only when Redis loses the history: a script that finds no epoch
creates one (from a fresh random candidate) and deletes what the old one left.
"""

from __future__ import annotations

import logging
import typing
import uuid
from collections.abc import Callable, Iterator
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
    Codec,
    EventData,
    EventMessage,
    PriceData,
    PriceUpdate,
    decode_server,
    encode,
)

from ._hub import Hub, utc_now

logger = logging.getLogger("realtime.bus")

#: Seconds before the first reconnection to Redis; it doubles up to MAX_BACKOFF.
INITIAL_BACKOFF: Final = 0.5
MAX_BACKOFF: Final = 30.0

#: Every key shares the hash tag ``{realtime}``: one slot, so the scripts, which
#: touch them all, can run on Redis Cluster too.
EPOCH_KEY: Final = "{realtime}:epoch"
SEQ_KEY: Final = "{realtime}:seq"
PRICES_KEY: Final = "{realtime}:prices"
#: The feed's price universe, for nodes to check theirs against.
SYMBOLS_KEY: Final = "{realtime}:symbols"
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
# nothing) goes, and a new epoch begins.
_ENSURE_EPOCH: Final = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', unpack(KEYS, 2))
  redis.call('SET', KEYS[1], epoch)
end
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
"""

#: KEYS: :data:`KEYS`. ARGV: candidate epoch, events channel, stream, index of the
#: stream's history in KEYS (0: a price), ``TO JSON``, history messages, history
#: milliseconds. Returns the event's seq.
PUBLISH: Final = (
    _ENSURE_EPOCH
    + """
local seq = redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
local entry = seq .. ' ' .. ms .. ' ' .. ARGV[5]
local index = tonumber(ARGV[4])
if index == 0 then
  redis.call('HSET', KEYS[3], ARGV[3], entry)
else
  local history = KEYS[index]
  redis.call('RPUSH', history, entry)
  redis.call('LTRIM', history, -tonumber(ARGV[6]), -1)
  -- Age out from the oldest end: amortized O(1), and the new entry always stays.
  local horizon = ms - tonumber(ARGV[7])
  while tonumber(string.match(redis.call('LINDEX', history, 0), '^%d+ (%d+) ')) < horizon do
    redis.call('LPOP', history)
  end
end
redis.call('PUBLISH', ARGV[2], epoch .. ' ' .. ARGV[3] .. ' ' .. entry)
return seq
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


def failure(exc: BaseException) -> str:
    """What went wrong, in one line: the first error inside the exception groups that
    the client's task groups wrap errors in."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def events_channel(url: str) -> str:
    """The pub/sub channel of the database ``url`` names: pub/sub ignores databases,
    so two clusters on two databases of one Redis must not share it."""
    path = urlsplit(url).path.strip("/")
    return f"realtime:events:{path if path.isdigit() else '0'}"


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
def _closed_on_teardown() -> Iterator[None]:
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


def _check(channel: Channel, data: EventData, symbol: str | None) -> None:
    expected = CHANNEL_EVENTS[channel][1]
    if type(data) is not expected:
        raise TypeError(f"{channel} carries {expected.__name__}, not {type(data).__name__}")
    if (symbol is None) is (channel is Channel.PRICES):
        raise TypeError("a symbol is required on prices and only there")


class RedisPublisher:
    """A :class:`feeds.Publisher` into Redis: each event numbered, kept in history and
    announced to every node by one call of the :data:`PUBLISH` script.

    ``publish`` returns once Redis has it: one round trip, the backpressure. Raises
    what the client raises when Redis cannot be reached (``coredis`` errors); the
    event is then lost, or was published: never twice.
    """

    def __init__(
        self,
        client: coredis.Redis[bytes],
        *,
        events: str,
        history_messages: int,
        history_seconds: float,
    ) -> None:
        self._script = client.register_script(PUBLISH)
        self._events = events
        self._history_messages = history_messages
        self._history_ms = max(1, round(history_seconds * 1000))
        #: Events published since start.
        self.published = 0

    async def publish(
        self,
        channel: Channel,
        data: EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
        user: str | None = None,
    ) -> None:
        """Stamp ``data`` with the publish time and publish it in Redis (see the class),
        addressed to ``to`` and ``user`` (see :class:`feeds.Publisher`).

        Raises ``TypeError`` when ``data`` is not the channel's payload or a price has
        no symbol: a bug in the producer, caught where it happens.
        """
        _check(channel, data, symbol)
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
        await self._script(
            keys=KEYS,
            args=(
                uuid.uuid4().hex,
                self._events,
                symbol if symbol is not None else str(channel),
                _HISTORY_INDEX.get(channel, 0),
                body,
                self._history_messages,
                self._history_ms,
            ),
        )
        self.published += 1


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


class RedisBus:
    """A node's bus: publishes into Redis, and hands what Redis publishes to the hub.

    :meth:`run` is the service that follows Redis (see the module doc); it reports
    started once the hub holds Redis's epoch, history and last prices, and raises if
    Redis cannot be reached then. :meth:`publish` works while it runs.
    """

    def __init__(
        self,
        url: str,
        *,
        history_messages: int,
        history_seconds: float,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.url = url
        self.events = events_channel(url)
        self._history_messages = history_messages
        self._history_seconds = history_seconds
        self._clock = clock
        self._hub: Hub | None = None
        self._publisher: RedisPublisher | None = None
        self._epoch: bytes | None = None
        #: The last seq handed to the hub, per stream (channel name or symbol).
        self._positions: dict[bytes, int] = {}
        self._channels = {channel.value.encode(): channel for channel in HISTORY_CHANNELS}
        #: Catch-ups since start (the first one included).
        self.catch_ups = 0
        #: Whether the first connection got as far as following: a failure before that
        #: stops the start, one after is reconnected.
        self._followed = False

    def attach(self, hub: Hub) -> None:
        """Deliver to ``hub``; before :meth:`run`."""
        self._hub = hub

    @property
    def connected(self) -> bool:
        """Whether the node follows Redis now: subscribed and caught up, so that it
        delivers what is published and can publish. False while it reconnects."""
        return self._publisher is not None

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
        announces it). Raises ``RuntimeError`` unless :meth:`run` is running."""
        if self._publisher is None:
            raise RuntimeError("the Redis bus is not running")
        await self._publisher.publish(channel, data, symbol=symbol, to=to, user=user)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow Redis until cancelled (see the class).

        Raises :exc:`BusUnavailable` if the first connection or catch-up fails. Once
        started, a lost connection is logged and retried with backoff (from
        ``INITIAL_BACKOFF`` doubling to ``MAX_BACKOFF``), each time with a catch-up.
        """
        if self._hub is None:
            raise RuntimeError("attach the bus to a hub before running it")
        try:
            await self._follow(task_status)
        except Exception as exc:
            if not self._followed:
                raise BusUnavailable(
                    f"Cannot use Redis at {redacted(self.url)}: {failure(exc)}"
                ) from None
            # Started, then lost: coredis raises (ConnectionError) as often as it
            # returns when Redis goes away. Reconnect as after a return.
            logger.error("Redis at %s: %s", redacted(self.url), failure(exc))
        backoff = INITIAL_BACKOFF
        while True:
            logger.info("Reconnecting to Redis in %gs", backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            try:
                await self._follow(trio.TASK_STATUS_IGNORED)
            except Exception as exc:
                logger.error("Redis at %s: %s", redacted(self.url), failure(exc))
            else:
                backoff = INITIAL_BACKOFF

    async def _follow(self, task_status: trio.TaskStatus[None]) -> None:
        """Connect, subscribe, catch up, report started, deliver; returns (or raises)
        when the connection is lost."""
        async with open_redis(self.url) as client:
            await load_scripts(client)
            self._check_symbols(await client.get(SYMBOLS_KEY))
            catch_up = client.register_script(CATCH_UP)
            with _closed_on_teardown():
                await self._subscribed(client, catch_up, task_status)
        logger.warning("Lost the subscription to Redis at %s", redacted(self.url))

    async def _subscribed(
        self,
        client: coredis.Redis[bytes],
        catch_up: Script[bytes],
        task_status: trio.TaskStatus[None],
    ) -> None:
        async with client.pubsub(
            channels=[self.events], ignore_subscribe_messages=True, retry_policy=None
        ) as pubsub:
            await self._catch_up(catch_up)
            self._publisher = RedisPublisher(
                client,
                events=self.events,
                history_messages=self._history_messages,
                history_seconds=self._history_seconds,
            )
            self._followed = True
            logger.info(
                "Following Redis at %s (epoch %s)",
                redacted(self.url),
                self._epoch.decode() if self._epoch else "?",
            )
            task_status.started()
            try:
                async for message in pubsub:
                    if not self._receive(typing.cast(bytes, message["data"])):
                        await self._catch_up(catch_up)
            finally:
                self._publisher = None

    def _check_symbols(self, stored: bytes | None) -> None:
        assert self._hub is not None
        if stored is not None and stored.decode().split() != list(self._hub.symbols):
            logger.error(
                "The feed's symbols differ from this node's (%s): start the nodes with "
                "the feed's --symbols and --feed",
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
                logger.warning(
                    "Redis lost the history (epoch %s is now %s): resumes into the old "
                    "epoch get history_unavailable",
                    self._epoch.decode(),
                    epoch.decode(),
                )
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
