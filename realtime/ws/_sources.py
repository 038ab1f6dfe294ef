"""Per source IP: how fast new connections may come, and the request bucket that
outlives a connection.

Theory of operation
-------------------
The listener names the *source* of each request head it routes with
`SourceTable.source_of`: the peer's address or, when the peer is one of
``forwarded_allow_ips``, the client that its ``X-Forwarded-For`` names (the rightmost
address that is not itself a trusted proxy: a proxy such as nginx appends the address
it saw, so whatever a client wrote there itself stays to the left and is ignored).
IPv6 sources count per /64, the block one subscriber is usually given, so an
attacker cannot take a fresh address for each connection. A loopback source is
exempt unless ``limit_loopback``: local tools, tests and benchmarks open thousands
of connections from 127.0.0.1. The exempt get ``None``, and nothing is counted.

Each counted source has an entry with two token buckets, refilled lazily from the
time they were last touched:

* **New connections.** `admit` takes a token from a bucket of ``connect_burst``
  refilled at ``connect_rate`` a second, once per connection the listener routes
  (a WebSocket upgrade, or an HTTP connection handed to hypercorn). Without one it
  returns the seconds until the next, and the listener answers 429 with
  ``Retry-After``.
* **Requests.** A WebSocket session starts its request bucket with `tokens_for`
  its source, and hands back what it has left with `leave` when it closes. An
  emptied bucket (or a replay's debt) thus stays with the source, refilling at
  ``request_rate`` up to ``request_burst``, instead of starting full on the next
  connection: reconnecting after a 4429 buys nothing that waiting would not. The
  tokens carried go to one new connection; others opened meanwhile start from
  none. Connections already open keep their own buckets: a client holding several
  gets each one's rate, and the connect rate bounds how many it opens.

* **Connections still authenticating.** With authentication on, a connection
  waits up to ``--auth-timeout`` for its token. `begin_authentication` counts it
  against its source, at most ``max_unauthenticated`` at once, and
  `end_authentication` when its token was judged (or it left), so one address
  cannot hold thousands of connections that never authenticate. These counts live
  apart from the entries: they are bounded by the connections open, and an entry
  may be dropped while its connections authenticate.

Memory is bounded: at most ``max_sources`` entries, kept in order of last use. An
entry whose buckets have both refilled is the same as no entry; each new entry
drops up to two such entries from the old end, so the table shrinks back after a
wave of sources. When it is full anyway, the least recently used entry is forgotten
(``forgotten_total``): that source starts afresh, which only an attacker with more
addresses than the table holds can bring about, and per-IP limits cannot stop one.

Every method takes ``now`` on the caller's clock (``trio.current_time`` in the
server), so tests drive the table with plain numbers or Trio's ``MockClock``. No
method blocks or does I/O.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from typing import Any, Final

import attrs

from ._head import RequestHead

__all__ = ["SourceLimits", "SourceStatistics", "SourceTable", "parse_networks", "retry_after"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: ``X-Forwarded-For`` hops looked at, from the right: more trusted proxies than this
#: in a row is no deployment, and a long forged header must not cost a parse per hop.
MAX_FORWARDED_HOPS: Final = 16
#: Entries with refilled buckets dropped from the old end for each entry added.
_SWEEP: Final = 2


def parse_networks(value: str | None) -> tuple[Network, ...]:
    """Comma-separated addresses or CIDR blocks (``10.0.0.0/8``, ``::1``); ``None`` or
    blank: none. Raises ``ValueError`` saying which item is not one."""
    if value is None or not value.strip():
        return ()
    networks = []
    for item in value.split(","):
        text = item.strip()
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(
                f"{text[:100]!r} is not an IP address or CIDR block (e.g. 10.0.0.5, "
                "10.0.0.0/8, ::1)"
            ) from None
    return tuple(networks)


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"SourceLimits.{attribute.name} must be greater than 0, got {value!r}")


@attrs.frozen(kw_only=True)
class SourceLimits:
    """What `SourceTable` enforces; every number must be greater than 0."""

    #: New connections a second one source may open, in the long run.
    connect_rate: float = attrs.field(default=10.0, validator=_positive)
    #: New connections one source may open at once above the rate.
    connect_burst: int = attrs.field(default=100, validator=_positive)
    #: The per-connection request bucket carried over (`RateLimit.rate`, ``burst``).
    request_rate: float = attrs.field(default=20.0, validator=_positive)
    request_burst: int = attrs.field(default=40, validator=_positive)
    #: Sources remembered at once.
    max_sources: int = attrs.field(default=10_000, validator=_positive)
    #: Connections one source may have waiting to authenticate at once.
    max_unauthenticated: int = attrs.field(default=64, validator=_positive)
    #: Count loopback sources too (they are exempt otherwise).
    limit_loopback: bool = False
    #: Peers whose ``X-Forwarded-For`` names the client.
    forwarded_allow_ips: tuple[Network, ...] = ()


@attrs.frozen
class SourceStatistics:
    """A snapshot of a `SourceTable`.

    ``sources``: entries held now (at most ``max_sources``).
    ``refused_total``: connections refused for want of a connect token.
    ``forgotten_total``: entries dropped for room before their buckets had refilled.
    ``refused_unauthenticated_total``: connections refused because their source had
    ``max_unauthenticated`` waiting to authenticate.
    """

    sources: int
    refused_total: int
    forgotten_total: int
    refused_unauthenticated_total: int


class _Source:
    """One source's buckets: tokens as of the time beside them."""

    __slots__ = ("connect_at", "connects", "requests", "requests_at")

    def __init__(self, connects: float, now: float) -> None:
        self.connects = connects
        self.connect_at = now
        #: Tokens the last connection left; ``None``: nothing carried over (full).
        self.requests: float | None = None
        self.requests_at = now


