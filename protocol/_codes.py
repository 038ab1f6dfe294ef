"""Error codes and close codes of protocol v1, with what each means for a client."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final


class ErrorCode(enum.StrEnum):
    """The ``code`` of an ``error`` reply. The connection stays open after every one."""

    #: The frame is not valid JSON (or MessagePack, on a MessagePack connection).
    INVALID_JSON = "invalid_json"
    #: The frame parsed but is not a valid message: not an object, or a field is
    #: missing, mistyped or unknown, or a value is out of range. The text names the field.
    INVALID_MESSAGE = "invalid_message"
    #: The ``type`` is not one a client may send (``subscribe``, ``unsubscribe``, ``ping``,
    #: ``auth``).
    UNKNOWN_TYPE = "unknown_type"
    #: The ``channel`` is not one of the channels listed in ``welcome``.
    UNKNOWN_CHANNEL = "unknown_channel"
    #: A symbol is not of the form of a ticker (1-10 of ``A-Z 0-9 . -``, starting with a letter).
    INVALID_SYMBOL = "invalid_symbol"
    #: A well-formed symbol that is not in the feed's universe (``welcome.symbols``).
    UNKNOWN_SYMBOL = "unknown_symbol"
    #: The request would take the connection past its symbol limit; nothing was changed.
    TOO_MANY_SYMBOLS = "too_many_symbols"
    #: Authentication failed: no token, or one that is invalid or expired, or a refresh
    #: naming another user. Before ``welcome`` the connection then closes with 4401; on
    #: an open connection nothing changed and it stays open.
    UNAUTHORIZED = "unauthorized"
    #: The client's token does not grant this channel or these symbols (the text names
    #: them); nothing was changed.
    FORBIDDEN = "forbidden"
    #: The client sent more messages than its rate allows; this one was dropped.
    #: Repeated breaches close the connection with 4429.
    RATE_LIMITED = "rate_limited"
    #: ``since`` asked for messages the server no longer holds, or counts in another
    #: ``epoch``: the client must resync from the current state instead of replaying.
    HISTORY_UNAVAILABLE = "history_unavailable"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server sends, and whether a client should reconnect.

    What each code means for a client is in :data:`CLOSE_CODE_MEANINGS`: a table
    rather than comments, because the JSON Schema (and through it the browser's
    generated constants) carries those sentences.
    """

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    ABNORMAL_CLOSURE = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    INVALID_CLIENT_ID = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    REPLACED = 4409
    RATE_LIMITED = 4429
    SLOW_CONSUMER = 4499


#: Each close code, and what it means for a client.
CLOSE_CODE_MEANINGS: Final[Mapping[CloseCode, str]] = MappingProxyType(
    {
        CloseCode.NORMAL: "Normal closure. Do not reconnect unless the application wants to.",
        CloseCode.GOING_AWAY: (
            "The server is going away (drain or restart). Reconnect, with jitter, "
            "possibly elsewhere."
        ),
        CloseCode.PROTOCOL_ERROR: (
            "The WebSocket framing was violated. A bug in the client: fix before reconnecting."
        ),
        CloseCode.ABNORMAL_CLOSURE: (
            "The connection was lost without a close frame (RFC 6455 section 7.1.5). Never "
            "sent on the wire: it is what either side reports when the transport broke. "
            "Reconnect."
        ),
        CloseCode.INVALID_DATA: "A text frame was not valid UTF-8. A bug in the client.",
        CloseCode.POLICY_VIOLATION: (
            "The client sent control frames (pings, pongs) faster than the server takes "
            "them. A bug in the client: fix before reconnecting."
        ),
        CloseCode.MESSAGE_TOO_BIG: (
            "An inbound message exceeded the size limit, in bytes or in frames. "
            "Reconnecting and resending will fail again."
        ),
        CloseCode.INTERNAL_ERROR: (
            "The server hit an unexpected condition, or the peer missed its heartbeats. Reconnect."
        ),
        CloseCode.INVALID_CLIENT_ID: (
            "The `client_id` in the URL is not 1-64 of `A-Z a-z 0-9 _ . : -`. "
            "Never reconnect as is."
        ),
        CloseCode.UNAUTHORIZED: (
            "Authentication is missing, invalid or expired. Fetch a new token and reconnect "
            "once; if that is refused too, stop."
        ),
        CloseCode.FORBIDDEN: (
            "The origin or a channel is not allowed for this client, or an administrator "
            "disconnected it. Never reconnect as is."
        ),
        CloseCode.REPLACED: (
            "A newer connection with the same `client_id` replaced this one, or another "
            "user's connection holds that `client_id`. Never reconnect: the newer one would "
            "be replaced in turn; choose another id."
        ),
        CloseCode.RATE_LIMITED: (
            "The client kept exceeding its message rate, or its user has as many "
            "connections open as allowed. Reconnect after backing off."
        ),
        CloseCode.SLOW_CONSUMER: (
            "The client read too slowly and its outbox overflowed. "
            "Reconnect and resume with `since`."
        ),
    }
)

#: Close codes after which a client should reconnect with backoff; after any other code
#: it stops. Both clients (Python and browser) follow this one list.
RECONNECT_CLOSE_CODES = frozenset(
    {
        CloseCode.GOING_AWAY,
        CloseCode.ABNORMAL_CLOSURE,
        CloseCode.INTERNAL_ERROR,
        CloseCode.RATE_LIMITED,
        CloseCode.SLOW_CONSUMER,
    }
)

#: Close codes after which a client must never reconnect on its own: the same request
#: would be refused again.
FATAL_CLOSE_CODES = frozenset(
    {CloseCode.INVALID_CLIENT_ID, CloseCode.FORBIDDEN, CloseCode.REPLACED}
)


#: Close codes after which a client fetches a new token and reconnects once, at once;
#: a second such close in a row is fatal (the token provider keeps failing).
REAUTHENTICATE_CLOSE_CODES = frozenset({CloseCode.UNAUTHORIZED})


def should_reconnect(code: int) -> bool:
    """Whether a client should reconnect (with backoff) after a close with ``code``."""
    return code in RECONNECT_CLOSE_CODES
