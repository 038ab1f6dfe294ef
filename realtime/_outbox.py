"""The outbox of one connection: what the hub has offered and the writer has not yet sent.

Theory of operation
-------------------
The hub offers complete, prepared frames (shared bytes, see ``_hub``) and never
waits: ``offer`` and ``offer_price`` are synchronous. Price frames are conflated per
symbol (a newer price replaces the pending one, keeping its place), so pending
prices are bounded by the connection's symbols. Every other frame joins a FIFO
bounded by ``limits`` (messages and bytes); an offer past either bound closes the
outbox with 4499 (slow consumer) and drops what was pending: the client reconnects
and resumes from history.

A frame offered to an empty outbox is first handed to ``send_now``, which the outlet
behind it (``_delivery``) overrides to write it at once when it can. Otherwise the
outbox calls its ``ready`` hook when it goes from empty to pending, and when it is
closed: the outlet then schedules the write, or the close.
Whoever writes ``take``s everything pending at once and writes it with one call.
``close`` records the close code for the session to send; ``flush=True`` (going
away) keeps what is pending so it is written before the close frame.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from protocol import CloseCode, Codec


@attrs.frozen
class OutboxLimits:
    """Bounds shared by every outbox (one object, not a copy per connection)."""

    max_messages: int = 1024
    max_bytes: int = 4 * 1024 * 1024


class Outbox:
    """Pending frames of one connection. Offers never block; see the module docstring.

    Lean on purpose (thousands per process): a list, not a deque (a deque allocates a
    64-slot block up front). Subclasses override :meth:`ready`.
    """

    __slots__ = (
        "_fifo",
        "_fifo_bytes",
        "_prices",
        "client_id",
        "close_code",
        "close_reason",
        "codec",
        "limits",
        "user",
    )

    def __init__(
        self, client_id: str, codec: Codec, limits: OutboxLimits, *, user: str | None = None
    ) -> None:
        self.client_id = client_id
        #: Whose connection it is (a token's ``sub``; the demo user's with
        #: authentication off); ``None``: nobody's, reached by no per-user event.
        self.user = user
        self.codec = codec
        self.limits = limits
        self._fifo: list[bytes] = []
        self._fifo_bytes = 0
        self._prices: dict[str, bytes] = {}
        #: Set once the connection must close; the writer sends it after any flush.
        self.close_code: int | None = None
        self.close_reason = ""

    def __repr__(self) -> str:
        return f"<Outbox {self.client_id} {len(self._fifo)}+{len(self._prices)} pending>"

    @property
    def depth(self) -> int:
        """Frames pending: queued messages plus conflated prices."""
        return len(self._fifo) + len(self._prices)

    @property
    def pending_bytes(self) -> int:
        return self._fifo_bytes + sum(map(len, self._prices.values()))

    def offer(self, frame: bytes) -> bool:
        """Queue a frame in order. Returns False if it was not taken: the outbox is
        closed, or this offer overflowed it and closed it with 4499."""
        if self.close_code is not None:
            return False
        fifo = self._fifo
        if len(fifo) >= self.limits.max_messages or (
            self._fifo_bytes + len(frame) > self.limits.max_bytes
        ):
            self.close(
                CloseCode.SLOW_CONSUMER,
                f"Slow consumer: more than {self.limits.max_messages} messages or "
                f"{self.limits.max_bytes} bytes pending",
            )
            return False
        if not fifo and not self._prices and self.send_now(frame):
            return True
        fifo.append(frame)
        self._fifo_bytes += len(frame)
        if len(fifo) == 1 and not self._prices:
            self.ready()
        return True

    def offer_price(self, symbol: str, frame: bytes) -> bool:
        """Set the pending price of ``symbol``. Returns True if it replaced (conflated)
        an older pending price. Dropped silently once the outbox is closed."""
        prices = self._prices
        if self.close_code is not None:
            return False
        if symbol in prices:
            prices[symbol] = frame
            return True
        if not prices and not self._fifo and self.send_now(frame):
            return False
        prices[symbol] = frame
        if len(prices) == 1 and not self._fifo:
            self.ready()
        return False

    def drop_prices(self, symbols: Iterable[str] | None = None) -> None:
        """Forget the pending price of each of ``symbols`` (``None``: of every symbol),
        after an unsubscribe: nothing may follow its ack for what it dropped."""
        prices = self._prices
        if symbols is None:
            prices.clear()
        else:
            for symbol in symbols:
                prices.pop(symbol, None)

    def take(self) -> list[bytes]:
        """Everything pending, queued messages first, and empty the outbox."""
        frames = self._fifo
        self._fifo = []
        self._fifo_bytes = 0
        if self._prices:
            frames.extend(self._prices.values())
            self._prices.clear()
        return frames

    def send_now(self, frame: bytes) -> bool:
        """Called with a frame offered to an empty outbox: True if it was written at
        once, so it is not kept. Never here; a session overrides it."""
        return False

    def ready(self) -> None:
        """Called when the outbox goes from empty to pending and when it is closed,
        after the change. Does nothing here; a session overrides it to write."""

    def close(self, code: int, reason: str = "", *, flush: bool = False) -> None:
        """Ask the connection to close with ``code``. The first close wins.

        Without ``flush`` what is pending is dropped, freeing it at once. Never blocks.
        """
        if self.close_code is not None:
            return
        self.close_code = code
        self.close_reason = reason
        if not flush:
            self._fifo = []
            self._fifo_bytes = 0
            self._prices.clear()
        self.ready()
