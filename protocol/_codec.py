"""Codecs: messages to bytes and back, as JSON (orjson) or MessagePack.

One cattrs converter per codec and strictness. The strict converters decode what
clients send: they refuse coercion (``"12"`` is not 12, ``"abc"`` is not a list,
``true`` is not 1, ``null`` is not a value), unknown fields and unknown tags, and
every refusal becomes a :class:`RemoteProtocolError` with a documented code and a
sentence naming the field. The lenient converters decode what a server sends, for
clients, and skip fields they do not know, as protocol v1 asks of clients.
"""

from __future__ import annotations

import enum
import json
import math
import re
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, TypeVar, get_args

import attrs
import cattrs
import msgpack
import orjson
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_unstructure_fn
from cattrs.preconf.msgpack import make_converter as make_msgpack_converter
from cattrs.preconf.orjson import make_converter as make_orjson_converter

from ._codes import CloseCode, ErrorCode
from ._errors import LocalProtocolError, RemoteProtocolError
from ._messages import (
    CLIENT_MESSAGE_CLASSES,
    MAX_ID_LENGTH,
    MAX_SAFE_INTEGER,
    MESSAGE_TYPES,
    SERVER_MESSAGE_CLASSES,
    SYMBOL_PATTERN,
    Channel,
    ClientMessage,
    Message,
    NotificationType,
    RequestId,
    ServerMessage,
    Severity,
    SignalAction,
    Subscribe,
    Unsubscribe,
)

T = TypeVar("T")


class Codec(enum.Enum):
    """A wire encoding, chosen per connection by WebSocket subprotocol."""

    JSON = "realtime.v1.json"
    MSGPACK = "realtime.v1.msgpack"

    @property
    def subprotocol(self) -> str:
        return self.value

    @property
    def is_text(self) -> bool:
        """JSON travels in text frames, MessagePack in binary frames."""
        return self is Codec.JSON

    @classmethod
    def for_subprotocol(cls, subprotocol: str | None) -> Codec:
        """The codec for a negotiated subprotocol; none means JSON."""
        return cls(subprotocol) if subprotocol is not None else cls.JSON


@attrs.frozen
class Limits:
    """The decoder's bounds (DESIGN.md, "Limits")."""

    #: Largest accepted inbound message, in bytes.
    max_message_size: int = 64 * 1024
    #: Most price symbols one connection may hold, and so one request may name.
    max_symbols: int = 500


DEFAULT_LIMITS: Final = Limits()

_CLIENT_TAGS: Final = {MESSAGE_TYPES[cls]: cls for cls in CLIENT_MESSAGE_CLASSES}
_SERVER_TAGS: Final = {MESSAGE_TYPES[cls]: cls for cls in SERVER_MESSAGE_CLASSES}


# --- strict scalar hooks ----------------------------------------------------------


class _Null(Exception):
    """An explicit null where a value or nothing (an absent field) was expected."""


class _Mistyped(Exception):
    """A value of the wrong JSON type; the walker below adds the field's name."""

    def __init__(self, expected: str, value: object) -> None:
        super().__init__(expected)
        self.expected = expected
        self.value = value


