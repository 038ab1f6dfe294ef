"""Producers: each is an async function that takes a publisher and runs until cancelled."""

from __future__ import annotations

from ._market import WELL_KNOWN, Market, SymbolSpec, symbol_spec, universe
from ._prices import PriceFeed, PriceFeedConfig, PriceFeedStatistics, run_price_feed
from ._publisher import Publisher

__all__ = [
    "WELL_KNOWN",
    "Market",
    "PriceFeed",
    "PriceFeedConfig",
    "PriceFeedStatistics",
    "Publisher",
    "SymbolSpec",
    "run_price_feed",
    "symbol_spec",
    "universe",
]
