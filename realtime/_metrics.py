"""Prometheus metrics, read from the hub's plain counters at scrape time.

The fan-out path counts with plain integers; a prometheus-client ``Counter.inc``
takes a lock, which would cost more per delivered message than the delivery. The
publish-to-write histogram is the delivery's ``LatencyHistogram`` (``_latency``), one
observation per flush, exported as a Prometheus histogram here.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

import trio
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from protocol import CloseCode

from ._delivery import Delivery
from ._http_auth import HTTPAuth
from ._hub import Hub
from ._sessions import Sessions


class GatewayCollector(Collector):
    """Exports connections, subscriptions, message counters and outbox depth, and
    the refusals of authentication and authorization (``http_auth``: of the HTTP side;
    ``None``: not exported)."""

    def __init__(
        self,
        hub: Hub,
        sessions: Sessions,
        delivery: Delivery,
        http_auth: HTTPAuth | None = None,
        *,
        version: str = "unknown",
    ) -> None:
        self.hub = hub
        self.sessions = sessions
        self.delivery = delivery
        self.http_auth = http_auth
        self.version = version

    def collect(self) -> Iterator[Metric]:
        stats = self.hub.statistics()
        sources = self.sessions.sources.statistics()
        build = GaugeMetricFamily(
            "realtime_build_info",
            "The gateway's version and what it runs on (always 1)",
            labels=["version", "python", "trio"],
        )
        build.add_metric([self.version, platform.python_version(), trio.__version__], 1)
        yield build
        yield CounterMetricFamily(
            "realtime_connections_opened",
            "WebSocket sessions opened (welcomed); opened - closes = realtime_connections",
            value=self.sessions.opened,
        )
        closes = CounterMetricFamily(
            "realtime_connection_closes",
            "WebSocket sessions ended, by close code and by who decided it (server: the "
            "gateway's close or abort, 1006 for an abort; client: its close frame, 1006 "
            "when it just left; codes outside the protocol's: other)",
            labels=["code", "by"],
        )
        # Every close the server can decide is a series from the start (rate() needs
        # the zero); the clients' only once seen.
        counts = {(str(int(code)), "server"): 0 for code in CloseCode}
        counts.update(self.sessions.closes)
        for (code, by), count in sorted(counts.items()):
            closes.add_metric([code, by], count)
        yield closes
        latency = self.delivery.latency
        yield HistogramMetricFamily(
            "realtime_publish_to_write_seconds",
            "Seconds from the offer of the oldest frame of a flush (the hub offers an "
            "event's frames as it publishes it) to the end of that flush's writes; one "
            "observation per flush, not per message",
            buckets=latency.cumulative(),
            sum_value=latency.total,
        )
        yield GaugeMetricFamily(
            "realtime_connections", "Open WebSocket connections", value=stats.total_connections
        )
        subscriptions = GaugeMetricFamily(
            "realtime_channel_subscriptions",
            "Connections subscribed per channel",
            labels=["channel"],
        )
        for channel, count in stats.channel_subscriptions.items():
            subscriptions.add_metric([channel], count)
        yield subscriptions
        yield GaugeMetricFamily(
            "realtime_symbol_subscriptions",
            "Price subscriptions summed over symbols",
            value=sum(stats.symbol_subscriptions.values()),
        )
        # One series per symbol with a subscriber: at most the price universe.
        per_symbol = GaugeMetricFamily(
            "realtime_symbol_subscribers",
            "Connections receiving a price symbol (by name or subscribed to every symbol)",
            labels=["symbol"],
        )
        for symbol, count in stats.symbol_subscriptions.items():
            per_symbol.add_metric([symbol], count)
        yield per_symbol
        counters = (
            ("realtime_messages_published", "Events published into the hub", stats.published),
            ("realtime_messages_offered", "Messages offered to outboxes", stats.offered),
            ("realtime_messages_sent", "Messages written to sockets", self.delivery.messages_sent),
            (
                "realtime_socket_writes",
                "Writes to sockets (messages_sent / socket_writes: messages per write)",
                self.delivery.writes,
            ),
            (
                "realtime_messages_conflated",
                "Price updates replaced by newer ones",
                stats.conflated,
            ),
            (
                "realtime_rate_limited_messages",
                "Inbound messages dropped by the rate limit",
                self.sessions.rate_limited,
            ),
            (
                "realtime_write_timeouts",
                "Connections aborted at the write deadline",
                self.delivery.write_timeouts,
            ),
            (
                "realtime_blocked_writes",
                "Writes the socket did not take at once, handed to a writer task",
                self.delivery.blocked_writes,
            ),
            (
                "realtime_source_refusals",
                "New connections refused (429) by the connect rate of their source IP",
                sources.refused_total,
            ),
            (
                "realtime_sources_forgotten",
                "Source IPs forgotten for room before their buckets had refilled",
                sources.forgotten_total,
            ),
            (
                "realtime_unauthenticated_refusals",
                "Upgrades refused (429) because their source IP had --max-unauthenticated "
                "connections waiting to authenticate",
                sources.refused_unauthenticated_total,
            ),
            (
                "realtime_refused_origins",
                "WebSocket handshakes refused with 403 for their Origin",
                self.sessions.refused_origins,
            ),
            (
                "realtime_unauthorized",
                "Connections closed with 4401: no token, a refused one, or one that expired",
                self.sessions.unauthorized,
            ),
            (
                "realtime_refused_refreshes",
                "Token refreshes refused on open connections (the connection stays)",
                self.sessions.refused_refreshes,
            ),
            (
                "realtime_refused_client_ids",
                "Connections refused with 4409: another user's connection held the client id",
                self.sessions.refused_client_ids,
            ),
            (
                "realtime_refused_over_user_limit",
                "Connections refused with 4429: their user had --max-connections-per-user",
                self.sessions.refused_over_user_limit,
            ),
            (
                "realtime_disconnected",
                "Connections closed with 4403 by POST /api/disconnect",
                self.sessions.disconnected,
            ),
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)
        if self.http_auth is not None:
            yield CounterMetricFamily(
                "realtime_http_unauthorized",
                "HTTP requests refused with 401: no credential, or a wrong key or token",
                value=self.http_auth.unauthorized,
            )
            yield CounterMetricFamily(
                "realtime_http_forbidden",
                "HTTP requests refused with 403: a token without the admin role",
                value=self.http_auth.forbidden,
            )
        yield GaugeMetricFamily(
            "realtime_outbox_depth", "Frames pending across all outboxes", value=stats.outbox_depth
        )
        yield GaugeMetricFamily(
            "realtime_outbox_max_depth",
            "Frames pending in the fullest outbox",
            value=stats.outbox_max_depth,
        )
        yield GaugeMetricFamily(
            "realtime_writer_tasks",
            "Connections whose writes wait on a full socket (a writer task each)",
            value=self.delivery.writers,
        )
        yield GaugeMetricFamily(
            "realtime_sources",
            "Source IPs the per-IP limits remember (at most --max-sources)",
            value=sources.sources,
        )
        yield GaugeMetricFamily(
            "realtime_trio_tasks", "Trio tasks alive in the server", value=_count_tasks()
        )


def _count_tasks() -> int:
    """Walk the task tree from the root (scrape time only: it costs a visit per task)."""
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:  # collected outside a Trio run (a test calling collect())
        return 0
    count, stack = 0, [root]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def make_registry(
    hub: Hub,
    sessions: Sessions,
    delivery: Delivery,
    http_auth: HTTPAuth | None = None,
    *,
    version: str = "unknown",
) -> CollectorRegistry:
    """A registry of the gateway's own metrics (not the process-global default)."""
    registry = CollectorRegistry()
    registry.register(GatewayCollector(hub, sessions, delivery, http_auth, version=version))
    ProcessCollector(registry=registry)  # RSS, CPU seconds, open file descriptors
    return registry
