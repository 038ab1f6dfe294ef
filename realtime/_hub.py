"""The hub: who is subscribed to what, and fan-out of each event with prepared frames.

Theory of operation
-------------------
The registry maps each channel to the outboxes subscribed to all of it (for prices:
to every symbol) and each price symbol to the outboxes subscribed to that symbol. A
connection's selection on prices is either every symbol or a set, never both, so a
price reaches each subscriber once.

``publish`` turns an :class:`Event` into the channel's message, stamping its ``seq``
(per stream: a channel, or for prices a symbol), then builds the message's complete
WebSocket frame once per codec in use and offers the same bytes to every
subscriber's outbox. Offers never block: prices conflate in the outbox, other
messages overflow it into a 4499 close (see ``_outbox``). Nothing here awaits, so
a publish, a subscribe with its snapshot or replay, and an unsubscribe are each
atomic with respect to the others: a client never sees a message twice or misses
one between its replay and its live stream.

Addressing: an event may name a client id (``to``), a user (``user``, a token's
``sub``), or both. It then reaches a subscriber only if that subscriber's client id is
``to`` and its connection is ``user``'s, where given: a per-user event is offered to
the user's own connections (the registry indexes them by user), never filtered out
of a walk over everyone. History keeps each message's address, and a replay gives a
connection only what was addressed to it, so a resume never replays another user's
message. A client id is held by one user at a time: :meth:`Hub.register` refuses
(:exc:`ClientIdTaken`) a connection whose id another user's connection holds, and a
newer connection of the same user replaces the older one (4409), as before.

The registered client ids are also kept sorted, so that ``GET /ws/stats`` can list a
page of them in id order in O(log n + page), whatever the number of connections.

History keeps the last ``history_messages`` messages of each non-price stream for
at most ``history_seconds``, for resume with ``since``; prices keep only the last
message per symbol, which is sent after a subscribe (prices are state, not events).

A node of a cluster numbers nothing itself: its Redis bus hands the hub messages
numbered in Redis, in order, through :meth:`Hub.deliver` (see ``_redis_bus``). What
the node alone knows (its link to Redis is down or back, it drains) goes out through
:meth:`Hub.announce` as a ``notification`` with ``seq`` 0: outside the numbered
stream, so it can never collide with Redis's numbering, and kept in no history. The
bus also watches connections come and go (:meth:`Hub.watch_clients`), to make a
client id unique across the cluster.

A node's hub may be behind a client: a client cut from another node right after that
node delivered seq N resumes here with ``since`` N before this node has received N
from Redis. :meth:`Hub.notify_at` lets its session wait for the hub to get there
(bounded, see ``_sessions``): :meth:`Hub.deliver` wakes it when the channel reaches
the position, and so do :meth:`Hub.forget` and :meth:`Hub.restart`, after which
the resume is answered from what the hub holds then.
"""

from __future__ import annotations

import logging
import typing
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime
from typing import Final

import attrs
from sortedcontainers import SortedList

from protocol import (
    ALL_SYMBOLS,
    CHANNEL_EVENTS,
    Change,
    Channel,
    CloseCode,
    Codec,
    ErrorCode,
    EventData,
    EventMessage,
    Notification,
    NotificationData,
    PriceData,
    PriceUpdate,
    RemoteProtocolError,
    encode,
)

from ._outbox import Outbox
from .ws import build_frame

logger = logging.getLogger("realtime.hub")

#: The channel of each event message class.
_CHANNEL_OF: Final = {
    message_class: channel for channel, (message_class, _) in CHANNEL_EVENTS.items()
}


@attrs.frozen
class Event:
    """One thing to publish, as the bus carries it: not yet numbered."""

    channel: Channel
    data: EventData
    timestamp: datetime
    symbol: str | None = None
    #: Deliver only to this client id (if subscribed), instead of every subscriber.
    to: str | None = None
    #: Deliver only to this user's connections (those subscribed).
    user: str | None = None


