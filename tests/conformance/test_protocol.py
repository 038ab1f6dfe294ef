"""Wire protocol v1, rule by rule, against any server (see conftest: ``--server-url``).

Each test speaks raw JSON (or MessagePack) over a WebSocket and checks one rule of
DESIGN.md's "Wire protocol v1" and docs/protocol.md. Every message received is
checked against the protocol's JSON Schema on the way (``wire.check_shape``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from .conftest import Target, free_port, start_gateway_process, stop_gateway_process
from .wire import JSON, MSGPACK, TIMEOUT, Peer, peer

_ids = itertools.count()
CHANNELS = ["prices", "alerts", "signals", "portfolio", "notifications"]


def new_id(prefix: str) -> str:
    """A client id no other test uses (a repeated id would replace a connection)."""
    return f"conf-{prefix}-{os.getpid()}-{next(_ids)}"


async def alive(connection: Peer) -> None:
    """The connection still answers."""
    pong = await connection.request({"type": "ping", "id": "alive"}, "pong")
    assert pong["id"] == "alive"


def prices(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "price_update"]


def updates_of(symbols: list[str], count: int) -> Callable[[list[dict[str, Any]]], bool]:
    """For ``collect_until``: done once ``count`` updates of each of ``symbols`` arrived."""

    def done(received: list[dict[str, Any]]) -> bool:
        updates = prices(received)
        return all(sum(m["symbol"] == symbol for m in updates) >= count for symbol in symbols)

    return done


def symbols_of(connection: Peer, n: int) -> list[str]:
    symbols: list[str] = connection.welcome["symbols"]
    assert len(symbols) >= n, "the server's universe is too small for this test"
    return symbols[:n]


# --- welcome ------------------------------------------------------------------------------


async def test_welcome(target: Target) -> None:
    client_id = new_id("welcome")
    with trio.fail_after(TIMEOUT):
        async with target.peer(client_id) as connection:
            welcome = connection.welcome
            assert welcome["client_id"] == client_id
            assert welcome["protocol"] == "1"
            assert welcome["server"]
            assert welcome["channels"] == CHANNELS
            assert welcome["symbols"]
            assert welcome["heartbeat_interval"] > 0
            assert welcome["epoch"]


async def test_no_subprotocol_or_json_subprotocol_gives_json_text(target: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("json"), subprotocols=[JSON]) as connection:
            assert connection.ws.subprotocol == JSON
            await alive(connection)
        async with target.peer(new_id("plain")) as connection:
            assert connection.ws.subprotocol is None
            await alive(connection)


# --- requests, acks and id echo -------------------------------------------------------------


@pytest.mark.parametrize("request_id", [1, "a-string", 0, -5, 2**53 - 1, "x" * 64])
async def test_replies_echo_the_request_id(target: Target, request_id: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("echo")) as connection:
            pong = await connection.request({"type": "ping", "id": request_id}, "pong")
            assert pong["id"] == request_id
            ack = await connection.request(
                {"type": "subscribe", "channel": "alerts", "id": request_id}, "subscribed"
            )
            assert ack["id"] == request_id
            ack = await connection.request(
                {"type": "unsubscribe", "channel": "alerts", "id": request_id}, "unsubscribed"
            )
            assert ack["id"] == request_id


async def test_replies_without_request_id_carry_none(target: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("noid")) as connection:
            assert "id" not in await connection.request({"type": "ping"}, "pong")
            ack = await connection.request({"type": "subscribe", "channel": "alerts"}, "subscribed")
            assert "id" not in ack
            error = await connection.request("not json", "error")
            assert "id" not in error


@pytest.mark.parametrize("channel", CHANNELS)
async def test_every_channel_can_be_subscribed_and_unsubscribed(
    target: Target, channel: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("chan")) as connection:
            ack = await connection.request(
                {"type": "subscribe", "channel": channel, "id": 1}, "subscribed"
            )
            assert ack["channel"] == channel
            assert "symbols" not in ack  # channel-wide
            ack = await connection.request(
                {"type": "unsubscribe", "channel": channel, "id": 2}, "unsubscribed"
            )
            assert ack["channel"] == channel
            assert "symbols" not in ack


async def test_price_subscriptions_add_up_and_acks_list_them_sorted(target: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("add")) as connection:
            a, b, c = symbols_of(connection, 3)
            ack = await connection.request(
                {"type": "subscribe", "channel": "prices", "symbols": [b, a]}, "subscribed"
            )
            assert ack["symbols"] == sorted([a, b])
            ack = await connection.request(
                {"type": "subscribe", "channel": "prices", "symbols": [c]}, "subscribed"
            )
            assert ack["symbols"] == sorted([a, b, c])
            ack = await connection.request(
                {"type": "unsubscribe", "channel": "prices", "symbols": [a]}, "unsubscribed"
            )
            assert ack["symbols"] == sorted([b, c])
            ack = await connection.request(
                {"type": "unsubscribe", "channel": "prices", "symbols": [b, c]}, "unsubscribed"
            )
            assert "symbols" not in ack  # none left


async def test_unsubscribe_from_what_is_not_held_is_acknowledged(target: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("unheld")) as connection:
            ack = await connection.request(
                {"type": "unsubscribe", "channel": "signals", "id": 1}, "unsubscribed", "error"
            )
            assert ack["type"] == "unsubscribed"
            (symbol,) = symbols_of(connection, 1)
            await connection.request(
                {"type": "subscribe", "channel": "prices", "symbols": [symbol]}, "subscribed"
            )
            # A well-formed symbol outside the universe: a no-op for it.
            ack = await connection.request(
                {"type": "unsubscribe", "channel": "prices", "symbols": ["ZZZZ"], "id": 2},
                "unsubscribed",
                "error",
            )
            assert ack["type"] == "unsubscribed"
            assert ack["symbols"] == [symbol]


async def test_removing_symbols_from_an_every_symbol_subscription_is_refused(
    target: Target,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("allsym")) as connection:
            (symbol,) = symbols_of(connection, 1)
            await connection.request({"type": "subscribe", "channel": "prices"}, "subscribed")
            error = await connection.request(
                {"type": "unsubscribe", "channel": "prices", "symbols": [symbol], "id": 3},
                "error",
            )
            assert error["code"] == "invalid_message"
            await alive(connection)
            assert error.get("id") == 3


# --- prices: snapshot, order, unsubscribe ------------------------------------------------------


async def test_snapshot_follows_subscribed_at_once(target: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("snap")) as connection:
            wanted = symbols_of(connection, 2)
            await connection.send({"type": "subscribe", "channel": "prices", "symbols": wanted})
            ack = await connection.receive()
            assert ack["type"] == "subscribed"  # the ack comes first
            # Then the last price of each symbol, at once: nothing comes in between, and
            # not one symbol twice, as ticks would.
            snapshot = [await connection.receive() for _ in wanted]
            assert [m["type"] for m in snapshot] == ["price_update"] * len(wanted)
            assert sorted(m["symbol"] for m in snapshot) == sorted(wanted)
            for update in snapshot:
                data = update["data"]
                assert set(data) == {"price", "change", "change_pct", "volume", "bid", "ask"}
                assert update["seq"] >= 0


async def test_seq_grows_per_symbol(target: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("seq")) as connection:
            wanted = symbols_of(connection, 3)
            await connection.request(
                {"type": "subscribe", "channel": "prices", "symbols": wanted}, "subscribed"
            )
            updates = prices(await connection.collect_until(updates_of(wanted, 3)))
            assert {m["symbol"] for m in updates} <= set(wanted)
            for symbol in wanted:
                seqs = [m["seq"] for m in updates if m["symbol"] == symbol]
                assert all(x < y for x, y in itertools.pairwise(seqs)), seqs


async def test_every_symbol_subscription_gets_many_symbols(target: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("every")) as connection:
            ack = await connection.request({"type": "subscribe", "channel": "prices"}, "subscribed")
            assert "symbols" not in ack
            # More than one symbol arrives (or the hang guard fails the test).
            await connection.collect_until(lambda got: len({m["symbol"] for m in prices(got)}) > 1)


async def test_no_updates_after_unsubscribed(target: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("unsub")) as connection:
            a, b = symbols_of(connection, 2)
            await connection.request(
                {"type": "subscribe", "channel": "prices", "symbols": [a, b]}, "subscribed"
            )
            await connection.request(
                {"type": "unsubscribe", "channel": "prices", "symbols": [a]}, "unsubscribed"
            )
            # Three updates of b, and not one of a.
            later = prices(await connection.collect_until(updates_of([b], 3)))
            assert {m["symbol"] for m in later} == {b}
            await connection.request({"type": "unsubscribe", "channel": "prices"}, "unsubscribed")
            # Nothing over the next three updates of b, as another connection sees them.
            async with target.peer(new_id("unsub-watch")) as watcher:
                await watcher.request(
                    {"type": "subscribe", "channel": "prices", "symbols": [b]}, "subscribed"
                )
                await watcher.collect_until(updates_of([b], 1 + 3))  # its snapshot, then 3
            await connection.send({"type": "ping", "id": "after"})
            later = await connection.collect_until(
                lambda got: bool(got) and got[-1]["type"] == "pong"
            )
            assert prices(later) == []


# --- errors: each code with its exact trigger, and the connection stays open ----------------

TOO_MANY = [f"S{n:04d}" for n in range(501)]  # well-formed, past the default 500

#: (frame, code). Frames with an ``id`` must have it echoed in the error.
BAD_FRAMES: list[tuple[str, str]] = [
    ("not json", "invalid_json"),
    ('{"type":"ping"', "invalid_json"),
    ('{"type":"ping","type":"subscribe","channel":"alerts"}', "invalid_json"),
    ("[1, 2]", "invalid_message"),
    ('"ping"', "invalid_message"),
    ('{"id":1}', "invalid_message"),
    ('{"type":7,"id":1}', "invalid_message"),
    ('{"type":"subscribe","id":1}', "invalid_message"),
    ('{"type":"subscribe","channel":"alerts","extra":true,"id":1}', "invalid_message"),
    ('{"type":"subscribe","channel":"alerts","id":null}', "invalid_message"),
    ('{"type":"ping","id":1.5}', "invalid_message"),
    ('{"type":"ping","id":true}', "invalid_message"),
    ('{"type":"ping","id":""}', "invalid_message"),
    ('{"type":"subscribe","channel":"prices","symbols":"AAPL","id":1}', "invalid_message"),
    ('{"type":"subscribe","channel":"prices","symbols":[],"id":1}', "invalid_message"),
    ('{"type":"subscribe","channel":"alerts","symbols":["AAPL"],"id":1}', "invalid_message"),
    ('{"type":"subscribe","channel":"alerts","since":1,"id":1}', "invalid_message"),
    ('{"type":"subscribe","channel":"alerts","since":-1,"epoch":"e","id":1}', "invalid_message"),
    ('{"type":"dance","id":1}', "unknown_type"),
    ('{"type":"welcome","id":1}', "unknown_type"),
    ('{"type":"subscribe","channel":"invalid_channel","id":1}', "unknown_channel"),
    ('{"type":"subscribe","channel":"prices","symbols":["aapl"],"id":1}', "invalid_symbol"),
    ('{"type":"subscribe","channel":"prices","symbols":["1ABC"],"id":1}', "invalid_symbol"),
    ('{"type":"subscribe","channel":"prices","symbols":["ZZZZ"],"id":1}', "unknown_symbol"),
    (
        '{"type":"subscribe","channel":"prices","symbols":['
        + ",".join(f'"{s}"' for s in TOO_MANY)
        + '],"id":1}',
        "too_many_symbols",
    ),
    (
        '{"type":"subscribe","channel":"alerts","since":5,"epoch":"no-such-epoch","id":1}',
        "history_unavailable",
    ),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES, ids=[c for _, c in BAD_FRAMES])
async def test_error_code_for_each_bad_frame(target: Target, frame: str, code: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("bad")) as connection:
            error = await connection.request(frame, "error")
            assert error["code"] == code, (frame, error)
            assert error["error"]  # a sentence a person can act on
            await alive(connection)
            if '"id":1}' in frame and not frame.startswith('{"type":7'):
                assert error.get("id") == 1, (frame, error)


async def test_unknown_channel_error_names_the_channel(target: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("named")) as connection:
            error = await connection.request(
                {"type": "subscribe", "channel": "invalid_channel", "id": "x"}, "error"
            )
            assert error == {
                "type": "error",
                "error": "Unknown channel: invalid_channel",
                "code": "unknown_channel",
                "id": "x",
                "timestamp": error["timestamp"],
            }


async def test_a_refused_request_changes_nothing(target: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("atomic")) as connection:
            a, b = symbols_of(connection, 2)
            await connection.request(
                {"type": "subscribe", "channel": "prices", "symbols": [a]}, "subscribed"
            )
            await connection.request(
                {"type": "subscribe", "channel": "prices", "symbols": [b, "ZZZZ"]}, "error"
            )
            ack = await connection.request(
                {"type": "subscribe", "channel": "prices", "symbols": [a]}, "subscribed"
            )
            assert ack["symbols"] == [a]


async def test_resume_with_since(target: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("since")) as connection:
            epoch = connection.welcome["epoch"]
            ack = await connection.request(
                {"type": "subscribe", "channel": "alerts", "since": 0, "epoch": epoch, "id": 1},
                "subscribed",
                "error",
            )
            assert ack["type"] == "subscribed", ack
            error = await connection.request(
                {
                    "type": "subscribe",
                    "channel": "signals",
                    "since": 2**50,  # a seq the server never reached
                    "epoch": epoch,
                    "id": 2,
                },
                "error",
            )
            assert error["code"] == "history_unavailable"


EVENTS = {
    "alerts": "alert_triggered",
    "signals": "trading_signal",
    "portfolio": "portfolio_update",
    "notifications": "notification",
}


@pytest.mark.parametrize("channel", list(EVENTS))
async def test_subscribed_carries_the_position_the_channel_continues_from(
    target: Target, channel: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("position")) as connection:
            epoch = connection.welcome["epoch"]
            ack = await connection.request(
                {"type": "subscribe", "channel": channel, "id": 1}, "subscribed"
            )
            position = ack["seq"]
            assert isinstance(position, int)
            assert position >= 0
            # Whatever the channel carries next comes after the position, in order.
            await connection.send({"type": "ping", "id": "after"})
            received = await connection.collect_until(
                lambda messages: bool(messages) and messages[-1]["type"] == "pong"
            )
            seqs = [m["seq"] for m in received if m["type"] == EVENTS[channel]]
            assert all(seq > position for seq in seqs), (position, seqs)
            assert seqs == sorted(seqs)
            # A resume's position is its since: the replay follows the ack.
            ack = await connection.request(
                {"type": "subscribe", "channel": channel, "since": position, "epoch": epoch},
                "subscribed",
            )
            assert ack["seq"] == position


async def test_prices_subscribed_carries_no_position(target: Target) -> None:
    # Prices count seq per symbol and resume by the snapshot, not by replay.
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("prices-position")) as connection:
            (symbol,) = symbols_of(connection, 1)
            ack = await connection.request(
                {"type": "subscribe", "channel": "prices", "symbols": [symbol]}, "subscribed"
            )
            assert "seq" not in ack
            ack = await connection.request({"type": "subscribe", "channel": "prices"}, "subscribed")
            assert "seq" not in ack


# --- MessagePack ---------------------------------------------------------------------------


async def test_msgpack_subprotocol(target: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("packed"), packed=True) as connection:
            assert connection.ws.subprotocol == MSGPACK
            (symbol,) = symbols_of(connection, 1)
            ack = await connection.request(
                {"type": "subscribe", "channel": "prices", "symbols": [symbol], "id": 9},
                "subscribed",
            )
            assert (ack["id"], ack["symbols"]) == (9, [symbol])
            update = await connection.next("price_update")
            assert update["symbol"] == symbol
            error = await connection.request(b"\xc1", "error")  # never valid MessagePack
            assert error["code"] == "invalid_json"
            error = await connection.request('{"type":"ping"}', "error")  # a text frame
            assert error["code"] == "invalid_json"
            assert (await connection.request({"type": "ping", "id": 1}, "pong"))["id"] == 1


# --- close codes ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["x" * 65, "bad%20id", "a%2Fb", "semi;colon"])
async def test_invalid_client_id_is_closed_with_4400(target: Target, bad_id: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.raw(bad_id) as ws:
            code, reason = await Peer(ws, packed=False).closed()
            assert code == 4400
            assert reason


async def test_same_client_id_replaces_the_older_connection_with_4409(target: Target) -> None:
    client_id = new_id("twin")
    with trio.fail_after(TIMEOUT):
        async with target.peer(client_id) as older, target.peer(client_id) as newer:
            code, _ = await older.closed()
            assert code == 4409
            await alive(newer)


async def test_oversized_message_is_closed_with_1009(target: Target) -> None:
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("big")) as connection:
            await connection.send('{"type":"ping","id":"' + "x" * (64 * 1024) + '"}')
            code, _ = await connection.closed()
            assert code == 1009
        async with target.peer(new_id("big")) as connection:
            await alive(connection)  # the server is unharmed
            # Just under the limit is fine (an error for the id, not a close).
            filler = "x" * (64 * 1024 - 100)
            error = await connection.request('{"type":"ping","id":"' + filler + '"}', "error")
            assert error["code"] == "invalid_message"


async def test_rate_limit_answers_then_closes_with_4429(target: Target) -> None:
    """Default limits: 20 messages/s, burst 40; 4429 after 10 breaches in a minute."""
    with trio.fail_after(TIMEOUT):
        async with target.peer(new_id("flood")) as connection:

            async def flood() -> None:
                # Pings as fast as they go: far above 20 a second on any machine, however
                # slow, so the burst runs out whatever the refill meanwhile.
                with contextlib.suppress(ConnectionClosed):
                    for n in itertools.count():
                        await connection.send({"type": "ping", "id": n})

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                replies = await connection.replies_until_closed()
                nursery.cancel_scope.cancel()
            code, _ = await connection.closed()
    assert [r["type"] for r in replies[:40]] == ["pong"] * 40  # the burst is answered
    errors = [r for r in replies if r["type"] == "error"]
    assert errors
    assert {e["code"] for e in errors} == {"rate_limited"}
    assert code == 4429  # ten breaches within a minute close the connection


async def test_shutdown_closes_with_1001(target: Target) -> None:
    if not target.ours:
        pytest.skip("needs a server the suite can stop: runs when the suite starts its own")
    port = free_port()
    process = start_gateway_process(port)
    try:
        with trio.fail_after(TIMEOUT):
            async with peer(f"ws://127.0.0.1:{port}/ws/{new_id('drain')}") as connection:
                await connection.request({"type": "subscribe", "channel": "prices"}, "subscribed")
                process.send_signal(signal.SIGTERM)
                code, _ = await connection.closed()
                assert code == 1001
            await trio.to_thread.run_sync(process.wait)
            assert process.returncode == 0
    finally:
        stop_gateway_process(process)
