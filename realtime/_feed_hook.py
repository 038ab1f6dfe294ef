"""``--feed module:callable``: a price source of your own, run inside the gateway.

The contract (docs/feeds.md, "Your own feed")::

    async def feed(publisher: feeds.Publisher, *, universe: realtime.PriceUniverse) -> None

It publishes prices (and anything else) through ``publisher`` until cancelled, as
the built-in feeds do: the publisher is the price tap, so the alert, signal and
portfolio feeds see its prices. ``universe`` starts as ``--universe`` (or empty) and
``universe.add([...])`` grows it; a price for a symbol outside it raises
``ValueError``. The hook runs under the feed supervisor: if it raises or returns it
is logged, announced, and called again with backoff (1 s doubling to 30 s), with the
same universe.

The module is imported with the working directory first on ``sys.path`` (as
uvicorn does for ``module:app``), so ``--feed myfeed:run`` finds ``./myfeed.py``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from feeds import Publisher
from protocol import Channel, EventData

from ._universe import PriceUniverse

#: The hook's signature: ``await hook(publisher, universe=universe)``.
FeedHook = Callable[..., Awaitable[object]]


def load_hook(spec: str) -> FeedHook:
    """The callable named by ``module:callable`` (``callable`` may be dotted:
    ``module:Class.method``). Raises ``ValueError`` with one line saying why not."""
    module_name, _, attribute = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name}: {exc}") from exc
    except Exception as exc:  # the module's own code failed: say where, in one line
        raise ValueError(f"importing {module_name} failed: {type(exc).__name__}: {exc}") from exc
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise ValueError(f"{module_name} has no {attribute}") from None
    if not callable(target):
        raise ValueError(f"{spec} is a {type(target).__name__}, not a function")
    hook: FeedHook = target
    return hook


@attrs.frozen
class HookFeed:
    """The price source of ``--feed module:callable``."""

    #: ``module:callable``, for logs and notifications.
    spec: str
    hook: FeedHook
    #: The universe it starts with (``--universe``; empty without).
    symbols: tuple[str, ...]

    async def run(self, publisher: Publisher, *, universe: PriceUniverse) -> None:
        """One run of the hook, publishing through ``publisher`` checked against
        ``universe``; returns or raises as the hook does."""
        await self.hook(UniversePublisher(publisher, universe), universe=universe)


@attrs.frozen
class UniversePublisher:
    """A :class:`feeds.Publisher` that refuses prices outside ``universe`` with
    ``ValueError``, before they reach the bus. The in-process hub checks too; a
    cluster's feed process has no hub, and its nodes would deliver them."""

    publisher: Publisher
    universe: PriceUniverse

    async def publish(
        self,
        channel: Channel,
        data: EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
    ) -> None:
        if channel is Channel.PRICES and symbol is not None and symbol not in self.universe:
            raise ValueError(
                f"{symbol} is not in the price universe: add it first with "
                f"universe.add([{symbol!r}])"
            )
        await self.publisher.publish(channel, data, symbol=symbol, to=to)