class ClientIdTaken(Exception):
    """:meth:`Hub.register` of a client id that another user's connection holds."""

    def __init__(self, client_id: str) -> None:
        super().__init__(f"client id {client_id!r} is held by another user's connection")
        self.client_id = client_id


class _Frames:
    """A message's wire frames, built once per codec on first use."""

    __slots__ = ("json", "message", "msgpack")

    def __init__(self, message: EventMessage) -> None:
        self.message = message
        self.json = build_frame(encode(message, Codec.JSON), text=True)
        self.msgpack: bytes | None = None

    def get(self, codec: Codec) -> bytes:
        if codec is Codec.JSON:
            return self.json
        if self.msgpack is None:
            self.msgpack = build_frame(encode(self.message, Codec.MSGPACK), text=False)
        return self.msgpack


#: One message in history: seq, monotonic time, target client id, target user, frames.
_Held = tuple[int, float, str | None, str | None, _Frames]


@attrs.frozen
class HubStatistics:
    """A snapshot of the hub's counters and registry sizes."""

    total_connections: int
    clients: tuple[str, ...]
    channel_subscriptions: dict[str, int]
    symbol_subscriptions: dict[str, int]
    published: int
    offered: int
    conflated: int
    slow_consumer_closes: int
    replaced: int
    outbox_depth: int
    outbox_max_depth: int


