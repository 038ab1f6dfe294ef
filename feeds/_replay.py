"""Replay of recorded quotes: a file of real prices published on the recorded schedule.

Theory of operation
-------------------
:func:`load_quotes` reads the whole file at start (CSV with a header row, or NDJSON:
one JSON object per line) into :class:`RecordedQuote` rows sorted by time (stable: rows
with the same time keep the file's order). Columns: ``time``, ``symbol``, ``price``,
and optionally ``volume``, ``bid``, ``ask``; anything else is refused, as is a bad
value, with the file and line named. ``time`` is an ISO 8601 date or date-time (UTC
when it has no offset) or Unix seconds.

:class:`ReplayFeed` publishes row ``i`` of a pass at ``start + (t_i - t_0) / speed`` on
``trio.current_time()`` (absolute deadlines, so the schedule never drifts; rows due
at the same moment go out back to back). ``speed`` 1 is the recorded pace; 86,400
plays a day per second. Each quote becomes a :class:`~protocol.PriceData`: ``change``
and ``change_pct`` are against the symbol's first price in the file (the replay's
"open"), ``bid`` and ``ask`` default to the price, ``volume`` is passed through as
recorded (0 when absent).

After the last row the feed announces the end of the pass in a ``notification``
and, after :data:`LOOP_PAUSE` seconds, starts over from the first row (a demo keeps
running). The position survives a restart by the supervisor.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NoReturn

import attrs
import orjson
import trio

from protocol import SYMBOL_PATTERN, Channel, NotificationData, NotificationType, PriceData

from ._files import read_text
from ._publisher import Publisher

#: Largest replay file read, in bytes.
MAX_REPLAY_BYTES: Final = 64 * 1024 * 1024
#: Most rows a replay file may hold.
MAX_REPLAY_ROWS: Final = 1_000_000
#: Fastest replay: about 30 years of quotes per second.
MAX_REPLAY_SPEED: Final = 1e9
#: Seconds between the end of a pass and the start of the next.
LOOP_PAUSE: Final = 1.0

REQUIRED_COLUMNS: Final = ("time", "symbol", "price")
OPTIONAL_COLUMNS: Final = ("volume", "bid", "ask")
_SYMBOL_RE: Final = re.compile(SYMBOL_PATTERN)
_MAX_SAFE_INTEGER: Final = 2**53 - 1


@attrs.frozen
class RecordedQuote:
    """One row of a replay file. ``time`` is Unix seconds."""

    time: float
    symbol: str
    price: float
    volume: int = 0
    bid: float | None = None
    ask: float | None = None


def _time(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"time must be an ISO 8601 date or Unix seconds, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(
                    f"time must be an ISO 8601 date or Unix seconds, got {value!r}"
                ) from None
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)
            seconds = stamp.timestamp()
    else:
        raise ValueError(f"time must be an ISO 8601 date or Unix seconds, got {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"time must be finite, got {value!r}")
    return seconds


def _positive(name: str, value: Any) -> float:
    number: float
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    else:
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number above 0, got {value!r}")
    return number


def _volume(value: Any) -> int:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0
        try:
            value = int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                raise ValueError(f"volume must be a whole number, got {value!r}") from None
            if not as_float.is_integer():
                raise ValueError(f"volume must be a whole number, got {text!r}") from None
            value = int(as_float)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_SAFE_INTEGER:
        raise ValueError(f"volume must be a whole number from 0 to 2^53-1, got {value!r}")
    return value


def _row(fields: Mapping[str, Any]) -> RecordedQuote:
    symbol = fields.get("symbol")
    if not isinstance(symbol, str) or not _SYMBOL_RE.fullmatch(symbol.strip()):
        raise ValueError(f"symbol must be a ticker matching {SYMBOL_PATTERN}, got {symbol!r}")

    def optional(name: str) -> float | None:
        value = fields.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return _positive(name, value)

    bid, ask = optional("bid"), optional("ask")
    price = _positive("price", fields.get("price"))
    if bid is not None and ask is not None and bid > ask:
        raise ValueError(f"bid {bid} is above ask {ask}")
    return RecordedQuote(
        time=_time(fields.get("time")),
        symbol=symbol.strip(),
        price=price,
        volume=_volume(fields.get("volume", 0)),
        bid=bid,
        ask=ask,
    )


def _check_columns(columns: list[str], where: str) -> None:
    allowed = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    for column in columns:
        if column not in allowed:
            raise ValueError(
                f"{where}: unknown column {column!r} (columns: time, symbol, price, "
                "and optionally volume, bid, ask)"
            )
    for column in REQUIRED_COLUMNS:
        if column not in columns:
            raise ValueError(f"{where}: missing column {column!r}")


def _csv_rows(text: str, path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path}: empty file (expected a header row: time,symbol,price,...)")
    columns = [name.strip().lower() for name in header]
    _check_columns(columns, f"{path}:1")
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            raise ValueError(
                f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(columns)}"
            )
        yield reader.line_num, dict(zip(columns, row, strict=True))


def _ndjson_rows(text: str, path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{number}: each line must be a JSON object")
        _check_columns(list(obj), f"{path}:{number}")
        yield number, obj


def load_quotes(path: Path) -> tuple[RecordedQuote, ...]:
    """The rows of the replay file ``path``, sorted by time (see the module doc).

    ``.csv`` files are CSV; ``.ndjson``, ``.jsonl`` and ``.json`` files are NDJSON.
    Raises :exc:`ValueError` naming the file (and line) when it cannot be read, is
    over :data:`MAX_REPLAY_BYTES` or :data:`MAX_REPLAY_ROWS`, has no rows, or has a
    bad column or value.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        parse = _csv_rows
    elif suffix in (".ndjson", ".jsonl", ".json"):
        parse = _ndjson_rows
    else:
        raise ValueError(f"{path}: replay files are .csv or .ndjson (.jsonl), not {suffix!r}")
    text = read_text(path, limit=MAX_REPLAY_BYTES)
    quotes: list[RecordedQuote] = []
    for line, fields in parse(text, path):
        if len(quotes) >= MAX_REPLAY_ROWS:
            raise ValueError(f"{path}: more than {MAX_REPLAY_ROWS} rows")
        try:
            quotes.append(_row(fields))
        except ValueError as exc:
            raise ValueError(f"{path}:{line}: {exc}") from None
    if not quotes:
        raise ValueError(f"{path}: no quotes")
    quotes.sort(key=lambda quote: quote.time)
    return tuple(quotes)


