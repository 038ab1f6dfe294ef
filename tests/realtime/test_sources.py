"""The per-source-IP table, without sockets: naming the source, the connect bucket, the
request bucket carried over, and the bound on the table. Time is a plain argument."""

from __future__ import annotations

import tracemalloc

import pytest

from realtime.ws import RequestHead, SourceLimits, SourceTable, parse_networks
from realtime.ws._sources import retry_after


def table(**limits: object) -> SourceTable:
    return SourceTable(SourceLimits(**limits))  # type: ignore[arg-type]  # test values


def forwarded(value: str) -> RequestHead:
    return RequestHead("GET", "/ws/x", "1.1", raw_headers=b"X-Forwarded-For: " + value.encode())


# --- the connect bucket -----------------------------------------------------------


def test_a_source_gets_its_burst_then_one_connection_per_token() -> None:
    sources = table(connect_rate=2.0, connect_burst=3)
    assert [sources.admit("203.0.113.7", 0.0) for _ in range(4)] == [0, 0, 0, 0.5]
    assert sources.admit("203.0.113.7", 0.25) == 0.25  # a refusal takes nothing...
    assert sources.admit("203.0.113.7", 0.5) == 0  # ...so the token is there on time
    assert sources.admit("203.0.113.7", 0.5) == 0.5
    # Another source is not affected; a long silence refills the burst and no more.
    assert sources.admit("198.51.100.1", 0.5) == 0
    assert [sources.admit("203.0.113.7", 100.0) for _ in range(4)] == [0, 0, 0, 0.5]
    assert sources.statistics().refused_total == 4


@pytest.mark.parametrize(("wait", "header"), [(0.01, 1), (1.0, 1), (1.2, 2), (99.5, 100)])
def test_retry_after_is_whole_seconds_and_at_least_one(wait: float, header: int) -> None:
    assert retry_after(wait) == header


# --- naming the source ------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "source"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # a v4 client on a dual-stack socket
        # IPv6 counts per /64: one subscriber's block, not one of its 2**64 addresses.
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("127.0.0.1", None),  # loopback is exempt by default
        ("127.8.9.10", None),
        ("::1", None),
        ("::ffff:127.0.0.1", None),
        ("not an address", None),
        (None, None),
    ],
)
def test_the_source_is_the_peer(peer: str | None, source: str | None) -> None:
    assert table().source_of(peer, forwarded("198.51.100.1")) == source


def test_loopback_counts_when_asked_to() -> None:
    sources = table(limit_loopback=True)
    assert sources.source_of("127.0.0.1") == "127.0.0.1"
    assert sources.source_of("127.0.0.2") == "127.0.0.2"
    assert sources.source_of("::1") == "::/64"


PROXIES = parse_networks("127.0.0.1, 10.0.0.0/8")


@pytest.mark.parametrize(
    ("header", "source"),
    [
        ("203.0.113.7", "203.0.113.7"),
        # What the client wrote itself stays left of what the proxy appended.
        ("6.6.6.6, 203.0.113.7", "203.0.113.7"),
        # Trusted hops are skipped, from the right.
        ("6.6.6.6, 203.0.113.7, 10.1.2.3", "203.0.113.7"),
        ("203.0.113.7:4711", "203.0.113.7"),
        ("[2001:db8::1]:4711", "2001:db8::/64"),
        ("2001:db8::1", "2001:db8::/64"),
        # A hop that does not parse ends the walk at the last one that did.
        ("203.0.113.7, garbage", None),
        ("203.0.113.7, unknown, 10.1.2.3", "10.1.2.3"),
        # Only trusted hops: the leftmost looked at.
        ("10.9.9.9, 10.1.2.3", "10.9.9.9"),
        ("", None),
    ],
)
def test_a_trusted_proxy_names_the_client(header: str, source: str | None) -> None:
    sources = table(forwarded_allow_ips=PROXIES)
    assert sources.source_of("127.0.0.1", forwarded(header)) == source


def test_forwarding_is_believed_only_from_forwarded_allow_ips() -> None:
    sources = table(forwarded_allow_ips=PROXIES)
    assert sources.source_of("198.51.100.1", forwarded("203.0.113.7")) == "198.51.100.1"
    # A trusted proxy without the header counts as itself (exempt here: loopback).
    assert sources.source_of("10.0.0.5", RequestHead("GET", "/", "1.1")) == "10.0.0.5"
    assert sources.source_of("127.0.0.1", RequestHead("GET", "/", "1.1")) is None
    # Without a head to read (HTTP/2), a proxy's clients are not counted as one.
    assert sources.source_of("10.0.0.5") is None
    assert sources.source_of("198.51.100.1") == "198.51.100.1"
    assert table().source_of("127.0.0.1", forwarded("203.0.113.7")) is None


