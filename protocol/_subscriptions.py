"""The subscription state of one connection, sans-IO.

Theory of operation
-------------------
A connection holds at most one selection per channel. Prices select either every
symbol (``ALL_SYMBOLS``) or an explicit set of symbols; every other channel is
selected whole (stored as ``ALL_SYMBOLS`` too). ``subscribe`` widens the selection:
symbols are added to the set, and a subscribe without symbols widens it to every
symbol. ``unsubscribe`` narrows it: without symbols it drops the channel; with
symbols it removes them from the set and drops the channel when the set empties.

Each request either applies whole or raises :class:`RemoteProtocolError` and leaves
the state as it was: a subscribe that names an unknown symbol, or that would take
the connection past ``max_symbols`` explicit symbols, changes nothing. Removing
single symbols from an every-symbol selection is refused, since the result would
depend on a universe that can change; the client unsubscribes from the channel and
subscribes to the symbols it wants instead.

Every successful request returns a :class:`Change` (old and new selection), which
is all the server needs to update its registry and to write the ack.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Iterator
from typing import Final, TypeAlias

import attrs

from ._codes import ErrorCode
from ._errors import RemoteProtocolError
from ._messages import Channel


class _AllSymbols(enum.Enum):
    ALL_SYMBOLS = "all"

    def __repr__(self) -> str:
        return "ALL_SYMBOLS"


#: The selection "every symbol" (or, on a channel without symbols, the whole channel).
ALL_SYMBOLS: Final = _AllSymbols.ALL_SYMBOLS

Selection: TypeAlias = frozenset[str] | _AllSymbols

_MAX_NAMED: Final = 10  # unknown symbols listed in one error message


@attrs.frozen
class Change:
    """What one request did to one channel; ``None`` means not subscribed."""

    channel: Channel
    old: Selection | None
    new: Selection | None

    @property
    def ack_symbols(self) -> tuple[str, ...] | None:
        """The ``symbols`` of the ack: the explicit symbols now held, sorted."""
        return tuple(sorted(self.new)) if isinstance(self.new, frozenset) else None


class Subscriptions:
    """The channels and symbols one connection is subscribed to.

    ``max_symbols`` bounds the explicit price symbols held at once. Explicit symbols
    are kept as a tuple, a fifth of the memory of a frozenset (a server holds one of
    these per connection), and handed out as frozensets.
    """

    __slots__ = ("_selections", "max_symbols")

    def __init__(self, max_symbols: int) -> None:
        if max_symbols < 1:
            raise ValueError(f"max_symbols must be at least 1, got {max_symbols}")
        self.max_symbols = max_symbols
        self._selections: dict[Channel, tuple[str, ...] | _AllSymbols] = {}

    def __contains__(self, channel: object) -> bool:
        return channel in self._selections

    def __iter__(self) -> Iterator[tuple[Channel, Selection]]:
        return iter([(channel, _selection(kept)) for channel, kept in self._selections.items()])

    def __len__(self) -> int:
        return len(self._selections)

    def get(self, channel: Channel) -> Selection | None:
        kept = self._selections.get(channel)
        return None if kept is None else _selection(kept)

    @property
    def symbol_count(self) -> int:
        """How many explicit price symbols are held (the number ``max_symbols`` bounds)."""
        selection = self._selections.get(Channel.PRICES)
        return len(selection) if isinstance(selection, tuple) else 0

    def subscribe(
        self,
        channel: Channel,
        symbols: Iterable[str] | None = None,
        *,
        universe: Collection[str] = (),
    ) -> Change:
        """Widen the selection on ``channel``; symbols must be in ``universe``.

        Raises :class:`RemoteProtocolError` (``unknown_symbol``, ``too_many_symbols``,
        ``invalid_message``) and then changes nothing.
        """
        old = self.get(channel)
        new: Selection
        if symbols is None:
            new = ALL_SYMBOLS
        else:
            if channel is not Channel.PRICES:
                raise RemoteProtocolError(
                    ErrorCode.INVALID_MESSAGE,
                    f"Channel '{channel}' does not take symbols; only 'prices' does",
                )
            requested = frozenset(symbols)
            unknown = sorted(requested.difference(universe))
            if unknown:
                raise RemoteProtocolError(
                    ErrorCode.UNKNOWN_SYMBOL, _unknown_symbols_message(unknown)
                )
            if old is ALL_SYMBOLS:
                new = ALL_SYMBOLS
            else:
                new = requested if old is None else old | requested
                if len(new) > self.max_symbols:
                    raise RemoteProtocolError(
                        ErrorCode.TOO_MANY_SYMBOLS,
                        f"Too many symbols: this would hold {len(new)}, "
                        f"the limit is {self.max_symbols} per connection",
                    )
        self._keep(channel, new)
        return Change(channel, old, new)

    def unsubscribe(self, channel: Channel, symbols: Iterable[str] | None = None) -> Change:
        """Narrow the selection on ``channel``; without symbols, drop it.

        Symbols that are not held are ignored. Raises :class:`RemoteProtocolError`
        (``invalid_message``) for symbols on an every-symbol selection.
        """
        old = self.get(channel)
        if symbols is None or old is None:
            new: Selection | None = None
        elif channel is not Channel.PRICES:
            raise RemoteProtocolError(
                ErrorCode.INVALID_MESSAGE,
                f"Channel '{channel}' does not take symbols; only 'prices' does",
            )
        elif old is ALL_SYMBOLS:
            raise RemoteProtocolError(
                ErrorCode.INVALID_MESSAGE,
                "Subscribed to every symbol on 'prices': unsubscribe from the channel, "
                "then subscribe to the symbols you want",
            )
        else:
            new = old.difference(symbols) or None
        if new is None:
            self._selections.pop(channel, None)
        else:
            self._keep(channel, new)
        return Change(channel, old, new)

    def _keep(self, channel: Channel, selection: Selection) -> None:
        self._selections[channel] = selection if selection is ALL_SYMBOLS else tuple(selection)


def _selection(kept: tuple[str, ...] | _AllSymbols) -> Selection:
    return kept if kept is ALL_SYMBOLS else frozenset(kept)


def _unknown_symbols_message(unknown: list[str]) -> str:
    if len(unknown) == 1:
        return f"Unknown symbol: {unknown[0]}"
    named = ", ".join(unknown[:_MAX_NAMED])
    more = f" and {len(unknown) - _MAX_NAMED} more" if len(unknown) > _MAX_NAMED else ""
    return f"Unknown symbols: {named}{more}"
