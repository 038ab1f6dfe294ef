"""Producers: each is an async function that takes a publisher and runs until cancelled.

The price feed (simulated, or a replay of recorded quotes) publishes through a
:class:`PriceTap`, which copies every price to the feeds that react to prices: alerts,
signals and the portfolio. The demo's system notifications (:class:`DemoEventsFeed`)
run on a clock of their own. All of them publish through the one :class:`Publisher`
interface, as does anything else in the gateway's process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from ._alerts import (
    DEFAULT_HYSTERESIS,
    MAX_RULES,
    MAX_RULES_PER_USER,
    AlertEngine,
    AlertFeed,
    AlertRule,
    AlertType,
    Fired,
    RuleError,
    demo_rules,
    load_rules,
    parse_rule,
)
from ._events import DEFAULT_EVENT_INTERVAL, DemoEvents, DemoEventsFeed
from ._market import (
    MAX_UNIVERSE,
    WELL_KNOWN,
    Market,
    SymbolSpec,
    load_universe,
    parse_universe,
    symbol_spec,
    universe,
)
from ._portfolio import (
    MAX_POSITIONS,
    Holding,
    Portfolio,
    PortfolioFeed,
    PortfolioSpec,
    demo_portfolio,
    load_portfolio,
)
from ._prices import (
    MAX_TICK_RATE,
    MAX_UPDATES_PER_TICK,
    PriceFeed,
    PriceFeedConfig,
    PriceFeedStatistics,
    run_price_feed,
)
from ._publisher import DEMO_USER, MAX_USER_LENGTH, Publisher
from ._replay import RecordedQuote, ReplayFeed, load_quotes
from ._signals import SignalAgent, SignalFeed
from ._tap import PriceStream, PriceStreamStatistics, PriceTap

#: The shipped replay sample: real monthly prices, 2007-2009 (see feeds/data/README.md).
SAMPLE_REPLAY: Final = Path(__file__).parent / "data" / "stocks-2007-2009.csv"

__all__ = [
    "DEFAULT_EVENT_INTERVAL",
    "DEFAULT_HYSTERESIS",
    "DEMO_USER",
    "MAX_POSITIONS",
    "MAX_RULES",
    "MAX_RULES_PER_USER",
    "MAX_TICK_RATE",
    "MAX_UNIVERSE",
    "MAX_UPDATES_PER_TICK",
    "MAX_USER_LENGTH",
    "SAMPLE_REPLAY",
    "WELL_KNOWN",
    "AlertEngine",
    "AlertFeed",
    "AlertRule",
    "AlertType",
    "DemoEvents",
    "DemoEventsFeed",
    "Fired",
    "Holding",
    "Market",
    "Portfolio",
    "PortfolioFeed",
    "PortfolioSpec",
    "PriceFeed",
    "PriceFeedConfig",
    "PriceFeedStatistics",
    "PriceStream",
    "PriceStreamStatistics",
    "PriceTap",
    "Publisher",
    "RecordedQuote",
    "ReplayFeed",
    "RuleError",
    "SignalAgent",
    "SignalFeed",
    "SymbolSpec",
    "demo_portfolio",
    "demo_rules",
    "load_portfolio",
    "load_quotes",
    "load_rules",
    "load_universe",
    "parse_rule",
    "parse_universe",
    "run_price_feed",
    "symbol_spec",
    "universe",
]