class SourceTable:
    """The per-source limits of one listener: `source_of`, `admit`, `tokens_for`,
    `leave`. Holds at most ``limits.max_sources`` entries."""

    def __init__(self, limits: SourceLimits | None = None) -> None:
        self.limits = limits if limits is not None else SourceLimits()
        self._entries: OrderedDict[str, _Source] = OrderedDict()
        self._refused = 0
        self._forgotten = 0
        #: Connections authenticating now, per source (no key at 0).
        self._authenticating: dict[str, int] = {}
        self._refused_unauthenticated = 0

    def __len__(self) -> int:
        return len(self._entries)

    def statistics(self) -> SourceStatistics:
        """A snapshot of the counters; see `SourceStatistics`."""
        return SourceStatistics(
            len(self._entries), self._refused, self._forgotten, self._refused_unauthenticated
        )

    # --- naming the source ------------------------------------------------------

    def source_of(self, peer: str | None, request: RequestHead | None = None) -> str | None:
        """The source a connection from ``peer`` counts under, or ``None`` when it is
        not counted (exempt loopback, or an address that does not parse).

        A trusted proxy's ``request`` is read for ``X-Forwarded-For``; without a
        request (HTTP/2, where the listener reads no head) a trusted proxy is not
        counted at all, since all its clients would share one bucket.
        """
        if peer is None:
            return None
        try:
            address: Address = ipaddress.ip_address(peer)
        except ValueError:
            return None
        if self._trusted(address):
            if request is None:
                return None
            forwarded = request.header("x-forwarded-for")
            if forwarded is not None:
                address = self._forwarded_client(forwarded, address)
        return self._key(address)

    def forwarded_for(self, peer: str | None, forwarded: str | None) -> str | None:
        """The client that ``peer``, a trusted proxy, forwarded for according to its
        ``X-Forwarded-For`` header ``forwarded``, as `source_of` finds it (the
        rightmost hop that is not a trusted proxy); ``None`` when ``peer`` is not
        trusted, or names no other address. For logs: exemptions and /64 blocks do
        not apply."""
        if peer is None or forwarded is None or not self.limits.forwarded_allow_ips:
            return None
        try:
            address: Address = ipaddress.ip_address(peer)
        except ValueError:
            return None
        if not self._trusted(address):
            return None
        client = self._forwarded_client(forwarded, address)
        return None if client == address else str(client)

    def _trusted(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.limits.forwarded_allow_ips)

    def _forwarded_client(self, header: str, proxy: Address) -> Address:
        """The rightmost hop of ``header`` that is not a trusted proxy (the leftmost
        looked at when all are); a hop that does not parse ends the walk at the last
        one that did, so an address is never invented."""
        client = proxy
        for hop in reversed(header.rsplit(",", MAX_FORWARDED_HOPS)[-MAX_FORWARDED_HOPS:]):
            try:
                client = ipaddress.ip_address(_strip_port(hop.strip()))
            except ValueError:
                break
            if not self._trusted(client):
                break
        return client

    def _key(self, address: Address) -> str | None:
        if isinstance(address, ipaddress.IPv6Address):
            mapped = address.ipv4_mapped
            if mapped is None:
                if address.is_loopback and not self.limits.limit_loopback:
                    return None
                return f"{ipaddress.IPv6Address(int(address) >> 64 << 64)}/64"
            address = mapped
        if address.is_loopback and not self.limits.limit_loopback:
            return None
        return str(address)

    # --- the buckets --------------------------------------------------------------

    def admit(self, source: str, now: float) -> float:
        """Take a connect token for ``source``: 0 when one was there, else the
        seconds until the next one (and the connection is to be refused)."""
        limits = self.limits
        entry = self._entry(source, now)
        tokens = min(
            limits.connect_burst, entry.connects + (now - entry.connect_at) * limits.connect_rate
        )
        entry.connect_at = now
        if tokens >= 1:
            entry.connects = tokens - 1
            return 0.0
        entry.connects = tokens
        self._refused += 1
        return (1 - tokens) / limits.connect_rate

    def tokens_for(self, source: str, now: float) -> float | None:
        """The request tokens a new connection from ``source`` starts with: what the
        source's connections left, refilled since; ``None`` for a full bucket.

        The tokens go to this connection: others opened meanwhile start from none
        (a debt stays with the source until paid), so opening several at once does
        not multiply them."""
        entry = self._entries.get(source)
        if entry is None or entry.requests is None:
            return None
        tokens = self._carried(entry, now)
        if tokens is None:
            entry.requests = None
        else:
            entry.requests = min(tokens, 0.0)
            entry.requests_at = now
        return tokens

    def leave(self, source: str, tokens: float, now: float) -> None:
        """A connection from ``source`` closed with ``tokens`` in its request bucket.
        The source keeps the lower of that and what it already carried."""
        if tokens >= self.limits.request_burst:
            return
        entry = self._entry(source, now)
        carried = self._carried(entry, now)
        entry.requests = tokens if carried is None else min(carried, tokens)
        entry.requests_at = now

    def begin_authentication(self, source: str) -> bool:
        """Count a connection from ``source`` as waiting for its token: False, and
        nothing counted, when ``max_unauthenticated`` of its connections already are
        (the connection is to be refused)."""
        waiting = self._authenticating.get(source, 0)
        if waiting >= self.limits.max_unauthenticated:
            self._refused_unauthenticated += 1
            return False
        self._authenticating[source] = waiting + 1
        return True

    def end_authentication(self, source: str) -> None:
        """A connection `begin_authentication` counted has had its token judged, or left."""
        waiting = self._authenticating[source] - 1
        if waiting:
            self._authenticating[source] = waiting
        else:
            del self._authenticating[source]

    def _carried(self, entry: _Source, now: float) -> float | None:
        if entry.requests is None:
            return None
        limits = self.limits
        tokens = entry.requests + (now - entry.requests_at) * limits.request_rate
        return None if tokens >= limits.request_burst else tokens

    def _entry(self, source: str, now: float) -> _Source:
        """The entry of ``source``, made the most recently used; new ones are full."""
        entries = self._entries
        entry = entries.get(source)
        if entry is not None:
            entries.move_to_end(source)
            return entry
        for _ in range(_SWEEP):
            if not entries:
                break
            oldest_source, oldest = next(iter(entries.items()))
            if not self._refilled(oldest, now):
                break
            del entries[oldest_source]
        if len(entries) >= self.limits.max_sources:
            _, forgotten = entries.popitem(last=False)
            self._forgotten += not self._refilled(forgotten, now)
        entry = entries[source] = _Source(float(self.limits.connect_burst), now)
        return entry

    def _refilled(self, entry: _Source, now: float) -> bool:
        limits = self.limits
        connects = entry.connects + (now - entry.connect_at) * limits.connect_rate
        return connects >= limits.connect_burst and self._carried(entry, now) is None


def _strip_port(hop: str) -> str:
    """``203.0.113.7:4711`` and ``[2001:db8::1]:4711`` without the port, as some
    proxies write them; anything else as it is."""
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop


def retry_after(seconds: float) -> int:
    """A ``Retry-After`` value for a wait of ``seconds``: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))
