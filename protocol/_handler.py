"""The request handler of one connection, sans-IO.

Theory of operation
-------------------
A server keeps one :class:`RequestHandler` per connection and hands it each inbound
message with :meth:`~RequestHandler.receive`, together with the time on its own
monotonic clock (``now``) and the wall-clock UTC time it stamps replies with
(``timestamp``). The handler reads no clock and does no I/O: it answers with what
the server is to do.

``receive`` first records ``now`` as :attr:`~RequestHandler.heard` (the heartbeat's
proof of life), then passes the message through the rate limit, a token bucket of
``burst`` tokens refilled at ``rate`` per second. The bucket starts full, or with
what the same client's previous connection left when the server carries that over
(``tokens=``; :meth:`~RequestHandler.tokens` reads it), so that reconnecting refills
it no faster than waiting. A message that finds no token is
dropped unread and answered with a ``rate_limited`` error; that is a strike, and
when ``strikes`` of them fall within ``strike_window`` seconds the answer is a
:class:`Close` with 4429 instead, written after the errors that led to it. A
message that passes is decoded: bad input is answered with an ``error`` reply
echoing the request's ``id`` when it could be read, or, for an oversized message,
a :class:`Close` with 1009. A ``ping`` is answered with a ``pong``.

A ``subscribe`` or ``unsubscribe`` is returned as it is, because the server has a
say first: it may refuse a replay its history no longer holds, or a channel or symbols
the client's token does not grant. So is an ``auth``: checking a token is the
server's business. It then calls
:meth:`~RequestHandler.subscribe` or :meth:`~RequestHandler.unsubscribe`, which
apply the request to :attr:`~RequestHandler.subscriptions` and return an
:class:`Accepted` (the :class:`Change` for the server's registry and the ack), or
raise :class:`RemoteProtocolError` and change nothing; :meth:`~RequestHandler.refuse`
turns any such error into the ``error`` reply. On disconnect,
:meth:`~RequestHandler.unsubscribe_all` gives the changes that take the connection
out of the registry.

A gateway holds tens of thousands of these, so the state is slotted and small: the
bucket's level and last refill time, the time last heard, the subscriptions, and a
deque of recent strikes allocated at the first one (most connections never get one).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from datetime import datetime
from typing import Any

import attrs

from ._codec import Codec, Limits, decode_client
from ._codes import CloseCode, ErrorCode
from ._errors import RemoteProtocolError
from ._messages import (
    Auth,
    ErrorReply,
    Ping,
    Pong,
    RequestId,
    ServerMessage,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
)
from ._subscriptions import Change, Subscriptions


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"RateLimit.{attribute.name} must be greater than 0, got {value!r}")


@attrs.frozen
class RateLimit:
    """Inbound message rate of one connection: a token bucket plus strikes.

    Every value must be greater than 0; anything else raises :class:`ValueError`.
    """

    #: Messages per second the bucket refills at: the sustained rate.
    rate: float = attrs.field(default=20.0, validator=_positive)
    #: Tokens the bucket holds, and starts with: messages accepted at once above the rate.
    burst: int = attrs.field(default=40, validator=_positive)
    #: Breaches (dropped messages) within ``strike_window`` that close the connection
    #: with 4429.
    strikes: int = attrs.field(default=10, validator=_positive)
    #: Seconds, on the server's clock.
    strike_window: float = attrs.field(default=60.0, validator=_positive)
    #: Messages a replay (``since``) sends for the cost of one token: a replay is
    #: charged to the same bucket, which may go into debt, so that resubscribing with
    #: ``since`` again and again cannot multiply the server's work (see :meth:`charge`).
    replayed_per_token: float = attrs.field(default=10.0, validator=_positive)


@attrs.frozen
class Reply:
    """Send ``message`` to the client; nothing else to do."""

    message: ServerMessage


@attrs.frozen
class Close:
    """Close the connection with ``code`` and ``reason``; read nothing more.

    With ``flush`` the messages already pending for the client are written first
    (a 4429 shows the ``rate_limited`` errors that led to it); without it they are
    dropped (a 1009).
    """

    code: CloseCode
    reason: str
    flush: bool = False


@attrs.frozen
class Accepted:
    """A subscription request applied: the server updates its registry with
    ``change`` and sends ``reply``."""

    change: Change
    reply: Subscribed | Unsubscribed


class RequestHandler:
    """The requests of one connection: rate limit, decoding, subscriptions, replies.

    ``now`` arguments are seconds on one monotonic clock of the server's choosing
    (Trio's, say) and must not go backwards; ``timestamp`` arguments are the
    timezone-aware UTC times that replies carry. No method blocks, reads a clock or
    does I/O. Once :meth:`receive` has returned a :class:`Close`, the server reads
    no more from the connection.
    """

    __slots__ = (
        "_codec",
        "_level",
        "_limits",
        "_rate_limit",
        "_refilled",
        "_strikes",
        "heard",
        "subscriptions",
    )

    def __init__(
        self,
        *,
        codec: Codec,
        limits: Limits,
        rate_limit: RateLimit,
        now: float,
        tokens: float | None = None,
    ) -> None:
        """Start a connection at ``now`` with no subscriptions and ``tokens`` in its
        bucket: a full one (``rate_limit.burst``) by default. Fewer carry over what an
        earlier connection of the same client left (see :meth:`tokens`), so that
        reconnecting does not refill the bucket; more than the burst is capped.

        Raises :class:`ValueError` when ``limits.max_symbols`` is less than 1.
        """
        self._codec = codec
        self._limits = limits
        self._rate_limit = rate_limit
        #: The channels and symbols this connection holds, bounded by ``limits.max_symbols``.
        self.subscriptions = Subscriptions(limits.max_symbols)
        #: The ``now`` of the last :meth:`receive` (the constructor's until then).
        self.heard = now
        burst = float(rate_limit.burst)
        self._level = burst if tokens is None else min(burst, tokens)
        self._refilled = now
        self._strikes: deque[float] | None = None  # allocated on the first breach

    def receive(
        self, data: str | bytes, *, now: float, timestamp: datetime
    ) -> Reply | Close | Subscribe | Unsubscribe | Auth:
        """Take one inbound message, received at ``now``; say what to do about it.

        A :class:`Reply` answers a ``ping``, bad input (an ``error`` echoing the
        request's ``id`` when it could be read) or a message dropped by the rate
        limit (a ``rate_limited`` error without ``id``). A :class:`Close` ends the
        connection: 4429 when the rate limit was breached ``strikes`` times within
        ``strike_window``, 1009 for an oversized message. A :class:`Subscribe` or
        :class:`Unsubscribe` is the decoded request, which the server checks and
        then applies with :meth:`subscribe` or :meth:`unsubscribe`, or declines with
        :meth:`refuse`; an :class:`Auth` is the server's to check. Never raises for the
        client's input.
        """
        self.heard = now
        if not self._take_token(now):
            return self._breach(now, timestamp)
        try:
            message = decode_client(data, self._codec, self._limits)
        except RemoteProtocolError as exc:
            if exc.close_code is not None:
                return Close(exc.close_code, exc.message)
            return Reply(_error(exc.code, exc.message, exc.request_id, timestamp))
        if isinstance(message, Ping):
            return Reply(Pong(id=message.id, timestamp=timestamp))
        return message

    def subscribe(
        self,
        request: Subscribe,
        *,
        universe: Collection[str],
        timestamp: datetime,
        seq: int | None = None,
    ) -> Accepted:
        """Apply ``request`` to :attr:`subscriptions`; its symbols must be in ``universe``.

        The symbols are kept as the request's own string objects: a server that wants
        one copy of each name shared by every connection passes a request holding its
        own (``attrs.evolve``). ``since`` and ``epoch`` are the server's business, and
        so is ``seq``, the position the ack carries (see :class:`Subscribed`): only the
        server knows its history. Raises :class:`RemoteProtocolError`
        (``unknown_symbol``, ``too_many_symbols``, ``invalid_message``) and then
        changes nothing.
        """
        change = self.subscriptions.subscribe(request.channel, request.symbols, universe=universe)
        ack = Subscribed(
            channel=request.channel,
            symbols=change.ack_symbols,
            seq=seq,
            id=request.id,
            timestamp=timestamp,
        )
        return Accepted(change, ack)

    def unsubscribe(self, request: Unsubscribe, *, timestamp: datetime) -> Accepted:
        """Apply ``request`` to :attr:`subscriptions`.

        Symbols or channels not held are ignored. Raises :class:`RemoteProtocolError`
        (``invalid_message``: symbols off an every-symbol selection) and then changes
        nothing.
        """
        change = self.subscriptions.unsubscribe(request.channel, request.symbols)
        ack = Unsubscribed(
            channel=request.channel, symbols=change.ack_symbols, id=request.id, timestamp=timestamp
        )
        return Accepted(change, ack)

    def refuse(
        self,
        request: Subscribe | Unsubscribe,
        error: RemoteProtocolError,
        *,
        timestamp: datetime,
    ) -> Reply:
        """The ``error`` reply to ``request``, refused with ``error`` (by :meth:`subscribe`,
        :meth:`unsubscribe` or the server itself), echoing the request's ``id``."""
        return Reply(_error(error.code, error.message, request.id, timestamp))

    def charge_replay(self, messages: int) -> None:
        """Charge the replay of ``messages`` messages to the rate limit: one token per
        ``replayed_per_token``. The bucket may go below zero; requests are then
        refused as over the rate until it has refilled."""
        self._level -= messages / self._rate_limit.replayed_per_token

    def tokens(self, now: float) -> float:
        """The tokens the bucket holds at ``now``, refilled since the last message: at
        most the burst, below 0 while a replay's debt is being paid. Changes nothing."""
        limit = self._rate_limit
        return min(limit.burst, self._level + (now - self._refilled) * limit.rate)

    def unsubscribe_all(self) -> list[Change]:
        """Drop every subscription, as on disconnect; the changes that did it, one
        per channel that was held, for the server's registry."""
        subscriptions = self.subscriptions
        return [subscriptions.unsubscribe(channel) for channel, _ in subscriptions]

    def _take_token(self, now: float) -> bool:
        self._level = self.tokens(now)
        self._refilled = now
        if self._level >= 1:
            self._level -= 1
            return True
        return False

    def _breach(self, now: float, timestamp: datetime) -> Reply | Close:
        limit = self._rate_limit
        strikes = self._strikes
        if strikes is None:
            strikes = self._strikes = deque(maxlen=limit.strikes)
        strikes.append(now)
        if len(strikes) == limit.strikes and now - strikes[0] <= limit.strike_window:
            # Flushed: the client sees the rate_limited errors that led here.
            return Close(CloseCode.RATE_LIMITED, "Rate limit exceeded repeatedly", flush=True)
        return Reply(
            _error(
                ErrorCode.RATE_LIMITED,
                f"Rate limit exceeded: at most {limit.rate:g} messages per second "
                f"(burst {limit.burst}); this message was dropped",
                None,
                timestamp,
            )
        )


def _error(
    code: ErrorCode, text: str, request_id: RequestId | None, timestamp: datetime
) -> ErrorReply:
    return ErrorReply(error=text, code=code.value, id=request_id, timestamp=timestamp)
