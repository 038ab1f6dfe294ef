"""Attacks against the real gateway, a process of its own, each with a
healthy subscriber on the same gateway: the attack meets its documented reaction,
while the subscriber keeps its rate and its prices stay fresh (`healthy_subscriber`),
and where the attack is on memory the gateway's RSS stays bounded.

Each attack is repeated by a few attackers, reconnecting as soon as they are closed,
for `ATTACK_SECONDS`. Counts that depend on time are bounded with the time measured,
never asserted exactly; the exact counts are the unit tests' (test_websocket.py,
test_sessions.py, test_sources.py, under Trio's virtual clock).
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import trio
from wsproto.events import CloseConnection, RejectConnection, TextMessage

from .helpers import (
    ATTACK_SECONDS,
    CONTINUATION,
    PING,
    TEXT,
    TIMEOUT,
    RawClient,
    gateway_process,
    healthy_subscriber,
    http_requests,
    metric,
    raw_attempt,
    raw_frame,
)

T = TypeVar("T")

#: The feed: 16 symbols at 10 ticks a second, 160 prices a second.
PRICES_PER_SECOND = 160.0
FEED = ("--tick-rate", "10")
#: Behind a proxy on the same host, as in the spec's nginx set-up: the test is the
#: proxy, and names each client in X-Forwarded-For.
PROXY = ("--forwarded-allow-ips", "127.0.0.1")
ATTACKER = [(b"X-Forwarded-For", b"203.0.113.7")]
HEALTHY = [(b"X-Forwarded-For", b"198.51.100.1")]
MiB = 2**20


_attacks = itertools.count()


def attacker_path() -> str:
    """A client id of its own for each attack: one that is taken would be closed
    with 4409 instead."""
    return f"/ws/attacker-{next(_attacks)}"


async def repeat(
    attackers: int,
    attack: Callable[[], Awaitable[T]],
    *,
    until: Callable[[list[T]], bool] = lambda outcomes: bool(outcomes),
) -> tuple[list[T], float]:
    """Run ``attack`` again and again in ``attackers`` tasks for `ATTACK_SECONDS`, and
    on until ``until(outcomes)`` holds (a slow machine may need longer to get as far):
    the outcomes of the attacks that ended, and the seconds it took."""
    outcomes: list[T] = []
    started = trio.current_time()
    done = trio.Event()

    async def attacker() -> None:
        while True:
            outcomes.append(await attack())
            if until(outcomes):
                done.set()

    async with trio.open_nursery() as nursery:
        for _ in range(attackers):
            nursery.start_soon(attacker)
        await trio.sleep(ATTACK_SECONDS)  # the attack's window, not a wait for an event
        await done.wait()
        nursery.cancel_scope.cancel()
    return outcomes, trio.current_time() - started


async def send_until_closed(client: RawClient, data: bytes, *, again: bool) -> CloseConnection:
    """Send ``data`` (over and over with ``again``) until the gateway closes the
    connection; its close."""
    async with trio.open_nursery() as nursery:

        async def send() -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await client.stream.send_all(data)
                while again:
                    await client.stream.send_all(data)

        nursery.start_soon(send)
        close = await client.expect_close()
        nursery.cancel_scope.cancel()
    return close


# --- frames -------------------------------------------------------------------------

#: 32,000 two-byte fragments of one message: 2.4 MiB of server memory per 250 KiB
#: sent, before --max-fragments.
TINY_FRAGMENTS = raw_frame(TEXT, b"ab", fin=False) + (
    raw_frame(CONTINUATION, b"ab", fin=False) * (32_000 - 1)
)
EMPTY_CONTINUATIONS = raw_frame(TEXT, b"", fin=False) + raw_frame(CONTINUATION, b"", fin=False) * (
    10_000
)
PINGS = raw_frame(PING, b"p") * 1000
TOO_MANY_FRAMES = (1009, "Message arrives in more than 256 frames")


@pytest.mark.parametrize(
    ("early", "data", "again", "close"),
    [
        pytest.param(b"", TINY_FRAGMENTS, False, TOO_MANY_FRAMES, id="tiny-fragments"),
        # The same, in the handshake's own write: what follows the head is fed to
        # wsproto as if read.
        pytest.param(TINY_FRAGMENTS[:60_000], b"", False, TOO_MANY_FRAMES, id="with-the-handshake"),
        pytest.param(b"", EMPTY_CONTINUATIONS, True, TOO_MANY_FRAMES, id="empty-continuations"),
        pytest.param(
            b"", PINGS, True, (1008, "More than 10 pings and pongs per second"), id="ping-flood"
        ),
    ],
)
async def test_a_frame_attack_is_closed_and_costs_others_nothing(
    early: bytes, data: bytes, again: bool, close: tuple[int, str]
) -> None:
    # Before the limits, prices reached others 4.9 s late, 31 a second of 160. With
    # them, the server still parsed what the attacker went on sending for the whole
    # closing handshake: a subscriber got 8 to 79 prices a second of 160.
    with trio.fail_after(TIMEOUT * 3):
        async with gateway_process(*FEED) as (process, port, _):

            async def attack() -> tuple[int, str]:
                async with raw_attempt(port, attacker_path(), early=early) as client:
                    assert isinstance(client, RawClient)
                    closed = await send_until_closed(client, data, again=again)
                    return closed.code, closed.reason or ""

            async with healthy_subscriber(
                port, PRICES_PER_SECOND, pid=process.pid, max_rss_growth=20 * MiB
            ):
                closes, _ = await repeat(16, attack)
    assert closes
    assert set(closes) == {close}


# --- requests -----------------------------------------------------------------------

REQUEST_RATE, REQUEST_BURST = 20, 40  # the defaults: --rate-limit, --rate-burst
CONNECT_RATE, CONNECT_BURST = 10, 100  # --connect-rate, --connect-burst


async def test_reconnecting_after_4429_is_refused_with_429_and_buys_no_requests() -> None:
    # Before the per-source bucket, a client that reconnected after every 4429 started
    # with a full bucket each time and was served 6,810 requests a second (1,703
    # connections in 10 s).
    attackers = 4
    with trio.fail_after(TIMEOUT * 3):
        async with gateway_process(*FEED, *PROXY) as (process, port, _):

            async def attack() -> tuple[str, int, int]:
                """One connection's worth: ("429", Retry-After, 0) when refused, else
                ("closed", close code, pongs)."""
                async with raw_attempt(port, attacker_path(), headers=ATTACKER) as client:
                    if isinstance(client, RejectConnection):
                        retry_after = int(dict(client.headers)[b"retry-after"])
                        return str(client.status_code), retry_after, 0
                    pings = b"".join(
                        client.ws.send(TextMessage(data=json.dumps({"type": "ping", "id": n})))
                        for n in range(REQUEST_BURST + 20)
                    )
                    with contextlib.suppress(trio.BrokenResourceError):
                        await client.stream.send_all(pings)
                    messages, close = await client.until_close()
                    return "closed", close.code, [m["type"] for m in messages].count("pong")

            async with healthy_subscriber(
                port, PRICES_PER_SECOND, headers=HEALTHY, pid=process.pid, max_rss_growth=20 * MiB
            ):
                outcomes, seconds = await repeat(
                    attackers, attack, until=lambda done: any(k == "429" for k, _, _ in done)
                )
    kinds = Counter(kind for kind, _, _ in outcomes)
    # The documented reaction: past the burst, 429 with a Retry-After.
    assert kinds["429"] > 0
    assert all(retry >= 1 for kind, retry, _ in outcomes if kind == "429")
    assert kinds["closed"] <= CONNECT_BURST + CONNECT_RATE * seconds + attackers
    assert {code for kind, code, _ in outcomes if kind == "closed"} == {4429}
    # The requests served follow the request rate, not the reconnects: each attacker
    # gets its first burst, then only what its source's bucket refills.
    pongs = sum(pongs for _, _, pongs in outcomes)
    assert pongs <= attackers * (REQUEST_BURST + REQUEST_RATE * seconds)


async def test_many_sources_are_held_within_max_sources() -> None:
    # A new address for each request, each of them left owing: the table forgets the
    # least recently seen rather than grow.
    max_sources = 100
    limits = ("--connect-rate", "0.01", "--connect-burst", "2", "--max-sources", str(max_sources))
    with trio.fail_after(TIMEOUT * 3):
        async with gateway_process(*FEED, *PROXY, *limits) as (process, port, _):
            addresses = itertools.count()

            async def attack() -> int:
                number = next(addresses)
                forwarded = f"198.18.{number // 256 % 256}.{number % 256}"
                request = [("GET", "/health", b"")]
                [(status, _, _)] = await http_requests(
                    port, request, [("X-Forwarded-For", forwarded)]
                )
                return status

            async with healthy_subscriber(
                port, PRICES_PER_SECOND, headers=HEALTHY, pid=process.pid, max_rss_growth=20 * MiB
            ):
                statuses, _ = await repeat(4, attack, until=lambda done: len(done) > max_sources)
            sources = await metric(port, "realtime_sources")
            forgotten = await metric(port, "realtime_sources_forgotten_total")
    assert len(statuses) > max_sources  # enough to fill the table
    assert set(statuses) == {200}  # each a new source, with its burst
    # The healthy subscriber and the attacks still in flight are sources too.
    assert sources == max_sources
    assert forgotten >= len(statuses) + 1 - max_sources


async def test_a_replay_flood_costs_the_request_rate_even_across_reconnects() -> None:
    # Resubscribing with since=0 over and over (and reconnecting after each 4429) made
    # a request of one token send the whole history.
    history, attackers = 500, 4
    key = "attack-test-key-0123456789"
    with trio.fail_after(TIMEOUT * 6):
        gateway = gateway_process(*FEED, *PROXY, "--api-key", key, "--demo-events", "false")
        async with gateway as (_, port, _):
            notification = {"id": "n", "message": "m", "type": "info"}
            publish = [
                (
                    "POST",
                    "/api/publish",
                    json.dumps({"channel": "notifications", "data": notification}).encode(),
                )
            ] * history
            auth = [("Authorization", f"Bearer {key}"), ("Content-Type", "application/json")]
            assert {status for status, _, _ in await http_requests(port, publish, auth)} == {202}

            async def attack() -> tuple[str, int, int]:
                """("429", status, 0) when refused, else ("closed", code, replayed)."""
                async with raw_attempt(port, attacker_path(), headers=ATTACKER) as client:
                    if isinstance(client, RejectConnection):
                        return "429", client.status_code, 0
                    welcome = await client.next_message()
                    request = {"type": "subscribe", "channel": "notifications", "since": 0}
                    subscribe = client.ws.send(
                        TextMessage(data=json.dumps({**request, "epoch": welcome["epoch"]}))
                    )
                    async with trio.open_nursery() as nursery:

                        async def flood() -> None:
                            with contextlib.suppress(
                                trio.BrokenResourceError, trio.ClosedResourceError
                            ):
                                while True:
                                    await client.stream.send_all(subscribe)

                        nursery.start_soon(flood)
                        messages, close = await client.until_close()
                        nursery.cancel_scope.cancel()
                    replayed = [m["type"] for m in messages].count("notification")
                    return "closed", close.code, replayed

            async with healthy_subscriber(port, PRICES_PER_SECOND, headers=HEALTHY):
                outcomes, seconds = await repeat(attackers, attack)
    closes = [(code, replayed) for kind, code, replayed in outcomes if kind == "closed"]
    assert closes
    assert {code for code, _ in closes} == {4429}
    # Each replayed message costs a tenth of a token (--rate-replayed): a source gets
    # what its bucket holds, then about 200 a second, however often it reconnects.
    replayed = sum(replayed for _, replayed in closes)
    assert replayed <= attackers * (history + REQUEST_RATE * 10 * seconds)