def test_the_log_names_the_forwarded_client_as_the_limits_find_it() -> None:
    sources = table(forwarded_allow_ips=PROXIES)
    assert sources.forwarded_for("127.0.0.1", "6.6.6.6, 203.0.113.7, 10.1.2.3") == "203.0.113.7"
    # The address itself, not the /64 the limits count under.
    assert sources.forwarded_for("10.0.0.5", "[2001:db8::1]:4711") == "2001:db8::1"
    # Not a trusted proxy, no header, or a header naming nobody else: the peer it is.
    assert sources.forwarded_for("198.51.100.1", "203.0.113.7") is None
    assert sources.forwarded_for("127.0.0.1", None) is None
    assert sources.forwarded_for("127.0.0.1", "garbage") is None
    assert sources.forwarded_for(None, "203.0.113.7") is None
    assert table().forwarded_for("127.0.0.1", "203.0.113.7") is None


def test_a_long_forwarded_header_is_read_from_the_right_only() -> None:
    hops = ", ".join(["10.0.0.1"] * 10_000 + ["203.0.113.7"])
    sources = table(forwarded_allow_ips=PROXIES)
    assert sources.source_of("127.0.0.1", forwarded(hops)) == "203.0.113.7"
    # Past MAX_FORWARDED_HOPS trusted hops the walk stops: the client is not found.
    assert sources.source_of("127.0.0.1", forwarded("203.0.113.7, " + hops[:-13])) == "10.0.0.1"


@pytest.mark.parametrize("value", ["10.0.0.0/33", "localhost", "10.0.0.1,,10.0.0.2"])
def test_bad_proxy_lists_say_which_item(value: str) -> None:
    with pytest.raises(ValueError, match="is not an IP address or CIDR block"):
        parse_networks(value)


def test_proxy_lists() -> None:
    assert parse_networks(None) == parse_networks(" ") == ()
    assert [str(n) for n in parse_networks("10.1.2.3/8, ::1")] == ["10.0.0.0/8", "::1/128"]


# --- the request bucket carried over ----------------------------------------------


def test_a_new_connection_starts_with_what_the_last_one_left() -> None:
    sources = table(request_rate=20.0, request_burst=40)
    source = "203.0.113.7"
    assert sources.tokens_for(source, 0.0) is None  # unknown: a full bucket
    sources.leave(source, 0.0, now=1.0)  # emptied by a flood, closed with 4429
    assert sources.tokens_for(source, 1.5) == 10  # refilled since, at the rate...
    assert sources.tokens_for(source, 1.5) == 0  # ...and for that connection alone
    assert sources.tokens_for("198.51.100.1", 1.5) is None
    assert sources.tokens_for(source, 3.5) is None  # refilled: nothing carried
    # A replay's debt carries over, to every connection until it is paid; the lower
    # of two is kept; a full bucket leaves nothing.
    sources.leave(source, -60.0, now=10.0)
    sources.leave(source, 5.0, now=10.0)
    sources.leave(source, 40.0, now=10.0)
    assert sources.tokens_for(source, 10.0) == -60
    assert sources.tokens_for(source, 10.0) == -60
    assert sources.tokens_for(source, 13.0) == 0


# --- the bound ----------------------------------------------------------------------


def test_the_table_holds_at_most_max_sources() -> None:
    sources = table(connect_rate=1.0, connect_burst=10, max_sources=100)
    for number in range(1000):  # at one instant: no bucket refills
        assert sources.admit(f"10.0.{number // 256}.{number % 256}", 0.0) == 0
        assert len(sources) <= 100
    stats = sources.statistics()
    assert (stats.sources, stats.forgotten_total) == (100, 900)
    # The most recent are held, and their buckets go on: the newest has used a token.
    assert sources.admit("10.0.3.231", 0.0) == 0  # number 999
    assert sources.tokens_for("10.0.0.0", 0.0) is None


def test_refilled_sources_are_dropped_as_new_ones_come() -> None:
    sources = table(connect_rate=1.0, connect_burst=10, max_sources=100)
    for number in range(100):
        sources.admit(f"10.0.0.{number}", 0.0)
    # One token each, refilled after a second: the old end is dropped two at a time,
    # so the table shrinks back and nothing is forgotten before it refilled.
    for number in range(100):
        sources.admit(f"10.1.0.{number}", 1.0 + number)
    assert len(sources) < 100
    assert sources.statistics().forgotten_total == 0


def test_a_full_table_costs_a_bounded_few_hundred_bytes_a_source() -> None:
    # docs/security.md: 10,000 sources (the default --max-sources) take about 2 MB.
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sources = table()
        for number in range(10_000):
            source = f"198.{number // 65536}.{number // 256 % 256}.{number % 256}"
            sources.admit(source, 0.0)
            sources.leave(source, -5.0, 0.0)  # both buckets in use
        sources.admit("203.0.113.7", 0.0)  # one more: one is forgotten, none added
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(sources) == 10_000
    assert held < 10_000 * 300, held
