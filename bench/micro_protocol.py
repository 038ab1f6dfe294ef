"""Micro-benchmark of the protocol codecs: encode and decode rates per message type.

    python -m bench.micro_protocol [--seconds S]

Each figure is the median of five timed batches on this process, one core. The hub
encodes every published message once per codec, so ``encode price_update`` bounds
the feed-side cost of a price; ``decode_client`` is paid once per client request.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

import protocol as p

NOW = datetime(2026, 11, 26, 14, 30, 0, 123456, tzinfo=UTC)
PRICE = p.PriceUpdate(
    symbol="AAPL",
    data=p.PriceData(
        price=185.42, change=1.27, change_pct=0.69, volume=48_211_934, bid=185.41, ask=185.43
    ),
    seq=123_456,
    timestamp=NOW,
)
PORTFOLIO = p.PortfolioUpdate(
    data=p.PortfolioData(
        total_value=125_431.5,
        cash=20_000.0,
        day_change=812.25,
        day_change_pct=0.65,
        positions=tuple(
            p.Position(
                symbol=symbol,
                quantity=50,
                avg_cost=150.0,
                price=185.42,
                market_value=9271.0,
                unrealized_pnl=1771.0,
                unrealized_pnl_pct=23.61,
            )
            for symbol in ("AAPL", "MSFT", "GOOG", "AMZN", "NVDA")
        ),
    ),
    seq=99,
    timestamp=NOW,
)
SIGNAL = p.TradingSignal(
    data=p.SignalData(
        symbol="NVDA",
        action=p.SignalAction.BUY,
        confidence=0.82,
        reasoning="10-period average crossed above the 30-period average with +1.8% momentum",
    ),
    seq=7,
    timestamp=NOW,
)
SUBSCRIBE = p.Subscribe(
    channel=p.Channel.PRICES, symbols=("AAPL", "MSFT", "GOOG", "NVDA", "TSLA"), id="req-1"
)


def rate(function: Callable[[], object], seconds: float) -> tuple[float, float]:
    """(µs per call, calls per second): the median of five batches."""
    timer = timeit.Timer(function)
    number, _ = timer.autorange()
    batch = max(number, int(number * seconds / 5 / max(timer.timeit(number), 1e-9)))
    per_call = statistics.median(timer.timeit(batch) / batch for _ in range(5))
    return per_call * 1e6, 1 / per_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per case")
    args = parser.parse_args()
    cases: list[tuple[str, Callable[[], object]]] = []
    for codec in p.Codec:
        name = codec.name.lower()
        for message in (PRICE, SIGNAL, PORTFOLIO):
            tag = p.MESSAGE_TYPES[type(message)]
            wire = p.encode(message, codec)
            cases.append(
                (f"encode {tag} ({name}, {len(wire)} B)", partial(p.encode, message, codec))
            )
            cases.append((f"decode_server {tag} ({name})", partial(p.decode_server, wire, codec)))
        request = p.encode(SUBSCRIBE, codec)
        cases.append(
            (f"decode_client subscribe ({name})", partial(p.decode_client, request, codec))
        )
    bad = b'{"type":"subscribe","channel":"invalid_channel","id":1}'
    cases.append(("decode_client unknown channel error (json)", lambda: _error(bad)))
    print(f"{'case':<48} {'µs/op':>8} {'ops/s':>12}")
    for label, function in cases:
        micros, per_second = rate(function, args.seconds)
        print(f"{label:<48} {micros:>8.2f} {per_second:>12,.0f}")


def _error(data: bytes) -> None:
    with contextlib.suppress(p.RemoteProtocolError):
        p.decode_client(data)


if __name__ == "__main__":
    main()
