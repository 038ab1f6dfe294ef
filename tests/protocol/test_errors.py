"""Every bad input the decoder refuses, with its exact code and a message naming the problem."""

from __future__ import annotations

import msgpack
import orjson
import pytest

import protocol as p
from protocol import ErrorCode as E

SUB = '{"type":"subscribe","channel":"prices"'

BAD_INPUTS = [
    # (frame, code, words the message must contain)
    (b"", E.INVALID_JSON, "not valid JSON"),
    (b"{", E.INVALID_JSON, "not valid JSON"),
    (b"\xff\xfe", E.INVALID_JSON, "not valid JSON"),
    (b"NaN", E.INVALID_JSON, "not valid JSON"),
    # The last of two keys would win in orjson: a second 'type' would slip past.
    (
        b'{"type":"ping","type":"subscribe","channel":"alerts"}',
        E.INVALID_JSON,
        "duplicate key 'type'",
    ),
    (b'{"type":"ping","id":1,"id":2}', E.INVALID_JSON, "duplicate key 'id'"),
    (b"[]", E.INVALID_MESSAGE, "must be an object, got an array"),
    (b'"subscribe"', E.INVALID_MESSAGE, "must be an object, got a string"),
    (b"42", E.INVALID_MESSAGE, "must be an object, got an integer"),
    (b"null", E.INVALID_MESSAGE, "must be an object, got null"),
    (b"{}", E.INVALID_MESSAGE, "Missing field: type"),
    (b'{"type":5}', E.INVALID_MESSAGE, "Field 'type' must be a string"),
    (b'{"type":"subscribed"}', E.UNKNOWN_TYPE, "Unknown message type: 'subscribed'"),
    (b'{"type":"SUBSCRIBE"}', E.UNKNOWN_TYPE, "Unknown message type"),
    (b'{"type":"hello"}', E.UNKNOWN_TYPE, "subscribe, unsubscribe, ping"),
    (b'{"type":"subscribe"}', E.INVALID_MESSAGE, "Missing field: channel"),
    (b'{"type":"unsubscribe"}', E.INVALID_MESSAGE, "Missing field: channel"),
    (
        b'{"type":"subscribe","channel":"invalid_channel"}',
        E.UNKNOWN_CHANNEL,
        "Unknown channel: invalid_channel",
    ),
    (b'{"type":"subscribe","channel":"Prices"}', E.UNKNOWN_CHANNEL, "Unknown channel: Prices"),
    (
        b'{"type":"subscribe","channel":7}',
        E.INVALID_MESSAGE,
        "Field 'channel' must be a string, got an integer",
    ),
    (
        b'{"type":"subscribe","channel":null}',
        E.INVALID_MESSAGE,
        "Field 'channel' must be a string, got null",
    ),
    (
        f'{SUB},"symbols":"AAPL"}}'.encode(),
        E.INVALID_MESSAGE,
        "Field 'symbols' must be an array, got a string",
    ),
    (
        f'{SUB},"symbols":{{"AAPL":1}}}}'.encode(),
        E.INVALID_MESSAGE,
        "Field 'symbols' must be an array, got an object",
    ),
    (
        f'{SUB},"symbols":[1]}}'.encode(),
        E.INVALID_MESSAGE,
        "Field 'symbols[0]' must be a string, got an integer",
    ),
    (
        f'{SUB},"symbols":["AAPL",true]}}'.encode(),
        E.INVALID_MESSAGE,
        "Field 'symbols[1]' must be a string, got a boolean",
    ),
    (f'{SUB},"symbols":[]}}'.encode(), E.INVALID_MESSAGE, "must not be empty"),
    (f'{SUB},"symbols":null}}'.encode(), E.INVALID_MESSAGE, "Field 'symbols' must not be null"),
    (f'{SUB},"symbols":["aapl"]}}'.encode(), E.INVALID_SYMBOL, "Invalid symbol: 'aapl'"),
    (
        f'{SUB},"symbols":["AAPL","TOOLONGSYMBOL"]}}'.encode(),
        E.INVALID_SYMBOL,
        "Invalid symbol: 'TOOLONGSYMBOL'",
    ),
    (f'{SUB},"symbols":[""]}}'.encode(), E.INVALID_SYMBOL, "Invalid symbol: ''"),
    (f'{SUB},"symbols":["A B"]}}'.encode(), E.INVALID_SYMBOL, "Invalid symbol"),
    (f'{SUB},"symbols":["1ABC"]}}'.encode(), E.INVALID_SYMBOL, "Invalid symbol"),
    (
        b'{"type":"subscribe","channel":"alerts","symbols":["AAPL"]}',
        E.INVALID_MESSAGE,
        "Channel 'alerts' does not take symbols",
    ),
    (
        b'{"type":"unsubscribe","channel":"signals","symbols":["AAPL"]}',
        E.INVALID_MESSAGE,
        "Channel 'signals' does not take symbols",
    ),
    (
        f'{SUB},"since":"12"}}'.encode(),
        E.INVALID_MESSAGE,
        "Field 'since' must be an integer, got a string",
    ),
    (
        f'{SUB},"since":true}}'.encode(),
        E.INVALID_MESSAGE,
        "Field 'since' must be an integer, got a boolean",
    ),
    (
        f'{SUB},"since":1.5}}'.encode(),
        E.INVALID_MESSAGE,
        "Field 'since' must be an integer, got a number",
    ),
    (
        f'{SUB},"since":-1,"epoch":"e"}}'.encode(),
        E.INVALID_MESSAGE,
        "Field 'since' must be at least 0",
    ),
    (
        f'{SUB},"since":9007199254740992}}'.encode(),
        E.INVALID_MESSAGE,
        "Field 'since' must be an integer",
    ),
    (f'{SUB},"since":1,"epoch":1}}'.encode(), E.INVALID_MESSAGE, "Field 'epoch' must be a string"),
    (f'{SUB},"since":1}}'.encode(), E.INVALID_MESSAGE, "'since' and 'epoch' go together"),
    (f'{SUB},"epoch":"e"}}'.encode(), E.INVALID_MESSAGE, "'since' and 'epoch' go together"),
    (f'{SUB},"extra":1}}'.encode(), E.INVALID_MESSAGE, "Unknown field: extra"),
    (f'{SUB},"b":1,"a":2}}'.encode(), E.INVALID_MESSAGE, "Unknown field: a, b"),
    (b'{"type":"ping","channel":"prices"}', E.INVALID_MESSAGE, "Unknown field: channel"),
    (b'{"type":"ping","id":null}', E.INVALID_MESSAGE, "Field 'id' must not be null"),
    (b'{"type":"ping","id":true}', E.INVALID_MESSAGE, "Field 'id' must be a string"),
    (b'{"type":"ping","id":1.0}', E.INVALID_MESSAGE, "got a number"),
    (b'{"type":"ping","id":""}', E.INVALID_MESSAGE, "Field 'id' must be a string of 1-64"),
    (b'{"type":"ping","id":[1]}', E.INVALID_MESSAGE, "got an array"),
    (b'{"type":"ping","id":{"a":1}}', E.INVALID_MESSAGE, "got an object"),
    (
        ('{"type":"ping","id":"' + "x" * 65 + '"}').encode(),
        E.INVALID_MESSAGE,
        "Field 'id' must be a string of 1-64",
    ),
    (b'{"type":"ping","id":9007199254740992}', E.INVALID_MESSAGE, "Field 'id'"),
]