def _json_type(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a number"
        case str():
            return "a string"
        case list() | tuple():
            return "an array"
        case dict():
            return "an object"
        case _:
            return type(value).__name__


def _structure_str(value: object, _: object) -> str:
    if type(value) is not str:
        raise _Mistyped("a string", value)
    return value


def _structure_int(value: object, _: object) -> int:
    if type(value) is not int or not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise _Mistyped("an integer", value)
    return value


def _structure_float(value: object, _: object) -> float:
    if type(value) is float:
        if math.isfinite(value):
            return value
    elif type(value) is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return float(value)
    raise _Mistyped("a finite number", value)


def _structure_request_id(value: object, _: object) -> RequestId:
    if type(value) is str and 1 <= len(value) <= MAX_ID_LENGTH:
        return value
    if type(value) is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    raise _Mistyped(
        f"a string of 1-{MAX_ID_LENGTH} characters or an integer within ±(2**53 - 1)", value
    )


def _structure_channel(value: object, _: object) -> Channel:
    if type(value) is not str:
        raise _Mistyped("a string", value)
    try:
        return Channel(value)
    except ValueError:
        raise RemoteProtocolError(ErrorCode.UNKNOWN_CHANNEL, f"Unknown channel: {value}") from None


def _enum_hook(enum_type: type[enum.Enum]) -> Callable[[object, object], enum.Enum]:
    choices = ", ".join(str(member.value) for member in enum_type)

    def structure(value: object, _: object) -> enum.Enum:
        try:
            return enum_type(value)
        except ValueError:
            raise _Mistyped(f"one of {choices}", value) from None

    return structure


def _is_homogeneous_tuple(type_: Any) -> bool:
    args = get_args(type_)
    return getattr(type_, "__origin__", None) is tuple and len(args) == 2 and args[1] is ...


def _is_optional(type_: Any) -> bool:
    args = get_args(type_)
    return len(args) > 1 and type(None) in args


def _utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value
    if value.utcoffset() is None:
        raise LocalProtocolError(f"timestamp must be timezone-aware, got {value!r}")
    return value.astimezone(UTC)


# Timestamps are written by orjson's C datetime formatter (RFC 3339 with "Z"; the
# fraction shows microseconds and is left out when they are zero): isoformat() costs
# five times as much, and price updates are stamped on the hot path.
_TIMESTAMP_OPTION: Final = orjson.OPT_UTC_Z


def _unstructure_timestamp_json(value: datetime) -> datetime:
    return _utc(value)  # serialized by orjson itself


def _unstructure_timestamp_text(value: datetime) -> str:
    return orjson.dumps(_utc(value), option=_TIMESTAMP_OPTION)[1:-1].decode()


def _structure_timestamp(value: object, _: object) -> datetime:
    if type(value) is str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.utcoffset() is not None:
                return parsed.astimezone(UTC)
    raise _Mistyped("an ISO 8601 timestamp with a time zone", value)


def _configure(
    converter: cattrs.Converter,
    *,
    strict: bool,
    unstructure_timestamp: Callable[[datetime], datetime | str],
) -> cattrs.Converter:
    """Install the protocol's hooks; later registrations win over the preconf ones."""
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    # A factory, not a plain hook: the preconf union passthrough would win over a hook.
    converter.register_structure_hook_factory(
        lambda t: t == RequestId, lambda _: _structure_request_id
    )
    converter.register_structure_hook(Channel, _structure_channel)
    converter.register_structure_hook(datetime, _structure_timestamp)
    converter.register_unstructure_hook(datetime, unstructure_timestamp)
    # Registered per class: the str enums would otherwise dispatch to the str hook.
    for enum_type in (SignalAction, Severity, NotificationType):
        converter.register_structure_hook(enum_type, _enum_hook(enum_type))

    def tuple_hook(type_: Any) -> Callable[[object, object], tuple[Any, ...]]:
        item_type = get_args(type_)[0]
        structure_item = converter.get_structure_hook(item_type)

        def structure(value: object, _: object) -> tuple[Any, ...]:
            if type(value) is not list and type(value) is not tuple:
                raise _Mistyped("an array", value)
            items = []
            for index, item in enumerate(value):
                try:
                    items.append(structure_item(item, item_type))
                except Exception as exc:
                    exc.__notes__ = [IterableValidationNote(f"@ index {index}", index, item_type)]
                    raise IterableValidationError("invalid item", [exc], type_) from None
            return tuple(items)

        return structure

    converter.register_structure_hook_factory(_is_homogeneous_tuple, tuple_hook)

    if strict:
        # An explicit null is a mistyped value, not an absent field.
        def optional_hook(type_: Any) -> Callable[[object, object], Any]:
            inner = [arg for arg in get_args(type_) if arg is not type(None)]
            inner_type = inner[0] if len(inner) == 1 else RequestId
            structure_inner = converter.get_structure_hook(inner_type)

            def structure(value: object, _: object) -> Any:
                if value is None:
                    raise _Null
                return structure_inner(value, inner_type)

            return structure

        converter.register_structure_hook_factory(_is_optional, optional_hook)

    for cls in MESSAGE_TYPES:
        converter.register_unstructure_hook(
            cls, make_dict_unstructure_fn(cls, converter, _cattrs_omit_if_default=True)
        )
    return converter


@attrs.frozen
class _CodecImpl:
    loads: Callable[[bytes | str], Any]
    #: ``loads`` that also refuses an object with a repeated key (client input).
    loads_unique: Callable[[bytes | str], Any]
    format_name: str
    strict: cattrs.Converter
    lenient: cattrs.Converter
    #: Per message class: message -> wire bytes, with the ``type`` tag first.
    encoders: dict[type[Message], Callable[[Any], bytes]]


def _build(
    make_converter: Callable[..., cattrs.Converter],
    dumps: Callable[[Any], bytes],
    loads: Callable[[bytes | str], Any],
    loads_unique: Callable[[bytes | str], Any],
    format_name: str,
    unstructure_timestamp: Callable[[datetime], datetime | str],
) -> _CodecImpl:
    strict, lenient = (
        _configure(
            make_converter(forbid_extra_keys=forbid),
            strict=forbid,
            unstructure_timestamp=unstructure_timestamp,
        )
        for forbid in (True, False)
    )

    def encoder(cls: type[Message]) -> Callable[[Any], bytes]:
        tag = MESSAGE_TYPES[cls]
        unstructure = strict.get_unstructure_hook(cls)
        return lambda message: dumps({"type": tag, **unstructure(message)})

    encoders = {c: encoder(c) for c in MESSAGE_TYPES}
    return _CodecImpl(loads, loads_unique, format_name, strict, lenient, encoders)


def _msgpack_loads(data: bytes | str, **options: Any) -> Any:
    if isinstance(data, str):
        raise ValueError("a MessagePack connection takes binary frames, not text")
    return msgpack.unpackb(data, raw=False, strict_map_key=True, **options)


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """An object from its key-value pairs; a key given twice is refused, since which
    of the two values counts would be the parser's choice, not the sender's."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[Any] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _json_loads_unique(data: bytes | str) -> Any:
    obj = orjson.loads(data)  # validity as orjson judges it, and the value returned
    json.loads(data, object_pairs_hook=_unique_keys)  # orjson keeps the last of two keys
    return obj


_CODECS: Final = {
    Codec.JSON: _build(
        make_orjson_converter,
        partial(orjson.dumps, option=_TIMESTAMP_OPTION),
        orjson.loads,
        _json_loads_unique,
        "JSON",
        _unstructure_timestamp_json,
    ),
    Codec.MSGPACK: _build(
        make_msgpack_converter,
        msgpack.Packer(autoreset=True).pack,
        _msgpack_loads,
        partial(_msgpack_loads, object_pairs_hook=_unique_keys),
        "MessagePack",
        _unstructure_timestamp_text,
    ),
}


# --- encode -----------------------------------------------------------------------


def encode(message: Message, codec: Codec = Codec.JSON) -> bytes:
    """The wire form of ``message``: UTF-8 JSON text, or MessagePack.

    Raises :class:`LocalProtocolError` for something that is not a protocol message
    or cannot be encoded (a naive timestamp). Floats are trusted to be finite: every
    decoder refuses non-finite numbers, so only our own code could build one.
    """
    try:
        encoder = _CODECS[codec].encoders[type(message)]
    except KeyError:
        raise LocalProtocolError(f"not a protocol message: {message!r}") from None
    try:
        return encoder(message)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {message!r}: {exc}") from exc


# --- decode -----------------------------------------------------------------------


def decode_client(
    data: bytes | str, codec: Codec = Codec.JSON, limits: Limits = DEFAULT_LIMITS
) -> ClientMessage:
    """Decode and validate one message a client sent.

    Raises :class:`RemoteProtocolError` and nothing else for bad input, with the
    request's ``id`` attached when it could be read. An oversized message carries
    ``close_code`` 1009: it is answered by closing the connection.
    """
    if _size(data) > limits.max_message_size:
        raise RemoteProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"Message too big: the limit is {limits.max_message_size} bytes",
            close_code=CloseCode.MESSAGE_TOO_BIG,
        )
    impl = _CODECS[codec]
    obj = _loads(impl.loads_unique, impl.format_name, data)
    request_id = _readable_request_id(obj)
    try:
        message = _structure_tagged(impl.strict, obj, _CLIENT_TAGS, "a client")
        if isinstance(message, Subscribe | Unsubscribe):
            _check_request(message, limits)
        _check_constraints(message)
    except RemoteProtocolError as exc:
        exc.request_id = request_id
        raise
    return typing.cast(ClientMessage, message)


def decode_server(data: bytes | str, codec: Codec = Codec.JSON) -> ServerMessage:
    """Decode one message a server sent, skipping fields this version does not know.

    A message type this version does not know raises :class:`RemoteProtocolError`
    with ``unknown_type``: clients should skip it, as protocol v1 asks.
    """
    impl = _CODECS[codec]
    obj = _loads(impl.loads, impl.format_name, data)
    return typing.cast(
        ServerMessage, _structure_tagged(impl.lenient, obj, _SERVER_TAGS, "a server")
    )


def structure_strict(value: object, cls: type[T], codec: Codec = Codec.JSON) -> T:
    """Validate already-parsed data as ``cls`` with the client-side strictness.

    For inputs that arrive by other paths than a WebSocket frame (the publish API).
    """
    try:
        result = _CODECS[codec].strict.structure(value, cls)
    except Exception as exc:
        raise _translate(exc, ()) from None
    _check_constraints(result)
    return result


def _size(data: bytes | str) -> int:
    if isinstance(data, str):
        return len(data.encode("utf-8", "surrogatepass"))
    return len(data)


def _loads(loads: Callable[[bytes | str], Any], format_name: str, data: bytes | str) -> Any:
    try:
        obj = loads(data)
    except Exception as exc:  # each library raises its own family of errors
        raise RemoteProtocolError(
            ErrorCode.INVALID_JSON, f"Message is not valid {format_name}: {exc}"
        ) from None
    if type(obj) is not dict:
        raise RemoteProtocolError(
            ErrorCode.INVALID_MESSAGE, f"Message must be an object, got {_json_type(obj)}"
        )
    return obj


def _readable_request_id(obj: dict[Any, Any]) -> RequestId | None:
    try:
        return _structure_request_id(obj.get("id"), RequestId)
    except _Mistyped:
        return None


def _structure_tagged(
    converter: cattrs.Converter, obj: dict[Any, Any], tags: dict[str, type[Any]], sender: str
) -> Any:
    if "type" not in obj:
        raise RemoteProtocolError(ErrorCode.INVALID_MESSAGE, "Missing field: type")
    tag = obj["type"]
    if type(tag) is not str:
        raise RemoteProtocolError(
            ErrorCode.INVALID_MESSAGE, f"Field 'type' must be a string, got {_json_type(tag)}"
        )
    cls = tags.get(tag)
    if cls is None:
        known = ", ".join(tags)
        raise RemoteProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"Unknown message type: {tag!r}; {sender} may send {known}",
        )
    fields = {key: value for key, value in obj.items() if key != "type"}
    try:
        return converter.structure(fields, cls)
    except Exception as exc:
        raise _translate(exc, ()) from None


def _translate(exc: BaseException, path: tuple[str | int, ...]) -> RemoteProtocolError:
    """Turn what cattrs or our hooks raised into one error naming the field."""
    if isinstance(exc, RemoteProtocolError):
        return exc
    if isinstance(exc, ClassValidationError | IterableValidationError):
        inner = exc.exceptions[0]
        for note in getattr(inner, "__notes__", ()):
            if isinstance(note, AttributeValidationNote):
                return _translate(inner, (*path, note.name))
            if isinstance(note, IterableValidationNote):
                return _translate(inner, (*path, note.index))
        return _translate(inner, path)
    field = _field_name(path)
    if isinstance(exc, ForbiddenExtraKeysError):
        prefix = f"{field}." if field else ""
        names = ", ".join(f"{prefix}{name}" for name in sorted(exc.extra_fields))
        return RemoteProtocolError(ErrorCode.INVALID_MESSAGE, f"Unknown field: {names}")
    if isinstance(exc, KeyError):
        return RemoteProtocolError(ErrorCode.INVALID_MESSAGE, f"Missing field: {field}")
    if isinstance(exc, _Null):
        return RemoteProtocolError(
            ErrorCode.INVALID_MESSAGE, f"Field '{field}' must not be null; omit it instead"
        )
    if isinstance(exc, _Mistyped):
        where = f"Field '{field}'" if field else "The value"
        return RemoteProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"{where} must be {exc.expected}, got {_json_type(exc.value)}",
        )
    return RemoteProtocolError(ErrorCode.INVALID_MESSAGE, f"Invalid value for field '{field}'")


def _field_name(path: tuple[str | int, ...]) -> str:
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


# --- constraints beyond types --------------------------------------------------------


def _check_constraints(value: Any, path: tuple[str | int, ...] = ()) -> None:
    """Check the ``pattern`` / ``minLength`` / ``minimum`` / ``maximum`` metadata of every
    field."""
    for field in attrs.fields(type(value)):
        item = getattr(value, field.name)
        where = (*path, field.name)
        if item is None:
            continue
        constraints = field.metadata
        if "items" in constraints:
            for index, element in enumerate(item):
                _check_value(element, constraints["items"], (*where, index))
        elif constraints:
            _check_value(item, constraints, where)
        if attrs.has(type(item)):
            _check_constraints(item, where)
        elif type(item) is tuple:
            for index, element in enumerate(item):
                if attrs.has(type(element)):
                    _check_constraints(element, (*where, index))


def _check_value(value: Any, constraints: Any, path: tuple[str | int, ...]) -> None:
    if "pattern" in constraints and not re.match(constraints["pattern"], value):
        if constraints["pattern"] == SYMBOL_PATTERN:
            raise RemoteProtocolError(
                ErrorCode.INVALID_SYMBOL,
                f"Invalid symbol: {value!r} (in '{_field_name(path)}'); a symbol is 1-10 of "
                "A-Z, 0-9, '.' and '-', starting with a letter, e.g. AAPL",
            )
        raise RemoteProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"Field '{_field_name(path)}' must match {constraints['pattern']}, got {value!r}",
        )
    if "minLength" in constraints and len(value) < constraints["minLength"]:
        raise RemoteProtocolError(
            ErrorCode.INVALID_MESSAGE, f"Field '{_field_name(path)}' must not be empty"
        )
    if "minimum" in constraints and value < constraints["minimum"]:
        raise RemoteProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"Field '{_field_name(path)}' must be at least {constraints['minimum']}",
        )
    if "maximum" in constraints and value > constraints["maximum"]:
        raise RemoteProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"Field '{_field_name(path)}' must be at most {constraints['maximum']}",
        )


def _check_request(message: Subscribe | Unsubscribe, limits: Limits) -> None:
    if isinstance(message, Subscribe) and (message.since is None) != (message.epoch is None):
        raise RemoteProtocolError(
            ErrorCode.INVALID_MESSAGE,
            "Fields 'since' and 'epoch' go together: resume with the seq and the epoch "
            "(from welcome) it counts in",
        )
    symbols = message.symbols
    if symbols is None:
        return
    if message.channel is not Channel.PRICES:
        raise RemoteProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"Channel '{message.channel}' does not take symbols; only 'prices' does",
        )
    if not symbols:
        raise RemoteProtocolError(
            ErrorCode.INVALID_MESSAGE,
            "Field 'symbols' must not be empty; omit it to mean every symbol",
        )
    if len(symbols) > limits.max_symbols:
        raise RemoteProtocolError(
            ErrorCode.TOO_MANY_SYMBOLS,
            f"Too many symbols: {len(symbols)} in one request, the limit is "
            f"{limits.max_symbols} per connection",
        )
