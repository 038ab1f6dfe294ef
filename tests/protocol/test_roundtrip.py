"""decode(encode(m)) == m for every message and codec, and the schema matches the JSON."""

from __future__ import annotations

from typing import Any

import attrs
import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol as p

from .strategies import MESSAGES

CLIENT_CLASSES = (p.Subscribe, p.Unsubscribe, p.Ping, p.Auth)


def test_every_message_type_has_a_strategy() -> None:
    assert set(MESSAGES) == set(p.MESSAGE_TYPES)


@pytest.mark.parametrize("codec", list(p.Codec))
@pytest.mark.parametrize("cls", list(p.MESSAGE_TYPES), ids=lambda c: p.MESSAGE_TYPES[c])
@given(data=st.data())
def test_round_trip(cls: type[Any], codec: p.Codec, data: st.DataObject) -> None:
    message = data.draw(MESSAGES[cls])
    wire = p.encode(message, codec)
    if cls in CLIENT_CLASSES:
        decoded: Any = p.decode_client(wire, codec)
    else:
        decoded = p.decode_server(wire, codec)
    assert decoded == message
    assert repr(decoded) == repr(message)  # same types too: an enum is not its str value


_SCHEMA = p.json_schema()
_VALIDATORS = {
    union: jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{union}", "$defs": _SCHEMA["$defs"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    for union in ("ClientMessage", "ServerMessage")
}


def test_schema_is_a_valid_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(_SCHEMA)


@pytest.mark.parametrize("cls", list(p.MESSAGE_TYPES), ids=lambda c: p.MESSAGE_TYPES[c])
@given(data=st.data())
def test_encoded_json_matches_the_schema(cls: type[Any], data: st.DataObject) -> None:
    document = orjson.loads(p.encode(data.draw(MESSAGES[cls])))
    union = "ClientMessage" if cls in CLIENT_CLASSES else "ServerMessage"
    _VALIDATORS[union].validate(document)


def test_json_is_text_and_timestamps_end_in_z() -> None:
    from datetime import UTC, datetime

    message = p.Pong(id=7, timestamp=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
    assert orjson.loads(p.encode(message)) == {
        "type": "pong",
        "id": 7,
        "timestamp": "2026-01-02T03:04:05.678901Z",
    }
    assert p.encode(message, p.Codec.MSGPACK) != p.encode(message)


def test_absent_optional_fields_are_left_out() -> None:
    from datetime import UTC, datetime

    ack = p.Subscribed(channel=p.Channel.ALERTS, timestamp=datetime(2026, 1, 1, tzinfo=UTC))
    assert orjson.loads(p.encode(ack)) == {
        "type": "subscribed",
        "channel": "alerts",
        "timestamp": "2026-01-01T00:00:00Z",
    }
    positioned = attrs.evolve(ack, seq=0)  # a position of 0 is a value, not an absence
    assert orjson.loads(p.encode(positioned))["seq"] == 0


def test_non_utc_timestamps_are_written_in_utc() -> None:
    from datetime import datetime, timedelta, timezone

    local = datetime(2026, 1, 1, 9, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert orjson.loads(p.encode(p.Pong(timestamp=local)))["timestamp"] == "2026-01-01T14:30:00Z"


def test_encoding_a_naive_timestamp_is_our_bug() -> None:
    from datetime import datetime

    with pytest.raises(p.LocalProtocolError, match="timezone-aware"):
        p.encode(p.Pong(timestamp=datetime(2026, 1, 1)))


def test_encoding_a_non_message_is_our_bug() -> None:
    data = p.PriceData(price=1, change=0, change_pct=0, volume=0, bid=1, ask=1)
    with pytest.raises(p.LocalProtocolError, match="not a protocol message"):
        p.encode(data)  # type: ignore[arg-type]  # the wrong type is the point


def test_server_decoder_skips_unknown_fields() -> None:
    wire = b'{"type":"pong","id":"a","timestamp":"2026-01-01T00:00:00Z","added_in_v1_1":true}'
    assert p.decode_server(wire) == p.Pong(id="a", timestamp=p.decode_server(wire).timestamp)


def test_server_decoder_reports_unknown_types_for_clients_to_skip() -> None:
    with pytest.raises(p.RemoteProtocolError) as info:
        p.decode_server(b'{"type":"added_in_v1_1","timestamp":"2026-01-01T00:00:00Z"}')
    assert info.value.code is p.ErrorCode.UNKNOWN_TYPE
