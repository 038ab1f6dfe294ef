"""Any input gives a message or the documented error: nothing else, and no hang."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
from hypothesis import given
from hypothesis import strategies as st

import protocol as p

from .strategies import client_messages

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
# Objects that look like requests, so the fuzzer gets past the first checks.
request_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["subscribe", "unsubscribe", "ping", "pong", "x"])},
    optional={
        "channel": st.sampled_from([*p.Channel, "nope"]) | json_values,
        "symbols": st.lists(st.sampled_from(["AAPL", "bad", ""]) | json_values, max_size=4)
        | json_values,
        "since": json_values,
        "epoch": json_values,
        "id": json_values,
        "extra": json_values,
    },
)


def decode_or_error(data: bytes | str, codec: p.Codec) -> p.ClientMessage | None:
    """Decode; a RemoteProtocolError with a documented code is fine, anything else fails."""
    try:
        return p.decode_client(data, codec)
    except p.RemoteProtocolError as exc:
        error = exc
    assert isinstance(error.code, p.ErrorCode)
    assert error.message
    assert error.request_id is None or isinstance(error.request_id, str | int)
    return None


@given(st.binary(max_size=256))
def test_arbitrary_bytes(data: bytes) -> None:
    for codec in p.Codec:
        decode_or_error(data, codec)


@given(st.text(max_size=256))
def test_arbitrary_text(data: str) -> None:
    decode_or_error(data, p.Codec.JSON)


@given(json_values | request_like)
def test_arbitrary_json_and_msgpack_values(value: Any) -> None:
    decode_or_error(orjson.dumps(value), p.Codec.JSON)
    decode_or_error(msgpack.packb(value), p.Codec.MSGPACK)


@given(client_messages, st.data())
def test_mutated_valid_messages(message: p.ClientMessage, data: st.DataObject) -> None:
    wire = bytearray(p.encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(wire) - 1))
        action = data.draw(st.sampled_from(["flip", "drop", "insert"]))
        if action == "flip":
            wire[index] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "drop":
            del wire[index]
        else:
            wire.insert(index, data.draw(st.integers(0, 255)))
        if not wire:
            break
    decode_or_error(bytes(wire), p.Codec.JSON)


@given(
    client_messages,
    st.sampled_from(["channel", "symbols", "since", "epoch", "id", "type"]),
    json_values,
)
def test_valid_messages_with_one_field_replaced(
    message: p.ClientMessage, field: str, value: Any
) -> None:
    document = orjson.loads(p.encode(message))
    document[field] = value
    decoded = decode_or_error(orjson.dumps(document), p.Codec.JSON)
    if decoded is not None:  # whatever was accepted must be a faithful message
        assert orjson.loads(p.encode(decoded)) == {
            k: v for k, v in document.items() if v is not None
        } | {"type": p.MESSAGE_TYPES[type(decoded)]}


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert decode_or_error(deep, p.Codec.JSON) is None
    deep_pack = b"\x91" * 100_000 + b"\xc0"
    assert decode_or_error(deep_pack, p.Codec.MSGPACK) is None
