"""Every message of wire protocol v1 as a frozen value type.

The classes know nothing of the wire: the codecs in ``_codec`` turn them into JSON or
MessagePack and back. Field metadata carries the constraints that the strict decoder
checks and the JSON Schema export publishes (``pattern``, ``minimum``, ...).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Final, TypeAlias

import attrs

PROTOCOL_VERSION: Final = "1"

#: Tickers: a letter, then up to 9 of ``A-Z 0-9 . -`` (``AAPL``, ``BRK.B``, ``SYN0042``).
SYMBOL_PATTERN: Final = r"^[A-Z][A-Z0-9.\-]{0,9}$"
#: Client ids in ``/ws/{client_id}``.
CLIENT_ID_PATTERN: Final = r"^[A-Za-z0-9_.:\-]{1,64}$"
#: Longest request ``id`` string, and the integer range a JavaScript client can hold exactly.
MAX_ID_LENGTH: Final = 64
MAX_SAFE_INTEGER: Final = 2**53 - 1

_SYMBOL = {"pattern": SYMBOL_PATTERN}
#: A request's symbol list: never empty (omitting it means every symbol).
_SYMBOL_LIST = {"items": _SYMBOL, "minItems": 1}
_NON_NEGATIVE = {"minimum": 0}


class Channel(enum.StrEnum):
    """What a client can subscribe to."""

    PRICES = "prices"
    ALERTS = "alerts"
    SIGNALS = "signals"
    PORTFOLIO = "portfolio"
    NOTIFICATIONS = "notifications"


class SignalAction(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"
    HOLD = "hold"


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class NotificationType(enum.StrEnum):
    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    ERROR = "error"


#: A request ``id``: a string of at most 64 characters or a safe integer. Echoed in the reply.
RequestId: TypeAlias = str | int


# --- client to server ---------------------------------------------------------


@attrs.frozen(kw_only=True)
class Subscribe:
    """Subscribe to a channel; repeated subscribes to prices add symbols.

    ``symbols`` only on prices; ``None`` means every symbol. ``since`` asks for a
    replay of the channel's messages with ``seq > since`` in history ``epoch``.
    """

    channel: Channel
    symbols: tuple[str, ...] | None = attrs.field(default=None, metadata=_SYMBOL_LIST)
    since: int | None = attrs.field(default=None, metadata=_NON_NEGATIVE)
    epoch: str | None = None
    id: RequestId | None = None


@attrs.frozen(kw_only=True)
class Unsubscribe:
    """Drop symbols from a prices subscription, or, without symbols, the whole channel."""

    channel: Channel
    symbols: tuple[str, ...] | None = attrs.field(default=None, metadata=_SYMBOL_LIST)
    id: RequestId | None = None


@attrs.frozen(kw_only=True)
class Ping:
    id: RequestId | None = None


@attrs.frozen(kw_only=True)
class Auth:
    """Authenticate with a token: the first message of a connection that sent no
    ``Authorization`` header, or, on an open connection, a refresh for the same user."""

    token: str = attrs.field(metadata={"minLength": 1}, repr=False)
    id: RequestId | None = None


ClientMessage: TypeAlias = Subscribe | Unsubscribe | Ping | Auth


# --- server to client: data payloads ------------------------------------------


@attrs.frozen(kw_only=True)
class PriceData:
    price: float
    change: float
    change_pct: float
    volume: int = attrs.field(metadata=_NON_NEGATIVE)
    bid: float
    ask: float


@attrs.frozen(kw_only=True)
class AlertData:
    id: str
    symbol: str = attrs.field(metadata=_SYMBOL)
    #: The kind of rule that fired, e.g. ``price_above``, ``percent_move``, ``volume_spike``.
    type: str
    message: str
    severity: Severity


@attrs.frozen(kw_only=True)
class SignalData:
    symbol: str = attrs.field(metadata=_SYMBOL)
    action: SignalAction
    confidence: float = attrs.field(metadata={"minimum": 0, "maximum": 1})
    reasoning: str


@attrs.frozen(kw_only=True)
class Position:
    symbol: str = attrs.field(metadata=_SYMBOL)
    quantity: float
    avg_cost: float
    price: float
    market_value: float
    unrealized_pnl: float
    unrealized_pnl_pct: float


@attrs.frozen(kw_only=True)
class PortfolioData:
    total_value: float
    cash: float
    day_change: float
    day_change_pct: float
    positions: tuple[Position, ...]


@attrs.frozen(kw_only=True)
class NotificationData:
    id: str
    message: str
    type: NotificationType


#: The payload of each channel's event message (prices also carry ``symbol`` outside it).
EventData: TypeAlias = PriceData | AlertData | SignalData | PortfolioData | NotificationData


# --- server to client: messages -------------------------------------------------


@attrs.frozen(kw_only=True)
class Welcome:
    """First message on every connection."""

    client_id: str = attrs.field(metadata={"pattern": CLIENT_ID_PATTERN})
    protocol: str
    server: str
    channels: tuple[Channel, ...]
    symbols: tuple[str, ...] = attrs.field(metadata={"items": _SYMBOL})
    heartbeat_interval: float
    #: Identity of the history that ``seq`` numbers count in; changes when history is lost.
    epoch: str
    timestamp: datetime


@attrs.frozen(kw_only=True)
class Subscribed:
    """Ack of ``subscribe``. ``symbols``: the connection's prices symbols now; absent = all.
    ``seq``: the subscription's position in the channel's stream (not on prices): the
    messages of the channel that follow this ack are exactly those with a greater
    ``seq`` (in the ``welcome``'s epoch), so a client resumes from it with ``since``
    even when none has arrived yet. It is the channel's current ``seq`` (0 before its
    first message), or on a resume the request's ``since``. Prices count ``seq`` per
    symbol and are resumed by the snapshot of each symbol's last price, not by replay.
    """

    channel: Channel
    symbols: tuple[str, ...] | None = attrs.field(default=None, metadata={"items": _SYMBOL})
    seq: int | None = attrs.field(default=None, metadata=_NON_NEGATIVE)
    id: RequestId | None = None
    timestamp: datetime


@attrs.frozen(kw_only=True)
class Unsubscribed:
    """Ack of ``unsubscribe``. ``symbols``: the prices symbols still subscribed, if any.

    Also sent unasked when the server ends a subscription: ``reason`` then says why
    (a refreshed token no longer grants the channel or symbols).
    """

    channel: Channel
    symbols: tuple[str, ...] | None = attrs.field(default=None, metadata={"items": _SYMBOL})
    id: RequestId | None = None
    reason: str | None = None
    timestamp: datetime


@attrs.frozen(kw_only=True)
class PriceUpdate:
    symbol: str = attrs.field(metadata=_SYMBOL)
    data: PriceData
    seq: int = attrs.field(metadata=_NON_NEGATIVE)
    timestamp: datetime


@attrs.frozen(kw_only=True)
class AlertTriggered:
    data: AlertData
    seq: int = attrs.field(metadata=_NON_NEGATIVE)
    timestamp: datetime


@attrs.frozen(kw_only=True)
class TradingSignal:
    data: SignalData
    seq: int = attrs.field(metadata=_NON_NEGATIVE)
    timestamp: datetime


@attrs.frozen(kw_only=True)
class PortfolioUpdate:
    data: PortfolioData
    seq: int = attrs.field(metadata=_NON_NEGATIVE)
    timestamp: datetime


@attrs.frozen(kw_only=True)
class Notification:
    data: NotificationData
    seq: int = attrs.field(metadata=_NON_NEGATIVE)
    timestamp: datetime


@attrs.frozen(kw_only=True)
class Pong:
    id: RequestId | None = None
    timestamp: datetime


@attrs.frozen(kw_only=True)
class ErrorReply:
    """The ``error`` message: ``error`` is a sentence a person can act on."""

    error: str
    code: str
    id: RequestId | None = None
    timestamp: datetime


EventMessage: TypeAlias = (
    PriceUpdate | AlertTriggered | TradingSignal | PortfolioUpdate | Notification
)
ServerMessage: TypeAlias = Welcome | Subscribed | Unsubscribed | EventMessage | Pong | ErrorReply
Message: TypeAlias = ClientMessage | ServerMessage

#: The ``type`` tag of every message class: the one tagged union of the protocol.
MESSAGE_TYPES: Final[dict[type[Message], str]] = {
    Subscribe: "subscribe",
    Unsubscribe: "unsubscribe",
    Ping: "ping",
    Auth: "auth",
    Welcome: "welcome",
    Subscribed: "subscribed",
    Unsubscribed: "unsubscribed",
    PriceUpdate: "price_update",
    AlertTriggered: "alert_triggered",
    TradingSignal: "trading_signal",
    PortfolioUpdate: "portfolio_update",
    Notification: "notification",
    Pong: "pong",
    ErrorReply: "error",
}
CLIENT_MESSAGE_CLASSES: Final = (Subscribe, Unsubscribe, Ping, Auth)
SERVER_MESSAGE_CLASSES: Final = tuple(c for c in MESSAGE_TYPES if c not in CLIENT_MESSAGE_CLASSES)

#: Which event message and payload each channel carries.
CHANNEL_EVENTS: Final[dict[Channel, tuple[type[EventMessage], type[EventData]]]] = {
    Channel.PRICES: (PriceUpdate, PriceData),
    Channel.ALERTS: (AlertTriggered, AlertData),
    Channel.SIGNALS: (TradingSignal, SignalData),
    Channel.PORTFOLIO: (PortfolioUpdate, PortfolioData),
    Channel.NOTIFICATIONS: (Notification, NotificationData),
}