@pytest.mark.parametrize(("frame", "code", "words"), BAD_INPUTS)
def test_bad_input_gets_its_error_code(frame: bytes, code: p.ErrorCode, words: str) -> None:
    with pytest.raises(p.RemoteProtocolError) as info:
        p.decode_client(frame)
    assert info.value.code is code
    assert words in info.value.message
    assert info.value.close_code is None


def test_too_many_symbols_in_one_request() -> None:
    symbols = [f"S{i}" for i in range(6)]
    frame = orjson.dumps({"type": "subscribe", "channel": "prices", "symbols": symbols})
    request = p.decode_client(frame, limits=p.Limits(max_symbols=6))
    assert isinstance(request, p.Subscribe)
    assert request.symbols == tuple(symbols)
    with pytest.raises(p.RemoteProtocolError) as info:
        p.decode_client(frame, limits=p.Limits(max_symbols=5))
    assert info.value.code is p.ErrorCode.TOO_MANY_SYMBOLS
    assert "6 in one request, the limit is 5" in info.value.message


def test_oversized_message_asks_for_close_1009() -> None:
    frame = b'{"type":"ping","id":"' + b"x" * 40 + b'"}'
    limits = p.Limits(max_message_size=len(frame) - 1)
    with pytest.raises(p.RemoteProtocolError) as info:
        p.decode_client(frame, limits=limits)
    assert info.value.close_code is p.CloseCode.MESSAGE_TOO_BIG
    # Text is measured in UTF-8 bytes, not characters.
    text = '{"type":"ping","id":"' + "é" * 30 + '"}'
    assert len(text) < 64 < len(text.encode())
    with pytest.raises(p.RemoteProtocolError):
        p.decode_client(text, limits=p.Limits(max_message_size=64))
    assert p.decode_client(text, limits=p.Limits(max_message_size=len(text.encode())))