class Hub:
    """Registry and fan-out; synchronous, owned by one Trio run (no locking needed).

    ``clock`` gives the monotonic time used to age history (``trio.current_time``
    in the server); ``universe`` is the set of known price symbols.
    ``after_fan_out`` is called after each published event has been offered to every
    subscriber (the delivery bounds how long a burst of them may wait, see
    ``_delivery``).
    """

    def __init__(
        self,
        *,
        universe: Iterable[str],
        clock: Callable[[], float],
        history_messages: int = 1000,
        history_seconds: float = 600.0,
        epoch: str | None = None,
        after_fan_out: Callable[[], None] = lambda: None,
    ) -> None:
        #: The known price symbols, in the feed's order (for ``welcome``), and as a set.
        self.symbols: tuple[str, ...] = tuple(universe)
        self.universe: frozenset[str] = frozenset(self.symbols)
        self._names = {symbol: symbol for symbol in self.symbols}
        #: Identity of this history: a restart of the in-process bus loses history.
        self.epoch = epoch or uuid.uuid4().hex
        self._clock = clock
        self._after_fan_out = after_fan_out
        self._history_messages = history_messages
        self._history_seconds = history_seconds
        self._clients: dict[str, Outbox] = {}
        #: The keys of ``_clients``, sorted: pages of ``/ws/stats`` in id order.
        self._client_ids: SortedList[str] = SortedList()
        #: Each user's open connections (replaced ones leave at once).
        self._users: dict[str, set[Outbox]] = {}
        self._channel_subscribers: dict[Channel, set[Outbox]] = {c: set() for c in Channel}
        self._symbol_subscribers: dict[str, set[Outbox]] = {}
        self._last_prices: dict[str, _Frames] = {}
        self._seqs: dict[Channel | str, int] = {}
        # Per channel: (seq, monotonic time, target client or None, target user or None,
        # frames).
        self._history: dict[Channel, deque[_Held]] = {
            c: deque(maxlen=history_messages) for c in Channel if c is not Channel.PRICES
        }
        self.published = 0
        self.offered = 0
        self.conflated = 0
        self.slow_consumer_closes = 0
        self.replaced = 0
        self._registered: Callable[[Outbox], None] = _ignore
        self._unregistered: Callable[[Outbox], None] = _ignore
        #: Per channel, what to call once the channel reaches a seq: wake -> that seq.
        #: A channel with none has no entry, so delivery checks one empty dict.
        self._awaited: dict[Channel, dict[Callable[[], None], int]] = {}

    def add_symbols(self, symbols: Iterable[str]) -> tuple[str, ...]:
        """Grow the universe by ``symbols`` not in it yet (in order), and return them.

        Only ever grows: a connection may hold any symbol it ever had. Validation is
        the caller's (``_universe.PriceUniverse``, which also bounds the size).
        """
        added = tuple(dict.fromkeys(s for s in symbols if s not in self.universe))
        if added:
            self.symbols += added
            self.universe = self.universe.union(added)
            self._names.update((symbol, symbol) for symbol in added)
        return added

    # --- connections ------------------------------------------------------------

    def register(self, outbox: Outbox) -> Outbox | None:
        """Add a connection; an older one of the same user with the same client id is
        closed with 4409 and returned. Raises :exc:`ClientIdTaken`, changing nothing,
        when another user's connection holds the client id."""
        older = self._clients.get(outbox.client_id)
        if older is not None and older.user != outbox.user:
            raise ClientIdTaken(outbox.client_id)
        self._clients[outbox.client_id] = outbox
        if outbox.user is not None:
            self._users.setdefault(outbox.user, set()).add(outbox)
        if older is None:
            self._client_ids.add(outbox.client_id)
        else:
            self.replaced += 1
            self._leave_user(older)
            older.close(
                CloseCode.REPLACED, "Replaced by a newer connection with the same client id"
            )
        self._registered(outbox)
        return older

    def unregister(self, outbox: Outbox, subscriptions: Iterable[Change]) -> None:
        """Forget a connection; ``subscriptions`` are the changes that drop what it held."""
        for change in subscriptions:
            self.apply(outbox, change)
        if self._clients.get(outbox.client_id) is outbox:
            del self._clients[outbox.client_id]
            self._client_ids.remove(outbox.client_id)
            self._leave_user(outbox)
            self._unregistered(outbox)

    def watch_clients(
        self, registered: Callable[[Outbox], None], unregistered: Callable[[Outbox], None]
    ) -> None:
        """Call ``registered(outbox)`` after each :meth:`register`, and
        ``unregistered(outbox)`` when a registered connection leaves (not when one
        replaced with 4409 does: it left the registry when it was replaced). Both are
        called inside the hub's own calls and must not block. A cluster node's bus uses
        them to make a client id unique across nodes (``_cluster``)."""
        self._registered = registered
        self._unregistered = unregistered

    def _leave_user(self, outbox: Outbox) -> None:
        user = outbox.user
        if user is None:
            return
        mine = self._users.get(user)
        if mine is not None:
            mine.discard(outbox)
            if not mine:
                del self._users[user]

    @property
    def connection_count(self) -> int:
        return len(self._clients)

    def holder(self, client_id: str) -> Outbox | None:
        """The connection registered with ``client_id``, if any."""
        return self._clients.get(client_id)

    def connections_of(self, user: str) -> list[Outbox]:
        """The open connections of ``user`` (those replaced with 4409 are gone)."""
        return list(self._users.get(user, ()))

    def connection_count_of(self, user: str) -> int:
        """How many connections ``user`` has open."""
        mine = self._users.get(user)
        return 0 if mine is None else len(mine)

    def outboxes(self) -> list[Outbox]:
        return list(self._clients.values())

    def clients_page(self, limit: int, after: str | None = None) -> tuple[list[Outbox], bool]:
        """Up to ``limit`` connections, by client id (code-point order), starting after
        the id ``after`` (which need not be connected; ``None``: from the first), and
        whether more follow. O(log n + limit): it never walks every connection."""
        ids = self._client_ids
        start = 0 if after is None else ids.bisect_right(after)
        clients = self._clients
        page = [clients[client_id] for client_id in ids.islice(start, start + limit)]
        return page, start + limit < len(ids)

    # --- subscriptions ------------------------------------------------------------

    def apply(self, outbox: Outbox, change: Change) -> None:
        """Update the registry for one change of one connection's selection."""
        channel = change.channel
        old, new = change.old, change.new
        if old is ALL_SYMBOLS and new is not ALL_SYMBOLS:
            self._channel_subscribers[channel].discard(outbox)
        elif new is ALL_SYMBOLS and old is not ALL_SYMBOLS:
            self._channel_subscribers[channel].add(outbox)
        old_symbols = old if isinstance(old, frozenset) else frozenset()
        new_symbols = new if isinstance(new, frozenset) else frozenset()
        for symbol in old_symbols - new_symbols:
            subscribers = self._symbol_subscribers[symbol]
            subscribers.discard(outbox)
            if not subscribers:
                del self._symbol_subscribers[symbol]
        for symbol in new_symbols - old_symbols:
            self._symbol_subscribers.setdefault(symbol, set()).add(outbox)

    def canonical(self, symbols: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """The universe's own string objects for ``symbols``, so that thousands of
        subscriptions share one copy of each name instead of keeping the decoded ones."""
        if symbols is None:
            return None
        names = self._names
        return tuple(names.get(symbol, symbol) for symbol in symbols)

    def offer_snapshot(self, outbox: Outbox, symbols: Iterable[str] | None) -> None:
        """Offer the last known price of each of ``symbols`` (``None``: every symbol)."""
        last_prices = self._last_prices
        for symbol in last_prices if symbols is None else symbols:
            frames = last_prices.get(symbol)
            if frames is not None:
                outbox.offer_price(symbol, frames.get(outbox.codec))

    def position(self, channel: Channel) -> int:
        """The last ``seq`` numbered on the non-price ``channel`` (0 before the first):
        where a subscription made now starts, as ``subscribed.seq`` tells the client."""
        return self._seqs.get(channel, 0)

    def notify_at(self, channel: Channel, seq: int, wake: Callable[[], None]) -> None:
        """Call ``wake()`` once, when the non-price ``channel`` reaches ``seq`` (delivered
        to this hub or forgotten up to it) or a new history begins (:meth:`restart`),
        unless :meth:`cancel_notify` comes first. ``wake`` must not block. For a node's
        hub, which follows the numbering of another bus (:meth:`deliver`)."""
        self._awaited.setdefault(channel, {})[wake] = seq

    def cancel_notify(self, channel: Channel, wake: Callable[[], None]) -> None:
        """Forget ``wake`` (given to :meth:`notify_at`), if it was not called yet."""
        awaited = self._awaited.get(channel)
        if awaited is not None:
            awaited.pop(wake, None)
            if not awaited:
                del self._awaited[channel]

    def _reached(self, channel: Channel, seq: int) -> None:
        awaited = self._awaited.get(channel)
        if awaited is None:
            return
        for wake, wanted in list(awaited.items()):
            if wanted <= seq:
                del awaited[wake]
                wake()
        if not awaited:
            del self._awaited[channel]

    def replay(
        self, channel: Channel, since: int, epoch: str, client_id: str, user: str | None = None
    ) -> list[_Frames]:
        """The channel's held messages with ``seq > since`` addressed to the connection
        ``client_id`` of ``user`` (every message addressed to nobody in particular, and
        those addressed to it), in order.

        Raises :class:`RemoteProtocolError` (``history_unavailable``) when ``epoch`` is
        not this history's or the messages after ``since`` are no longer all held.
        """
        if epoch != self.epoch:
            raise RemoteProtocolError(
                ErrorCode.HISTORY_UNAVAILABLE,
                f"History epoch {epoch!r} is gone (the server's is {self.epoch!r}): "
                "subscribe without 'since' and resync",
            )
        history = self._history[channel]
        self._expire(history)
        newest = self._seqs.get(channel, 0)
        oldest_held = history[0][0] if history else newest + 1
        if since > newest or since + 1 < oldest_held:
            raise RemoteProtocolError(
                ErrorCode.HISTORY_UNAVAILABLE,
                f"History of '{channel}' holds seq {oldest_held} to {newest}; "
                f"cannot replay after {since}: subscribe without 'since' and resync",
            )
        return [
            frames
            for seq, _, to, to_user, frames in history
            if seq > since
            and (to is None or to == client_id)
            and (to_user is None or to_user == user)
        ]

    def _expire(self, history: deque[_Held]) -> None:
        horizon = self._clock() - self._history_seconds
        while history and history[0][1] < horizon:
            history.popleft()

    # --- publishing -----------------------------------------------------------------

    def publish(self, event: Event) -> EventMessage:
        """Number, encode once per codec, and offer ``event`` to its subscribers.

        Raises ``ValueError`` for a price without a symbol, or of a symbol outside the
        universe (see :meth:`add_symbols`): a bug of the publisher, not a client's."""
        channel = event.channel
        message_class, _ = CHANNEL_EVENTS[channel]
        if channel is Channel.PRICES:
            symbol = event.symbol
            if symbol is None:
                raise ValueError("a price event needs its symbol")
            if symbol not in self.universe:
                # Else it would be published where nobody can subscribe: unknown_symbol.
                raise ValueError(
                    f"{symbol} is not in the price universe, so no client can subscribe "
                    "to it: add it first (--universe, server.universe.add(), or "
                    "universe.add() in a feed hook)"
                )
            seq = self._seqs[symbol] = self._seqs.get(symbol, 0) + 1
            message: EventMessage = PriceUpdate(
                symbol=symbol,
                data=typing.cast(PriceData, event.data),
                seq=seq,
                timestamp=event.timestamp,
            )
            frames = _Frames(message)
            self._last_prices[symbol] = frames
            if logger.isEnabledFor(logging.DEBUG):  # a dict lookup at info: the hot path
                logger.debug("[WebSocket] Broadcasting price update: %s", symbol)
            self._fan_out_price(symbol, frames, event.to, event.user)
        else:
            seq = self._seqs[channel] = self._seqs.get(channel, 0) + 1
            message = typing.cast(Callable[..., EventMessage], message_class)(
                data=event.data, seq=seq, timestamp=event.timestamp
            )
            frames = _Frames(message)
            history = self._history[channel]
            history.append((seq, self._clock(), event.to, event.user, frames))
            self._expire(history)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("[WebSocket] Broadcasting %s event", channel)
            self._fan_out(channel, frames, event.to, event.user)
        self.published += 1
        self._after_fan_out()
        return message

    def _addressed(
        self, subscribers: Collection[Outbox], to: str | None, user: str | None
    ) -> Collection[Outbox]:
        """Those of ``subscribers`` an event addressed to ``to`` and/or ``user`` reaches
        (at least one of them given): looked up by id, or among the user's own
        connections, whichever set is smaller, never by a walk over everyone."""
        if to is not None:
            target = self._clients.get(to)
            if target is None or target not in subscribers:
                return ()
            return (target,) if user is None or target.user == user else ()
        mine = self._users.get(user) if user is not None else None
        if not mine:
            return ()
        if len(mine) <= len(subscribers):
            return [outbox for outbox in mine if outbox in subscribers]
        return [outbox for outbox in subscribers if outbox.user == user]

    def _fan_out_price(
        self, symbol: str, frames: _Frames, to: str | None, user: str | None
    ) -> None:
        json_frame = frames.json
        offered = conflated = 0
        every: Collection[Outbox]
        for every in (
            self._channel_subscribers[Channel.PRICES],
            self._symbol_subscribers.get(symbol, ()),
        ):
            subscribers = every if to is None and user is None else self._addressed(every, to, user)
            for outbox in subscribers:
                frame = json_frame if outbox.codec is Codec.JSON else frames.get(outbox.codec)
                conflated += outbox.offer_price(symbol, frame)
                offered += 1
        self.offered += offered
        self.conflated += conflated

    def _fan_out(self, channel: Channel, frames: _Frames, to: str | None, user: str | None) -> None:
        subscribers: Collection[Outbox] = self._channel_subscribers[channel]
        if to is not None or user is not None:
            subscribers = self._addressed(subscribers, to, user)
        offered = 0
        for outbox in subscribers:
            if outbox.close_code is not None:
                continue  # closing: it takes nothing more
            if outbox.offer(frames.get(outbox.codec)):
                offered += 1
            else:
                self.slow_consumer_closes += 1
        self.offered += offered

    # --- following another bus's numbering -------------------------------------------

    def deliver(
        self,
        message: EventMessage,
        to: str | None = None,
        user: str | None = None,
        *,
        at: float,
    ) -> None:
        """Record and offer ``message``, already numbered by the bus that owns the
        sequence (Redis, see ``_redis_bus``), addressed as an :class:`Event`'s ``to`` and
        ``user``: as :meth:`publish` does, without numbering.

        ``at`` is the monotonic time (``clock``'s) it was published, from which its age
        in history counts. The caller hands each stream's messages in ``seq`` order,
        each following the last (or after :meth:`forget`): history must have no holes.
        """
        frames = _Frames(message)
        if type(message) is PriceUpdate:
            symbol = message.symbol
            self._seqs[symbol] = message.seq
            self._last_prices[symbol] = frames
            self._fan_out_price(symbol, frames, to, user)
        else:
            channel = _CHANNEL_OF[type(message)]
            self._seqs[channel] = message.seq
            history = self._history[channel]
            history.append((message.seq, at, to, user, frames))
            self._expire(history)
            self._fan_out(channel, frames, to, user)
            if self._awaited:
                self._reached(channel, message.seq)
        self.published += 1
        self._after_fan_out()

    def announce(self, data: NotificationData) -> None:
        """Offer ``data`` as a node-local ``notification`` to every subscriber of
        notifications: ``seq`` 0, which no numbered message has, kept in no history
        and never replayed, so that it cannot collide with the numbering of the bus
        that owns the sequence (Redis) nor move a client's position. For what this
        node alone knows and says to its own connections: its link to Redis is down or
        back, it drains."""
        frames = _Frames(Notification(data=data, seq=0, timestamp=utc_now()))
        self._fan_out(Channel.NOTIFICATIONS, frames, None, None)
        self._after_fan_out()

    def forget(self, channel: Channel, seq: int) -> None:
        """The messages of ``channel`` up to ``seq`` are lost to this hub: drop the
        history it holds, so that a resume from before ``seq`` is refused rather than
        given a replay with a hole, and count on from ``seq``."""
        self._seqs[channel] = seq
        self._history[channel].clear()
        self._reached(channel, seq)

    def restart(self, epoch: str) -> None:
        """A new history begins (the bus lost the old one): ``epoch`` from now on, every
        stream counting from 0 again, no history and no last prices. Resumes into the
        old epoch are refused. Subscriptions stay."""
        self.epoch = epoch
        self._seqs.clear()
        self._last_prices.clear()
        for history in self._history.values():
            history.clear()
        # The positions awaited count in the old epoch: their resumes are refused now.
        awaited, self._awaited = self._awaited, {}
        for wakes in awaited.values():
            for wake in wakes:
                wake()

    def last_price(self, symbol: str) -> PriceUpdate | None:
        frames = self._last_prices.get(symbol)
        return typing.cast(PriceUpdate, frames.message) if frames is not None else None

    # --- statistics -----------------------------------------------------------------

    def statistics(self) -> HubStatistics:
        depths = [outbox.depth for outbox in self._clients.values()]
        symbol_counts = {s: len(subs) for s, subs in self._symbol_subscribers.items()}
        all_prices = len(self._channel_subscribers[Channel.PRICES])
        if all_prices:
            symbol_counts = {s: symbol_counts.get(s, 0) + all_prices for s in sorted(self.universe)}
        channel_counts = {
            str(channel): len(subs) for channel, subs in self._channel_subscribers.items()
        }
        channel_counts[str(Channel.PRICES)] = all_prices + len(
            set().union(*self._symbol_subscribers.values())
        )
        return HubStatistics(
            total_connections=len(self._clients),
            clients=tuple(self._client_ids),
            channel_subscriptions=channel_counts,
            symbol_subscriptions=dict(sorted(symbol_counts.items())),
            published=self.published,
            offered=self.offered,
            conflated=self.conflated,
            slow_consumer_closes=self.slow_consumer_closes,
            replaced=self.replaced,
            outbox_depth=sum(depths),
            outbox_max_depth=max(depths, default=0),
        )


def _ignore(outbox: Outbox) -> None:
    pass


def utc_now() -> datetime:
    """The publish timestamp: wall-clock UTC."""
    return datetime.now(UTC)
