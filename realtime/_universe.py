"""The price universe: the symbols clients may subscribe to on ``prices``, and the only
ones prices may be published for.

It starts as the price source's (``--universe``, ``--symbols`` simulated tickers, a
replay file's symbols) and only grows: a feed hook (``--feed module:callable``) or a
program embedding the gateway may add symbols, never remove one, since clients may
hold it. The hub keeps the set (``Hub.symbols``, ``Hub.universe``, what ``welcome``
lists and ``subscribe`` checks); :class:`PriceUniverse` is the handle the rest of the
gateway reads and grows it through, so there is one list, not copies kept in step.

A cluster's universe is fixed at start: every node checks its own against the
feed's in Redis, and a symbol added in one process would be unknown to the others.
There :meth:`PriceUniverse.add` refuses anything new (docs/cluster.md).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator
from typing import Final

from feeds import MAX_UNIVERSE
from protocol import SYMBOL_PATTERN

from ._hub import Hub

_SYMBOL_RE: Final = re.compile(SYMBOL_PATTERN)
#: Symbols an error message names before "...".
_NAMED: Final = 20


class PriceUniverse(Collection[str]):
    """The live price universe, in order: ``in``, ``len``, iteration and :attr:`symbols`
    always show the symbols added so far.

    Over a ``hub`` it grows (:meth:`add`); without one (``realtime feed``, which has no
    hub) it is the fixed tuple ``symbols`` and ``fixed`` says why it cannot grow.
    """

    def __init__(
        self,
        hub: Hub | None = None,
        *,
        symbols: Iterable[str] = (),
        fixed: str = "the universe is fixed",
    ) -> None:
        self._hub = hub
        self._fixed_symbols = tuple(symbols)
        self._fixed_set = frozenset(self._fixed_symbols)
        self._fixed = fixed

    @property
    def symbols(self) -> tuple[str, ...]:
        """Every symbol, in the order added: what ``welcome.symbols`` lists."""
        return self._hub.symbols if self._hub is not None else self._fixed_symbols

    def __contains__(self, symbol: object) -> bool:
        known = self._hub.universe if self._hub is not None else self._fixed_set
        return symbol in known

    def __iter__(self) -> Iterator[str]:
        return iter(self.symbols)

    def __len__(self) -> int:
        return len(self.symbols)

    def describe(self) -> str:
        """The universe for an error message: its first symbols, then "..."."""
        symbols = sorted(self.symbols)
        if not symbols:
            return "none yet"
        return ", ".join(symbols[:_NAMED]) + (", ..." if len(symbols) > _NAMED else "")

    def add(self, symbols: Iterable[str]) -> tuple[str, ...]:
        """Add ``symbols`` (tickers, ``SYMBOL_PATTERN``) at the end of the universe and
        return those that were new; symbols already in it are left as they are.

        Synchronous and never blocks: from the next ``subscribe`` on, clients may hold
        the new symbols, every-symbol subscribers get their prices at once, and new
        connections find them in ``welcome.symbols`` (connections already open are not
        told otherwise). Raises ``ValueError`` for a string that is not a ticker or
        past :data:`feeds.MAX_UNIVERSE` symbols, and in a cluster for any new symbol;
        then nothing is added.
        """
        if isinstance(symbols, str):
            raise TypeError("add() takes an iterable of tickers, not one string: add([symbol])")
        new: dict[str, None] = {}
        for symbol in symbols:
            if not isinstance(symbol, str) or not _SYMBOL_RE.fullmatch(symbol):
                raise ValueError(f"{symbol!r} is not a ticker: 1-10 of A-Z 0-9 . -, a letter first")
            if symbol not in self:
                new[symbol] = None
        if not new:
            return ()
        if self._hub is None:
            raise ValueError(f"cannot add {', '.join(list(new)[:_NAMED])}: {self._fixed}")
        if len(self) + len(new) > MAX_UNIVERSE:
            raise ValueError(
                f"cannot add {len(new)} symbols: the universe holds at most {MAX_UNIVERSE}"
            )
        return self._hub.add_symbols(new)
