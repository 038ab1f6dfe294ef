"""Hypothesis strategies for every protocol message."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from hypothesis import strategies as st

import protocol as p
from protocol._messages import MAX_ID_LENGTH, MAX_SAFE_INTEGER

symbols = st.from_regex(p.SYMBOL_PATTERN, fullmatch=True)
symbol_tuples = st.lists(symbols, min_size=1, max_size=20).map(tuple)
client_ids = st.from_regex(p.CLIENT_ID_PATTERN, fullmatch=True)
request_ids = st.one_of(
    st.text(min_size=1, max_size=MAX_ID_LENGTH),
    st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
)
optional_ids = st.none() | request_ids
seqs = st.integers(0, MAX_SAFE_INTEGER)
numbers = st.floats(allow_nan=False, allow_infinity=False)
# fold means nothing in UTC and is not on the wire.
timestamps = st.datetimes(timezones=st.just(UTC)).map(lambda t: t.replace(fold=0))

price_data = st.builds(
    p.PriceData,
    price=numbers,
    change=numbers,
    change_pct=numbers,
    volume=seqs,
    bid=numbers,
    ask=numbers,
)
alert_data = st.builds(
    p.AlertData,
    id=st.text(),
    symbol=symbols,
    type=st.text(),
    message=st.text(),
    severity=st.sampled_from(p.Severity),
)
signal_data = st.builds(
    p.SignalData,
    symbol=symbols,
    action=st.sampled_from(p.SignalAction),
    confidence=st.floats(0, 1),
    reasoning=st.text(),
)
positions = st.builds(
    p.Position,
    symbol=symbols,
    quantity=numbers,
    avg_cost=numbers,
    price=numbers,
    market_value=numbers,
    unrealized_pnl=numbers,
    unrealized_pnl_pct=numbers,
)
portfolio_data = st.builds(
    p.PortfolioData,
    total_value=numbers,
    cash=numbers,
    day_change=numbers,
    day_change_pct=numbers,
    positions=st.lists(positions, max_size=5).map(tuple),
)
notification_data = st.builds(
    p.NotificationData, id=st.text(), message=st.text(), type=st.sampled_from(p.NotificationType)
)

MESSAGES: dict[type[Any], st.SearchStrategy[Any]] = {
    p.Subscribe: st.builds(
        p.Subscribe,
        channel=st.just(p.Channel.PRICES),
        symbols=st.none() | symbol_tuples,
        id=optional_ids,
    )
    | st.builds(
        p.Subscribe,
        channel=st.sampled_from(p.Channel),
        since=st.none(),
        epoch=st.none(),
        id=optional_ids,
    )
    | st.builds(
        p.Subscribe,
        channel=st.sampled_from(p.Channel),
        since=seqs,
        epoch=st.text(max_size=64),
        id=optional_ids,
    ),
    p.Unsubscribe: st.builds(
        p.Unsubscribe,
        channel=st.just(p.Channel.PRICES),
        symbols=st.none() | symbol_tuples,
        id=optional_ids,
    )
    | st.builds(p.Unsubscribe, channel=st.sampled_from(p.Channel), id=optional_ids),
    p.Ping: st.builds(p.Ping, id=optional_ids),
    p.Auth: st.builds(p.Auth, token=st.text(min_size=1), id=optional_ids),
    p.Welcome: st.builds(
        p.Welcome,
        client_id=client_ids,
        protocol=st.just(p.PROTOCOL_VERSION),
        server=st.text(),
        channels=st.lists(st.sampled_from(p.Channel), unique=True).map(tuple),
        symbols=st.lists(symbols).map(tuple),
        heartbeat_interval=st.floats(0, 3600),
        epoch=st.text(),
        timestamp=timestamps,
    ),
    p.Subscribed: st.builds(
        p.Subscribed,
        channel=st.sampled_from(p.Channel),
        symbols=st.none() | symbol_tuples,
        seq=st.none() | seqs,
        id=optional_ids,
        timestamp=timestamps,
    ),
    p.Unsubscribed: st.builds(
        p.Unsubscribed,
        channel=st.sampled_from(p.Channel),
        symbols=st.none() | symbol_tuples,
        id=optional_ids,
        reason=st.none() | st.text(),
        timestamp=timestamps,
    ),
    p.PriceUpdate: st.builds(
        p.PriceUpdate, symbol=symbols, data=price_data, seq=seqs, timestamp=timestamps
    ),
    p.AlertTriggered: st.builds(p.AlertTriggered, data=alert_data, seq=seqs, timestamp=timestamps),
    p.TradingSignal: st.builds(p.TradingSignal, data=signal_data, seq=seqs, timestamp=timestamps),
    p.PortfolioUpdate: st.builds(
        p.PortfolioUpdate, data=portfolio_data, seq=seqs, timestamp=timestamps
    ),
    p.Notification: st.builds(
        p.Notification, data=notification_data, seq=seqs, timestamp=timestamps
    ),
    p.Pong: st.builds(p.Pong, id=optional_ids, timestamp=timestamps),
    p.ErrorReply: st.builds(
        p.ErrorReply,
        error=st.text(),
        code=st.sampled_from(p.ErrorCode).map(str),
        id=optional_ids,
        timestamp=timestamps,
    ),
}

client_messages = st.one_of([MESSAGES[cls] for cls in (p.Subscribe, p.Unsubscribe, p.Ping, p.Auth)])
any_messages = st.one_of(list(MESSAGES.values()))