@pytest.mark.parametrize(
    ("frame", "request_id"),
    [
        (b'{"type":"subscribe","channel":"nope","id":"req-1"}', "req-1"),
        (b'{"type":"subscribe","channel":"prices","symbols":["bad"],"id":42}', 42),
        (b'{"type":"pong","id":7}', 7),
        (b'{"type":"ping","id":7,"extra":true}', 7),
        (b'{"type":"ping","id":true}', None),
    ],
)
def test_errors_carry_the_request_id_when_readable(frame: bytes, request_id: object) -> None:
    with pytest.raises(p.RemoteProtocolError) as info:
        p.decode_client(frame)
    assert info.value.request_id == request_id


def test_text_frames_are_accepted_as_str() -> None:
    assert p.decode_client('{"type":"ping","id":"a"}') == p.Ping(id="a")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\xc1", E.INVALID_JSON),  # a byte MessagePack never uses
        (msgpack.packb([1, 2]), E.INVALID_MESSAGE),
        (msgpack.packb({"type": "ping"}) + b"\x00", E.INVALID_JSON),  # trailing data
        (msgpack.packb({"type": "ping", "id": b"bytes"}), E.INVALID_MESSAGE),
        (msgpack.packb({1: 2}), E.INVALID_JSON),  # map keys must be strings
        (b"\x82\xa4type\xa4ping\xa4type\xa4ping", E.INVALID_JSON),  # a key twice
        (msgpack.packb({"type": "subscribe", "channel": "x"}), E.UNKNOWN_CHANNEL),
    ],
)
def test_msgpack_bad_input(frame: bytes, code: p.ErrorCode) -> None:
    with pytest.raises(p.RemoteProtocolError) as info:
        p.decode_client(frame, p.Codec.MSGPACK)
    assert info.value.code is code
    assert "MessagePack" in info.value.message or code is not E.INVALID_JSON


def test_msgpack_refuses_text_frames() -> None:
    with pytest.raises(p.RemoteProtocolError) as info:
        p.decode_client('{"type":"ping"}', p.Codec.MSGPACK)
    assert info.value.code is E.INVALID_JSON
    assert "binary frames" in info.value.message


def test_structure_strict_validates_publish_payloads() -> None:
    ok = {"symbol": "AAPL", "action": "buy", "confidence": 0.8, "reasoning": "MA crossover"}
    assert p.structure_strict(ok, p.SignalData).action is p.SignalAction.BUY
    cases = [
        ({**ok, "confidence": 1.5}, E.INVALID_MESSAGE, "'confidence' must be at most 1"),
        ({**ok, "action": "short"}, E.INVALID_MESSAGE, "must be one of buy, sell, hold"),
        ({**ok, "symbol": "aapl"}, E.INVALID_SYMBOL, "Invalid symbol"),
        ({**ok, "extra": 1}, E.INVALID_MESSAGE, "Unknown field: extra"),
        (
            {k: v for k, v in ok.items() if k != "reasoning"},
            E.INVALID_MESSAGE,
            "Missing field: reasoning",
        ),
        ({**ok, "confidence": "0.8"}, E.INVALID_MESSAGE, "must be a finite number"),
    ]
    for value, code, words in cases:
        with pytest.raises(p.RemoteProtocolError) as info:
            p.structure_strict(value, p.SignalData)
        assert info.value.code is code
        assert words in info.value.message


def test_nested_paths_are_named() -> None:
    position = {
        "symbol": "AAPL",
        "quantity": 1,
        "avg_cost": 1,
        "price": 1,
        "market_value": 1,
        "unrealized_pnl": 0,
        "unrealized_pnl_pct": 0,
    }
    portfolio = {
        "total_value": 1,
        "cash": 0,
        "day_change": 0,
        "day_change_pct": 0,
        "positions": [position, {**position, "price": "1"}],
    }
    with pytest.raises(p.RemoteProtocolError, match=r"Field 'positions\[1\]\.price' must be"):
        p.structure_strict(portfolio, p.PortfolioData)
    portfolio["positions"] = [position, {**position, "symbol": "bad"}]
    with pytest.raises(p.RemoteProtocolError, match=r"positions\[1\]\.symbol"):
        p.structure_strict(portfolio, p.PortfolioData)
