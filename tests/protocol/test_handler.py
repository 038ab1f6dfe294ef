"""The request handler of one connection: rate limit, decoding, subscriptions, replies."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import protocol as p
from protocol import ALL_SYMBOLS, Channel, CloseCode, Codec, ErrorCode
from protocol import ErrorCode as E

from .strategies import optional_ids, seqs

UNIVERSE = frozenset({"AAPL", "MSFT", "GOOG", "AMZN", "NVDA"})
LIMITS = p.Limits(max_message_size=1024, max_symbols=3)
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
DEFAULT_RATE = p.RateLimit()


def make(
    *,
    now: float = 0.0,
    codec: Codec = Codec.JSON,
    rate_limit: p.RateLimit = DEFAULT_RATE,
    limits: p.Limits = LIMITS,
) -> p.RequestHandler:
    return p.RequestHandler(codec=codec, limits=limits, rate_limit=rate_limit, now=now)


def wire(obj: dict[str, Any], codec: Codec = Codec.JSON) -> bytes:
    return orjson.dumps(obj) if codec is Codec.JSON else msgpack.packb(obj)


def receive(
    handler: p.RequestHandler, data: str | bytes, now: float = 0.0
) -> p.Reply | p.Close | p.Subscribe | p.Unsubscribe | p.Auth:
    return handler.receive(data, now=now, timestamp=T0)


def error(code: ErrorCode, text: str, request_id: p.RequestId | None = None) -> p.Reply:
    return p.Reply(p.ErrorReply(error=text, code=code.value, id=request_id, timestamp=T0))


def rate_limited(rate_limit: p.RateLimit = DEFAULT_RATE) -> p.Reply:
    return error(
        E.RATE_LIMITED,
        f"Rate limit exceeded: at most {rate_limit.rate:g} messages per second "
        f"(burst {rate_limit.burst}); this message was dropped",
    )


RATE_CLOSE = p.Close(CloseCode.RATE_LIMITED, "Rate limit exceeded repeatedly", flush=True)


# --- receive: ping and bad input ---------------------------------------------------


@pytest.mark.parametrize("codec", Codec)
@pytest.mark.parametrize("request_id", [None, "abc", 0, -7, 2**53 - 1])
def test_ping_gets_a_pong_echoing_its_id(codec: Codec, request_id: p.RequestId | None) -> None:
    handler = make(codec=codec)
    outcome = receive(handler, p.encode(p.Ping(id=request_id), codec))
    assert outcome == p.Reply(p.Pong(id=request_id, timestamp=T0))


BAD_FRAMES = [
    # (frame, code, the id the reply echoes)
    (b"{", E.INVALID_JSON, None),
    (b"[]", E.INVALID_MESSAGE, None),
    ({"id": 5}, E.INVALID_MESSAGE, 5),
    ({"type": "nope", "id": "a"}, E.UNKNOWN_TYPE, "a"),
    ({"type": "subscribe", "channel": "bogus", "id": 3}, E.UNKNOWN_CHANNEL, 3),
    (
        {"type": "subscribe", "channel": "prices", "symbols": ["bad sym"], "id": "s"},
        E.INVALID_SYMBOL,
        "s",
    ),
    (
        {"type": "subscribe", "channel": "prices", "symbols": ["AAPL"] * 4, "id": 9},
        E.TOO_MANY_SYMBOLS,
        9,
    ),
    (
        {"type": "unsubscribe", "channel": "alerts", "symbols": ["AAPL"], "id": "u"},
        E.INVALID_MESSAGE,
        "u",
    ),
    ({"type": "subscribe", "channel": "alerts", "since": 3, "id": "r"}, E.INVALID_MESSAGE, "r"),
    ({"type": "ping", "id": 1, "extra": 2}, E.INVALID_MESSAGE, 1),
    ({"type": "ping", "id": {"not": "an id"}}, E.INVALID_MESSAGE, None),
]


@pytest.mark.parametrize(("frame", "code", "request_id"), BAD_FRAMES)
def test_bad_input_gets_the_decoders_error_echoing_the_id(
    frame: bytes | dict[str, Any], code: ErrorCode, request_id: p.RequestId | None
) -> None:
    data = frame if isinstance(frame, bytes) else wire(frame)
    with pytest.raises(p.RemoteProtocolError) as info:
        p.decode_client(data, Codec.JSON, LIMITS)
    assert info.value.code is code
    assert receive(make(), data) == error(code, info.value.message, request_id)


def test_a_text_frame_on_a_msgpack_connection_is_invalid() -> None:
    outcome = receive(make(codec=Codec.MSGPACK), '{"type":"ping"}')
    assert isinstance(outcome, p.Reply)
    assert isinstance(outcome.message, p.ErrorReply)
    assert outcome.message.code == E.INVALID_JSON


@pytest.mark.parametrize("data", ["x" * 1025, b"x" * 1025, "é" * 513])
def test_an_oversized_message_closes_1009_dropping_what_is_pending(data: str | bytes) -> None:
    assert receive(make(), data) == p.Close(
        CloseCode.MESSAGE_TOO_BIG, "Message too big: the limit is 1024 bytes", flush=False
    )


@pytest.mark.parametrize("frame", [b"{", wire({"type": "ping", "id": 1}), b"x" * 2000])
def test_heard_is_the_last_receive(frame: bytes) -> None:
    handler = make(now=5.0, rate_limit=p.RateLimit(rate=1, burst=1))
    assert handler.heard == 5.0
    receive(handler, frame, now=7.5)
    assert handler.heard == 7.5
    receive(handler, frame, now=7.75)  # dropped by the rate limit, still heard
    assert handler.heard == 7.75


# --- receive: the rate limit ---------------------------------------------------------

PING = wire({"type": "ping", "id": 1})
PONG = p.Reply(p.Pong(id=1, timestamp=T0))


def test_the_default_burst_passes_then_messages_are_dropped_without_id() -> None:
    handler = make()
    assert [receive(handler, PING) for _ in range(40)] == [PONG] * 40
    assert receive(handler, PING) == error(
        E.RATE_LIMITED,
        "Rate limit exceeded: at most 20 messages per second (burst 40); this message was dropped",
    )


def test_a_dropped_message_is_not_decoded() -> None:
    limit = p.RateLimit(rate=1, burst=1)
    handler = make(rate_limit=limit)
    assert receive(handler, PING) == PONG
    assert receive(handler, b"{") == rate_limited(limit)
    assert receive(handler, b"x" * 2000) == rate_limited(limit)


def test_the_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    limit = p.RateLimit(rate=2.0, burst=3)
    handler = make(rate_limit=limit)
    assert [receive(handler, PING, 0.0) for _ in range(4)] == [PONG] * 3 + [rate_limited(limit)]
    assert receive(handler, PING, 0.25) == rate_limited(limit)  # half a token
    assert receive(handler, PING, 0.5) == PONG  # the other half
    assert receive(handler, PING, 0.5) == rate_limited(limit)
    # A long silence refills the burst and no more.
    outcomes = [receive(handler, PING, 100.0) for _ in range(4)]
    assert outcomes == [PONG] * 3 + [rate_limited(limit)]


def test_a_connection_may_start_with_the_tokens_an_earlier_one_left() -> None:
    # What the server carries over from the same client's last connection, so that
    # reconnecting after a 4429 does not refill the bucket.
    limit = p.RateLimit(rate=2.0, burst=3)
    handler = make(rate_limit=limit)
    for _ in range(3):
        receive(handler, PING)
    assert handler.tokens(0.0) == 0
    assert handler.tokens(0.25) == 0.5  # refilled since, changing nothing
    assert handler.tokens(100.0) == 3  # never above the burst
    later = p.RequestHandler(
        codec=Codec.JSON, limits=LIMITS, rate_limit=limit, now=1.0, tokens=handler.tokens(1.0)
    )
    assert [receive(later, PING, 1.0) for _ in range(3)] == [PONG] * 2 + [rate_limited(limit)]
    # A debt carries over too; more than the burst is capped.
    indebted = make(rate_limit=limit, now=5.0)
    indebted.charge_replay(50)  # 5 tokens: 2 owed
    assert indebted.tokens(5.0) == -2
    capped = p.RequestHandler(codec=Codec.JSON, limits=LIMITS, rate_limit=limit, now=0, tokens=9)
    assert capped.tokens(0.0) == 3


def test_a_fractional_rate_is_written_as_is() -> None:
    limit = p.RateLimit(rate=2.5, burst=1)
    handler = make(rate_limit=limit)
    receive(handler, PING)
    assert receive(handler, PING) == error(
        E.RATE_LIMITED,
        "Rate limit exceeded: at most 2.5 messages per second (burst 1); this message was dropped",
    )


@pytest.mark.parametrize(
    ("times", "closes"),
    [
        ([0.0, 0.0, 0.0], True),
        ([0.0, 5.0, 10.0], True),  # the window is inclusive
        ([0.0, 5.0, 10.5], False),
        ([0.0, 5.0, 10.5, 11.0], True),  # the oldest strike has left the window
        ([0.0, 20.0, 40.0, 60.0, 80.0], False),
    ],
)
def test_strikes_within_the_window_close_4429(times: list[float], closes: bool) -> None:
    limit = p.RateLimit(rate=0.001, burst=1, strikes=3, strike_window=10.0)
    handler = make(rate_limit=limit)
    assert receive(handler, PING) == PONG
    outcomes = [receive(handler, PING, now) for now in times]
    assert outcomes[:-1] == [rate_limited(limit)] * (len(times) - 1)
    assert outcomes[-1] == (RATE_CLOSE if closes else rate_limited(limit))


def test_strikes_are_counted_with_the_defaults() -> None:
    handler = make()
    for _ in range(40):
        receive(handler, PING)
    assert [receive(handler, PING) for _ in range(10)] == [rate_limited()] * 9 + [RATE_CLOSE]


def test_per_connection_state_is_slotted_and_strikes_come_with_the_first_breach() -> None:
    handler = make(rate_limit=p.RateLimit(rate=1, burst=1))
    assert not hasattr(handler, "__dict__")
    receive(handler, PING)
    assert handler._strikes is None
    receive(handler, PING)
    assert handler._strikes is not None


@pytest.mark.parametrize("field", ["rate", "burst", "strikes", "strike_window"])
@pytest.mark.parametrize("value", [0, -1, float("nan")])
def test_rate_limit_values_must_be_positive(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"RateLimit.{field} must be greater than 0"):
        p.RateLimit(**{field: value})  # type: ignore[arg-type]  # floats for the int fields too


def test_max_symbols_comes_from_the_limits() -> None:
    assert make().subscriptions.max_symbols == LIMITS.max_symbols
    with pytest.raises(ValueError, match="at least 1"):
        make(limits=p.Limits(max_symbols=0))


# --- subscribe, unsubscribe, refuse ----------------------------------------------


@pytest.mark.parametrize("codec", Codec)
def test_requests_are_handed_to_the_server_as_decoded(codec: Codec) -> None:
    handler = make(codec=codec)
    requests: list[p.Subscribe | p.Unsubscribe] = [
        p.Subscribe(channel=Channel.PRICES, symbols=("AAPL",), id=1),
        p.Subscribe(channel=Channel.ALERTS, since=4, epoch="e", id="x"),
        p.Unsubscribe(channel=Channel.PRICES),
    ]
    for request in requests:
        assert receive(handler, p.encode(request, codec)) == request
    assert len(handler.subscriptions) == 0


def test_subscribe_applies_and_acks() -> None:
    handler = make()
    request = p.Subscribe(channel=Channel.PRICES, symbols=("MSFT", "AAPL"), id=7)
    accepted = handler.subscribe(request, universe=UNIVERSE, timestamp=T0)
    wanted = frozenset({"AAPL", "MSFT"})
    assert accepted == p.Accepted(
        p.Change(Channel.PRICES, None, wanted),
        p.Subscribed(channel=Channel.PRICES, symbols=("AAPL", "MSFT"), id=7, timestamp=T0),
    )
    assert dict(handler.subscriptions) == {Channel.PRICES: wanted}

    accepted = handler.subscribe(p.Subscribe(channel=Channel.ALERTS), universe=(), timestamp=T0)
    assert accepted == p.Accepted(
        p.Change(Channel.ALERTS, None, ALL_SYMBOLS),
        p.Subscribed(channel=Channel.ALERTS, symbols=None, id=None, timestamp=T0),
    )


def test_the_ack_carries_the_position_the_server_gives() -> None:
    # Only the server knows its history: the handler puts what it is told in the ack.
    handler = make()
    request = p.Subscribe(channel=Channel.SIGNALS, id="s")
    accepted = handler.subscribe(request, universe=(), timestamp=T0, seq=0)
    assert accepted.reply == p.Subscribed(channel=Channel.SIGNALS, seq=0, id="s", timestamp=T0)
    resume = p.Subscribe(channel=Channel.SIGNALS, since=12, epoch="e")
    accepted = handler.subscribe(resume, universe=(), timestamp=T0, seq=12)
    assert accepted.reply == p.Subscribed(channel=Channel.SIGNALS, seq=12, timestamp=T0)


def test_unsubscribe_applies_and_acks() -> None:
    handler = make()
    handler.subscribe(
        p.Subscribe(channel=Channel.PRICES, symbols=("AAPL", "MSFT", "GOOG")),
        universe=UNIVERSE,
        timestamp=T0,
    )
    request = p.Unsubscribe(channel=Channel.PRICES, symbols=("MSFT", "NVDA"), id="u")
    accepted = handler.unsubscribe(request, timestamp=T0)
    left = frozenset({"AAPL", "GOOG"})
    assert accepted == p.Accepted(
        p.Change(Channel.PRICES, frozenset({"AAPL", "MSFT", "GOOG"}), left),
        p.Unsubscribed(channel=Channel.PRICES, symbols=("AAPL", "GOOG"), id="u", timestamp=T0),
    )
    accepted = handler.unsubscribe(p.Unsubscribe(channel=Channel.PRICES, id=2), timestamp=T0)
    assert accepted.change == p.Change(Channel.PRICES, left, None)
    assert accepted.reply == p.Unsubscribed(channel=Channel.PRICES, id=2, timestamp=T0)
    # Not held: acked, nothing changes.
    accepted = handler.unsubscribe(p.Unsubscribe(channel=Channel.SIGNALS), timestamp=T0)
    assert accepted.change == p.Change(Channel.SIGNALS, None, None)
    assert len(handler.subscriptions) == 0


def apply(handler: p.RequestHandler, request: p.Subscribe | p.Unsubscribe) -> p.Accepted:
    if isinstance(request, p.Subscribe):
        return handler.subscribe(request, universe=UNIVERSE, timestamp=T0)
    return handler.unsubscribe(request, timestamp=T0)


HELD = ("AAPL", "MSFT")
REFUSED: list[tuple[p.Subscribe | p.Unsubscribe, ErrorCode]] = [
    (p.Subscribe(channel=Channel.PRICES, symbols=("ZZZZ",), id=1), E.UNKNOWN_SYMBOL),
    (p.Subscribe(channel=Channel.PRICES, symbols=("GOOG", "NVDA"), id="two"), E.TOO_MANY_SYMBOLS),
    (p.Subscribe(channel=Channel.ALERTS, symbols=("AAPL",)), E.INVALID_MESSAGE),
    (p.Unsubscribe(channel=Channel.ALERTS, symbols=("AAPL",), id=4), E.INVALID_MESSAGE),
]


@pytest.mark.parametrize(("request_", "code"), REFUSED)
def test_a_refused_request_changes_nothing_and_its_error_echoes_the_id(
    request_: p.Subscribe | p.Unsubscribe, code: ErrorCode
) -> None:
    handler = make()
    handler.subscribe(
        p.Subscribe(channel=Channel.PRICES, symbols=HELD), universe=UNIVERSE, timestamp=T0
    )
    handler.subscribe(p.Subscribe(channel=Channel.ALERTS), universe=UNIVERSE, timestamp=T0)
    before = dict(handler.subscriptions)
    with pytest.raises(p.RemoteProtocolError) as info:
        apply(handler, request_)
    assert info.value.code is code
    assert dict(handler.subscriptions) == before
    reply = handler.refuse(request_, info.value, timestamp=T0)
    assert reply == error(code, info.value.message, request_.id)


def test_symbols_off_every_symbol_are_refused() -> None:
    handler = make()
    handler.subscribe(p.Subscribe(channel=Channel.PRICES), universe=UNIVERSE, timestamp=T0)
    request = p.Unsubscribe(channel=Channel.PRICES, symbols=("AAPL",), id=3)
    with pytest.raises(p.RemoteProtocolError) as info:
        handler.unsubscribe(request, timestamp=T0)
    assert info.value.code is E.INVALID_MESSAGE
    assert dict(handler.subscriptions) == {Channel.PRICES: ALL_SYMBOLS}


def test_refuse_serves_the_servers_own_errors() -> None:
    request = p.Subscribe(channel=Channel.ALERTS, since=3, epoch="old", id="r")
    refusal = p.RemoteProtocolError(E.HISTORY_UNAVAILABLE, "History epoch 'old' is gone")
    assert make().refuse(request, refusal, timestamp=T0) == error(
        E.HISTORY_UNAVAILABLE, "History epoch 'old' is gone", "r"
    )


def test_unsubscribe_all_leaves_nothing() -> None:
    handler = make()
    assert handler.unsubscribe_all() == []
    handler.subscribe(
        p.Subscribe(channel=Channel.PRICES, symbols=HELD), universe=UNIVERSE, timestamp=T0
    )
    handler.subscribe(p.Subscribe(channel=Channel.ALERTS), universe=UNIVERSE, timestamp=T0)
    changes = handler.unsubscribe_all()
    assert sorted(changes, key=lambda change: change.channel) == [
        p.Change(Channel.ALERTS, ALL_SYMBOLS, None),
        p.Change(Channel.PRICES, frozenset(HELD), None),
    ]
    assert len(handler.subscriptions) == 0
    assert handler.unsubscribe_all() == []


# --- against a model -------------------------------------------------------------

MACHINE_RATE = p.RateLimit(rate=2.0, burst=3, strikes=3, strike_window=2.0)
SYMBOLS = [*sorted(UNIVERSE), "ZZZZ"]  # ZZZZ: well-formed, not in the universe
# Prices half the time: the channel with symbols has the most to get wrong.
channels = st.just(Channel.PRICES) | st.sampled_from(Channel)
symbol_lists = st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=LIMITS.max_symbols + 1)
# Multiples of 1/8 s: at 2 tokens a second the bucket holds whole quarters of a token.
steps = st.sampled_from([0.0, 0.0, 0.125, 0.25, 0.5, 1.0, 3.0])
QUARTERS_PER_SECOND = int(MACHINE_RATE.rate * 4)

# Frames the decoder refuses: the frame's fields (None: not parsable) and the error code
# (None: too big, answered by closing).
MACHINE_BAD_FRAMES: list[tuple[dict[str, Any] | None, ErrorCode | None]] = [
    (None, E.INVALID_JSON),
    ({"type": "nope"}, E.UNKNOWN_TYPE),
    ({"type": "subscribe", "channel": "bogus"}, E.UNKNOWN_CHANNEL),
    ({"type": "subscribe", "channel": "prices", "symbols": ["bad sym"]}, E.INVALID_SYMBOL),
    ({"type": "subscribe", "channel": "alerts", "symbols": ["AAPL"]}, E.INVALID_MESSAGE),
    ({"type": "unsubscribe", "channel": "prices", "symbols": []}, E.INVALID_MESSAGE),
    ({"type": "ping", "unknown": 1}, E.INVALID_MESSAGE),
    ({"type": "ping", "padding": "x" * LIMITS.max_message_size}, None),  # closes 1009
]


class HandlerMachine(RuleBasedStateMachine):
    """Model: the bucket in quarter tokens, every strike's time, channel -> selection."""

    @initialize(codec=st.sampled_from(Codec))
    def connect(self, codec: Codec) -> None:
        self._open(codec, 0.0)

    def _open(self, codec: Codec, now: float) -> None:
        self.codec = codec
        self.now = now
        self.handler = p.RequestHandler(
            codec=codec, limits=LIMITS, rate_limit=MACHINE_RATE, now=now
        )
        self.quarters = 4 * MACHINE_RATE.burst
        self.strikes: list[float] = []
        self.model: dict[Channel, p.Selection] = {}
        self.closed = False

    def _receive(self, data: str | bytes, step: float) -> object | None:
        """The outcome of a message that passed the rate limit, or None if dropped."""
        self.now += step
        outcome = self.handler.receive(data, now=self.now, timestamp=self._timestamp())
        refill = round(step * QUARTERS_PER_SECOND)
        self.quarters = min(4 * MACHINE_RATE.burst, self.quarters + refill)
        if self.quarters >= 4:
            self.quarters -= 4
            return outcome
        self.strikes.append(self.now)
        recent = self.strikes[-MACHINE_RATE.strikes :]
        if (
            len(recent) == MACHINE_RATE.strikes
            and recent[-1] - recent[0] <= MACHINE_RATE.strike_window
        ):
            assert outcome == RATE_CLOSE
            self.closed = True
        else:
            assert isinstance(outcome, p.Reply)
            assert isinstance(outcome.message, p.ErrorReply)
            assert outcome.message.code == E.RATE_LIMITED
            assert outcome.message.id is None
            assert outcome.message.timestamp == self._timestamp()
        return None

    def _timestamp(self) -> datetime:
        return T0 + timedelta(seconds=self.now)

    def _decoded(self, request: p.Subscribe | p.Unsubscribe, step: float) -> bool:
        """Send ``request``; True when the handler hands it back for the server to
        apply, False when the rate limit dropped it or decoding refused its symbols."""
        outcome = self._receive(p.encode(request, self.codec), step)
        if outcome is None:
            return False
        if request.symbols is not None and len(request.symbols) > LIMITS.max_symbols:
            self._expect_error(outcome, E.TOO_MANY_SYMBOLS, request.id)
            return False
        assert outcome == request
        return True

    def _expect_error(self, outcome: object, code: ErrorCode, request_id: object) -> None:
        assert isinstance(outcome, p.Reply)
        assert isinstance(outcome.message, p.ErrorReply)
        assert (outcome.message.code, outcome.message.id) == (code.value, request_id)
        assert outcome.message.error
        assert outcome.message.timestamp == self._timestamp()

    @precondition(lambda self: not self.closed)
    @rule(request_id=optional_ids, step=steps)
    def ping(self, request_id: p.RequestId | None, step: float) -> None:
        outcome = self._receive(p.encode(p.Ping(id=request_id), self.codec), step)
        if outcome is not None:
            assert outcome == p.Reply(p.Pong(id=request_id, timestamp=self._timestamp()))

    @precondition(lambda self: not self.closed)
    @rule(bad=st.sampled_from(MACHINE_BAD_FRAMES), request_id=optional_ids, step=steps)
    def bad_frame(
        self,
        bad: tuple[dict[str, Any] | None, ErrorCode | None],
        request_id: p.RequestId | None,
        step: float,
    ) -> None:
        fields, code = bad
        if fields is None:
            data: str | bytes = b"{" if self.codec is Codec.JSON else "text, not MessagePack"
        else:
            data = wire(fields if request_id is None else {**fields, "id": request_id}, self.codec)
        outcome = self._receive(data, step)
        if outcome is None:
            return
        if code is None:
            assert isinstance(outcome, p.Close)
            assert (outcome.code, outcome.flush) == (CloseCode.MESSAGE_TOO_BIG, False)
            self.closed = True
        else:
            self._expect_error(outcome, code, None if fields is None else request_id)

    @precondition(lambda self: not self.closed)
    @rule(
        channel=channels,
        symbols=st.none() | symbol_lists,
        resume=st.none() | st.tuples(seqs, st.text(max_size=8)),
        request_id=optional_ids,
        step=steps,
    )
    def subscribe(
        self,
        channel: Channel,
        symbols: list[str] | None,
        resume: tuple[int, str] | None,
        request_id: p.RequestId | None,
        step: float,
    ) -> None:
        if channel is not Channel.PRICES:
            symbols = None
        since, epoch = resume or (None, None)
        request = p.Subscribe(
            channel=channel,
            symbols=None if symbols is None else tuple(symbols),
            since=since,
            epoch=epoch,
            id=request_id,
        )
        if not self._decoded(request, step):
            return
        current = self.model.get(channel)
        new: p.Selection | None = ALL_SYMBOLS
        refusal: ErrorCode | None = None
        if symbols is None:
            pass
        elif not set(symbols) <= UNIVERSE:
            refusal = E.UNKNOWN_SYMBOL
        elif current is not ALL_SYMBOLS:
            new = frozenset(symbols) | (current or frozenset())
            if len(new) > LIMITS.max_symbols:
                refusal = E.TOO_MANY_SYMBOLS
        self._apply(
            request,
            lambda: self.handler.subscribe(request, universe=UNIVERSE, timestamp=self._timestamp()),
            current,
            new,
            refusal,
        )

    @precondition(lambda self: not self.closed)
    @rule(
        channel=channels,
        symbols=st.none() | symbol_lists,
        request_id=optional_ids,
        step=steps,
    )
    def unsubscribe(
        self,
        channel: Channel,
        symbols: list[str] | None,
        request_id: p.RequestId | None,
        step: float,
    ) -> None:
        if channel is not Channel.PRICES:
            symbols = None
        request = p.Unsubscribe(
            channel=channel, symbols=None if symbols is None else tuple(symbols), id=request_id
        )
        if not self._decoded(request, step):
            return
        current = self.model.get(channel)
        new: p.Selection | None = None
        refusal: ErrorCode | None = None
        if symbols is not None and current is ALL_SYMBOLS:
            refusal = E.INVALID_MESSAGE
        elif symbols is not None and isinstance(current, frozenset):
            new = current.difference(symbols) or None
        self._apply(
            request,
            lambda: self.handler.unsubscribe(request, timestamp=self._timestamp()),
            current,
            new,
            refusal,
        )

    def _apply(
        self,
        request: p.Subscribe | p.Unsubscribe,
        call: Callable[[], p.Accepted],
        old: p.Selection | None,
        new: p.Selection | None,
        refusal: ErrorCode | None,
    ) -> None:
        """Apply ``request`` as the server would, and check it against the model."""
        timestamp = self._timestamp()
        if refusal is not None:
            with pytest.raises(p.RemoteProtocolError) as info:
                call()
            assert info.value.code is refusal
            assert self.handler.refuse(request, info.value, timestamp=timestamp) == p.Reply(
                p.ErrorReply(
                    error=info.value.message, code=refusal.value, id=request.id, timestamp=timestamp
                )
            )
            return
        accepted = call()
        assert accepted.change == p.Change(request.channel, old, new)
        ack_type = p.Subscribed if isinstance(request, p.Subscribe) else p.Unsubscribed
        ack_symbols = tuple(sorted(new)) if isinstance(new, frozenset) else None
        assert accepted.reply == ack_type(
            channel=request.channel, symbols=ack_symbols, id=request.id, timestamp=timestamp
        )
        if new is None:
            self.model.pop(request.channel, None)
        else:
            self.model[request.channel] = new

    @rule(codec=st.sampled_from(Codec), step=steps)
    def reconnect(self, codec: Codec, step: float) -> None:
        """The connection ends (closed by the handler or not); the client comes back."""
        changes = self.handler.unsubscribe_all()
        assert {change.channel: change.old for change in changes} == self.model
        assert all(change.new is None for change in changes)
        assert len(self.handler.subscriptions) == 0
        self._open(codec, self.now + step)

    @invariant()
    def subscriptions_match_the_model(self) -> None:
        assert dict(self.handler.subscriptions) == self.model
        assert self.handler.subscriptions.symbol_count <= LIMITS.max_symbols

    @invariant()
    def heard_is_the_last_now(self) -> None:
        assert self.handler.heard == self.now


TestHandlerMachine = HandlerMachine.TestCase
TestHandlerMachine.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)


def test_a_replay_is_charged_to_the_rate_limit() -> None:
    handler = make(rate_limit=p.RateLimit(rate=20.0, burst=40, replayed_per_token=10.0))
    ping = b'{"type":"ping"}'
    assert receive(handler, ping) == p.Reply(p.Pong(timestamp=T0))
    handler.charge_replay(1000)  # 100 tokens: 39 held, 61 owed
    assert receive(handler, ping) == rate_limited()
    # The debt is paid at the rate: 62 tokens take 3.1 s, then a request is allowed.
    assert receive(handler, ping, now=3.0) == rate_limited()
    assert receive(handler, ping, now=3.2) == p.Reply(p.Pong(timestamp=T0))