def _check_speed(_: object, __: object, value: float) -> None:
    if not 0 < value <= MAX_REPLAY_SPEED:  # also rejects NaN
        raise ValueError(f"replay speed must be > 0 and <= {MAX_REPLAY_SPEED:g}, got {value!r}")


class ReplayFeed:
    """Publishes the quotes of a replay file on their recorded schedule (see the
    module doc). Build with :meth:`from_file` or from rows."""

    def __init__(
        self, quotes: tuple[RecordedQuote, ...], *, speed: float = 1.0, name: str = "replay"
    ) -> None:
        if not quotes:
            raise ValueError("a replay needs at least one quote")
        _check_speed(None, None, speed)
        self.quotes = tuple(sorted(quotes, key=lambda quote: quote.time))
        self.speed = speed
        self.name = name
        self.opens: dict[str, float] = {}
        for quote in self.quotes:
            self.opens.setdefault(quote.symbol, quote.price)
        self._index = 0
        self.passes = 0
        self.published = 0

    @classmethod
    def from_file(cls, path: Path, *, speed: float = 1.0) -> ReplayFeed:
        """A replay of ``path``; raises :exc:`ValueError` as :func:`load_quotes` does."""
        return cls(load_quotes(path), speed=speed, name=path.name)

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols of the file, in order of first appearance: ``welcome.symbols``."""
        return tuple(self.opens)

    def quote(self, row: RecordedQuote) -> PriceData:
        """The :class:`~protocol.PriceData` published for ``row``."""
        open_ = self.opens[row.symbol]
        change = row.price - open_
        return PriceData(
            price=row.price,
            change=round(change, 2),
            change_pct=round(change / open_ * 100.0, 2),
            volume=row.volume,
            bid=row.price if row.bid is None else row.bid,
            ask=row.price if row.ask is None else row.ask,
        )

    async def run(
        self, publisher: Publisher, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Publish the file's quotes on ``Channel.PRICES``, pass after pass, until
        cancelled; never returns.

        Reports ``task_status.started()`` at once and publishes the next row
        immediately (the first row of the file at the first run). Blocks in
        ``publisher.publish`` while the bus is full; the schedule then catches up
        without skipping rows. Exceptions from ``publisher`` propagate; a restarted
        run resumes at the row it had reached.
        """
        task_status.started()
        quotes, speed = self.quotes, self.speed
        while True:
            start = trio.current_time()
            origin = quotes[self._index].time
            while self._index < len(quotes):
                row = quotes[self._index]
                await trio.sleep_until(start + (row.time - origin) / speed)
                await publisher.publish(Channel.PRICES, self.quote(row), symbol=row.symbol)
                self._index += 1
                self.published += 1
            self.passes += 1
            self._index = 0
            await publisher.publish(
                Channel.NOTIFICATIONS,
                NotificationData(
                    id=f"replay-{self.name}-pass-{self.passes}",
                    message=f"Replay of {self.name} finished pass {self.passes} "
                    f"({len(quotes)} quotes); starting over in {LOOP_PAUSE:g}s",
                    type=NotificationType.INFO,
                ),
            )
            await trio.sleep(LOOP_PAUSE)
