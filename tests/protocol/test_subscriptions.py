"""The subscription state of one connection, against a plain model."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import protocol as p
from protocol import ALL_SYMBOLS, Channel, ErrorCode, Subscriptions

UNIVERSE = ("AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA")
MAX_SYMBOLS = 4
symbol_sets = st.sets(st.sampled_from([*UNIVERSE, "ZZZZ"]), min_size=1, max_size=5)
other_channels = st.sampled_from([c for c in Channel if c is not Channel.PRICES])


class SubscriptionMachine(RuleBasedStateMachine):
    """Model: channel -> "all" or a set of symbols, with the rules written the plain way."""

    def __init__(self) -> None:
        super().__init__()
        self.state = Subscriptions(MAX_SYMBOLS)
        self.model: dict[Channel, str | frozenset[str]] = {}

    def _expect_error(self, code: ErrorCode, action: Callable[[], object]) -> None:
        before = dict(self.model)
        with pytest.raises(p.RemoteProtocolError) as info:
            action()
        assert info.value.code is code
        assert self.model == before

    @rule(channel=other_channels)
    def subscribe_channel(self, channel: Channel) -> None:
        change = self.state.subscribe(channel, universe=UNIVERSE)
        assert change.old == _selection(self.model.get(channel))
        self.model[channel] = "all"
        assert change.new is ALL_SYMBOLS

    @rule()
    def subscribe_all_prices(self) -> None:
        self.state.subscribe(Channel.PRICES, universe=UNIVERSE)
        self.model[Channel.PRICES] = "all"

    @rule(symbols=symbol_sets)
    def subscribe_symbols(self, symbols: set[str]) -> None:
        current = self.model.get(Channel.PRICES)

        def call() -> p.Change:
            return self.state.subscribe(Channel.PRICES, symbols, universe=UNIVERSE)

        if not symbols <= set(UNIVERSE):
            self._expect_error(ErrorCode.UNKNOWN_SYMBOL, call)
        elif current == "all":
            assert call().new is ALL_SYMBOLS
        else:
            wanted = frozenset(symbols) | (
                current if isinstance(current, frozenset) else frozenset()
            )
            if len(wanted) > MAX_SYMBOLS:
                self._expect_error(ErrorCode.TOO_MANY_SYMBOLS, call)
            else:
                change = call()
                assert change.new == wanted
                assert change.ack_symbols == tuple(sorted(wanted))
                self.model[Channel.PRICES] = wanted

    @rule(channel=st.sampled_from(Channel))
    def unsubscribe_channel(self, channel: Channel) -> None:
        change = self.state.unsubscribe(channel)
        assert change.new is None
        assert change.old == _selection(self.model.pop(channel, None))

    @rule(symbols=symbol_sets)
    def unsubscribe_symbols(self, symbols: set[str]) -> None:
        current = self.model.get(Channel.PRICES)

        def call() -> p.Change:
            return self.state.unsubscribe(Channel.PRICES, symbols)

        if current == "all":
            self._expect_error(ErrorCode.INVALID_MESSAGE, call)
            return
        change = call()
        remaining = (current if isinstance(current, frozenset) else frozenset()) - symbols
        if remaining:
            self.model[Channel.PRICES] = remaining
        else:
            self.model.pop(Channel.PRICES, None)
        assert change.new == (remaining or None)

    @precondition(lambda self: Channel.ALERTS in self.model)
    @rule()
    def symbols_on_a_symbolless_channel(self) -> None:
        self._expect_error(
            ErrorCode.INVALID_MESSAGE,
            lambda: self.state.subscribe(Channel.ALERTS, ["AAPL"], universe=UNIVERSE),
        )

    @invariant()
    def matches_the_model(self) -> None:
        assert {c: _selection(s) for c, s in self.model.items()} == dict(self.state)
        assert len(self.state) == len(self.model)
        prices = self.model.get(Channel.PRICES)
        assert self.state.symbol_count == (len(prices) if isinstance(prices, frozenset) else 0)
        assert self.state.symbol_count <= MAX_SYMBOLS


def _selection(value: str | frozenset[str] | None) -> p.Selection | None:
    return ALL_SYMBOLS if isinstance(value, str) else value  # "all" is the model's only str


TestSubscriptionMachine = SubscriptionMachine.TestCase


def test_error_messages_name_the_symbols() -> None:
    state = Subscriptions(max_symbols=2)
    with pytest.raises(p.RemoteProtocolError, match=r"^Unknown symbol: ZZZZ$"):
        state.subscribe(Channel.PRICES, ["AAPL", "ZZZZ"], universe=UNIVERSE)
    many = [f"X{i}" for i in range(12)]
    with pytest.raises(p.RemoteProtocolError, match=r"Unknown symbols: X0, X1, .* and 2 more"):
        state.subscribe(Channel.PRICES, many, universe=UNIVERSE)
    with pytest.raises(p.RemoteProtocolError, match="would hold 3, the limit is 2"):
        state.subscribe(Channel.PRICES, ["AAPL", "MSFT", "GOOG"], universe=UNIVERSE)


def test_max_symbols_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Subscriptions(0)
