"""The gateway in one process: hub, bus, feeds, sessions and the listener, and its drain.

One nursery supervises everything. ``serve`` reports a :class:`Server` handle once
the port is listening; ``Server.shutdown`` (the CLI calls it on SIGTERM/SIGINT)
drains: subscribers get a ``warning`` notification that the server is draining (on a
node of a cluster, the node's own: ``seq`` 0), new WebSocket handshakes get 503,
``/health`` and ``/readyz`` 503, every connection is closed with 1001 after what it
has pending, and once they are gone (or the grace period is over) the listener closes
and everything else is cancelled.

Feeds: the price source (the simulated market, or a replay file) publishes through a
:class:`feeds.PriceTap` into the bus; the alert, signal and portfolio feeds read the
tap's prices and publish into the bus, and the demo's system notifications go
straight into it. Each runs under :func:`supervise`.

With ``--bus`` the gateway is a node of a cluster (docs/cluster.md): its bus follows
Redis, it runs no feeds (``realtime feed`` does, once for the cluster), its
publish API publishes through Redis to every node, and its alert rules API edits the
cluster's rules in Redis, which the active feed follows (``_cluster_rules``).
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from importlib.metadata import version
from pathlib import Path

import attrs
import trio

from feeds import (
    AlertFeed,
    DemoEventsFeed,
    PortfolioFeed,
    PriceFeed,
    PriceFeedConfig,
    PriceTap,
    Publisher,
    ReplayFeed,
    SignalFeed,
    demo_portfolio,
    demo_rules,
    load_portfolio,
    load_rules,
)
from feeds import universe as default_universe
from protocol import Channel, NotificationData, NotificationType

from ._access import AccessLog
from ._app import GatewayApp
from ._auth import TokenVerifier
from ._bus import InProcessBus
from ._cluster_rules import RedisRules
from ._config import DEFAULT_SYMBOLS, Config, _flag
from ._cors import CORS
from ._delivery import Delivery
from ._disconnect import DisconnectAPI
from ._feed_hook import HookFeed, load_hook
from ._health import FeedHealth, Readiness
from ._http_auth import HTTPAuth
from ._hub import Event, Hub, utc_now
from ._metrics import make_registry
from ._open_files import connection_cap
from ._publish import PublishAPI
from ._redis_bus import RedisBus
from ._rules_api import AlertRulesAPI, EngineRules
from ._sessions import Sessions
from ._supervisor import supervise
from ._tls import TLSFileError, server_context
from ._universe import PriceUniverse
from .ws import DEFAULT_CLOSE_TIMEOUT, Listener
from .ws import serve as listen

logger = logging.getLogger("realtime.server")

__version__ = version("realtime-gateway")


class StartupError(ValueError):
    """The gateway cannot start with its settings, for a reason found only at start: a
    feed file that does not load, TLS files that changed since the config was built,
    an address it cannot listen on. The message is one line that names the setting
    (``--alerts (REALTIME_ALERTS): ...``) and the cause; ``realtime serve`` prints it
    alone, without a traceback. Bad values are refused earlier, by :class:`Config`.
    """


@attrs.frozen(kw_only=True)
class Feeds:
    """The producers of one gateway, built from its config by :func:`build_feeds`."""

    #: What the price source publishes through; the Python publish API (see Server).
    tap: PriceTap
    #: The price source: the replay of ``--feed replay:FILE``, a feed hook
    #: (``--feed module:callable``), else the simulated market.
    prices: PriceFeed | ReplayFeed | HookFeed
    alerts: AlertFeed
    signals: SignalFeed
    portfolio: PortfolioFeed
    #: The demo's system notifications (``--demo-events``).
    events: DemoEventsFeed
    #: The price universe at start: ``--universe``, else the price source's symbols.
    symbols: tuple[str, ...]

    @property
    def own_symbols(self) -> tuple[str, ...]:
        """The symbols the price source publishes itself: every simulated one, a
        replay's; none for a hook, which shares its symbols as its code decides."""
        return () if isinstance(self.prices, HookFeed) else self.prices.symbols

    def supervised(
        self,
        *,
        derived: bool = True,
        demo_events: bool = True,
        universe: PriceUniverse | None = None,
    ) -> list[tuple[str, Callable[[Publisher], Awaitable[object]]]]:
        """(name, run) of each feed, consumers of the tap first; ``derived`` False leaves
        out the feeds computed from prices (alerts, signals, portfolio), ``demo_events``
        False the demo's system notifications. A feed hook gets ``universe`` (default:
        the start's, fixed)."""
        derived_feeds = [
            ("alerts", self.alerts.run),
            ("signals", self.signals.run),
            ("portfolio", self.portfolio.run),
        ]
        events = [("demo-events", self.events.run)] if demo_events else []
        prices: Callable[[Publisher], Awaitable[object]]
        if isinstance(self.prices, HookFeed):
            universe = universe or PriceUniverse(symbols=self.symbols)
            prices = partial(self.prices.run, universe=universe)
        else:
            prices = self.prices.run
        return [*(derived_feeds if derived else []), *events, ("prices", prices)]


def build_feeds(config: Config, bus: Publisher) -> Feeds:
    """The feeds ``config`` asks for, publishing into ``bus``.

    Reads the universe, replay, alert rules and portfolio files and imports a feed
    hook. Raises :exc:`StartupError` naming the setting, file, entry and field for a
    bad file, a hook that does not import, a replay with symbols outside
    ``--universe``, or a rule or position on a symbol outside the price universe.
    """
    with _setting_error("universe_file" if config.universe_file else "universe"):
        given = config.price_universe()
    prices: PriceFeed | ReplayFeed | HookFeed
    # The opening prices the demo rules and portfolio are set from: none for a hook.
    opens: dict[str, float] = {}
    if config.replay_file is not None:
        with _setting_error("feed"):
            prices = ReplayFeed.from_file(config.replay_file, speed=config.replay_speed)
            if given is not None:
                outside = [symbol for symbol in prices.symbols if symbol not in set(given)]
                if outside:
                    raise ValueError(
                        f"{config.replay_file} has prices of {', '.join(outside[:20])}, "
                        "not in --universe: add them to it, or leave --universe out"
                    )
        opens = dict(prices.opens)
    elif config.feed_hook is not None:
        with _setting_error("feed"):
            prices = HookFeed(config.feed_hook, load_hook(config.feed_hook), given or ())
    else:
        prices = PriceFeed(
            PriceFeedConfig(
                symbols=config.symbols if given is None else given,
                tick_rate=config.tick_rate,
                updates_per_tick=config.updates_per_tick,
                seed=config.seed,
            )
        )
        opens = {symbol: prices.market.last(symbol).price for symbol in prices.symbols}
    symbols = given if given is not None else prices.symbols
    universe = frozenset(symbols)
    if config.alerts is not None:
        with _setting_error("alerts"):
            rules = load_rules(config.alerts)
            _check_universe(config.alerts, (rule.symbol for rule in rules), universe)
    else:
        rules = demo_rules(opens)
    if config.portfolio is not None:
        with _setting_error("portfolio"):
            spec = load_portfolio(config.portfolio)
            _check_universe(config.portfolio, spec.symbols, universe)
    else:
        spec = demo_portfolio(opens)
    tap = PriceTap(bus)
    return Feeds(
        tap=tap,
        prices=prices,
        alerts=AlertFeed(tap, rules),
        signals=SignalFeed(tap, interval=config.signal_interval),
        portfolio=PortfolioFeed(tap, spec, interval=config.portfolio_interval),
        # Names in the demo's messages: a hook may start with an empty universe.
        events=DemoEventsFeed(symbols or default_universe(DEFAULT_SYMBOLS), seed=config.seed),
        symbols=symbols,
    )


def start_feeds(
    nursery: trio.Nursery,
    config: Config,
    feeds: Feeds,
    bus: Publisher,
    health: FeedHealth | None = None,
    universe: PriceUniverse | None = None,
) -> None:
    """Start each feed ``config`` asks for in ``nursery``, supervised, publishing into
    ``bus`` (the price source through the tap, so the derived feeds see its prices).
    ``health`` records which are down, for ``/readyz``. A feed hook gets ``universe``,
    the gateway's (default: the start's, fixed)."""
    supervised = feeds.supervised(
        derived=config.derived_feeds, demo_events=config.demo_events, universe=universe
    )
    for name, run in supervised:
        publisher: Publisher = feeds.tap if name == "prices" else bus
        tracked = run if health is None else health.track(name, run)
        nursery.start_soon(partial(supervise, name, tracked, publisher, announce_start=True))


@contextmanager
def _setting_error(name: str) -> Iterator[None]:
    """Re-raise the ``ValueError`` of reading setting ``name``'s file as a
    :exc:`StartupError` that names the setting (the loaders name the file)."""
    try:
        yield
    except ValueError as exc:
        raise StartupError(f"{_flag(name)}: {exc}") from exc


def _check_universe(path: Path, symbols: Iterable[str], universe: frozenset[str]) -> None:
    for symbol in symbols:
        if symbol not in universe:
            raise ValueError(
                f"{path}: {symbol} is not a symbol of the price feed "
                f"({', '.join(sorted(universe)[:20])}{', ...' if len(universe) > 20 else ''})"
            )


@attrs.define(eq=False)
class Server:
    """Handle on a running gateway."""

    config: Config
    hub: Hub
    bus: InProcessBus | RedisBus
    sessions: Sessions
    delivery: Delivery
    listener: Listener
    feeds: Feeds
    publish_api: PublishAPI
    #: ``/api/alert-rules``: edits ``feeds.alerts.engine``, the engine the alert feed
    #: runs; on a node, the cluster's rules in Redis.
    alert_rules_api: AlertRulesAPI
    #: ``POST /api/disconnect``.
    disconnect_api: DisconnectAPI
    #: Who may call the HTTP API, ``/ws/stats`` and ``/metrics``.
    http_auth: HTTPAuth
    #: The checks of ``/readyz``.
    readiness: Readiness
    #: The price universe, live: ``server.universe.add(["ORCL"])`` lets clients
    #: subscribe to ORCL and the publishers publish its prices (see ``_universe``).
    universe: PriceUniverse
    _shutdown: trio.Event = attrs.field(factory=trio.Event)

    @property
    def publisher(self) -> Publisher:
        """The Python publish API for code in the gateway's process: the one the feeds
        use (``await server.publisher.publish(channel, data, to=...)``). Prices
        published here also reach the alert, signal and portfolio feeds; a price of a
        symbol outside :attr:`universe` raises ``ValueError``."""
        return self.feeds.tap

    @property
    def port(self) -> int:
        return self.listener.port

    @property
    def url(self) -> str:
        """The dashboard's address (an IPv6 host in brackets)."""
        scheme = "https" if self.config.certfile else "http"
        return f"{scheme}://{url_host(self.config.host)}:{self.port}/"

    def shutdown(self) -> None:
        """Start the drain; ``serve`` returns when it is done. Never blocks; idempotent."""
        self._shutdown.set()


async def serve(
    config: Config, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the gateway until :meth:`Server.shutdown` has drained it (or until cancelled).

    Raises :exc:`StartupError` (inside the nursery's ``ExceptionGroup`` when it
    comes from binding) for a bad replay, alerts or portfolio file (see
    :func:`build_feeds`), TLS files that no longer load, or an address it cannot
    listen on. Everything that can be checked is checked before binding; the feeds
    start only once the port is listening.
    """
    bus = (
        InProcessBus()
        if config.bus is None
        else RedisBus(
            config.bus,
            history_messages=config.history_messages,
            history_seconds=config.history_seconds,
            heartbeat=config.node_heartbeat,
            disconnect_wait=config.disconnect_wait,
        )
    )
    feeds = build_feeds(config, bus)
    ssl_context = _ssl_context(config)
    delivery = Delivery(flush_delay=config.flush_delay, write_timeout=config.write_timeout)
    hub = Hub(
        universe=feeds.symbols,
        clock=trio.current_time,
        history_messages=config.history_messages,
        history_seconds=config.history_seconds,
        after_fan_out=delivery.fanned_out,
    )
    node = isinstance(bus, RedisBus)
    sessions = Sessions(
        config,
        hub,
        delivery,
        server_version=__version__,
        # Only a node's hub can be behind a client's since (docs/cluster.md).
        resume_wait=config.resume_wait if node else 0.0,
    )
    bus.attach(hub)
    membership = bus.membership if isinstance(bus, RedisBus) else None
    if membership is not None:
        sessions.seats = membership
        membership.on_disconnect(sessions.disconnect)
    http_auth = HTTPAuth(api_key=config.api_key, verifier=sessions.verifier)
    universe = (
        PriceUniverse(
            symbols=feeds.symbols,
            fixed="a node of a cluster has the universe of --universe, fixed at start",
        )
        if node
        else PriceUniverse(hub)
    )
    runs_feeds = config.feeds and not node
    publish_api = PublishAPI(
        # The tap: prices from the API reach the alerts, signals and portfolio too.
        feeds.tap,
        auth=http_auth,
        max_body=config.publish_max_body,
        body_timeout=config.body_timeout,
        universe=universe,
        feed_symbols=frozenset(feeds.own_symbols) if runs_feeds else frozenset(),
    )
    # Alone: the feed's own engine, which outlives the feed's restarts, so rules added
    # over HTTP are evaluated from the next tick on and survive a crash of the feed. A
    # node: the cluster's rules in Redis, which the active realtime feed follows.
    alert_rules_api = AlertRulesAPI(
        RedisRules(bus) if isinstance(bus, RedisBus) else EngineRules(feeds.alerts.engine),
        universe,
        auth=http_auth,
        max_body=config.publish_max_body,
        body_timeout=config.body_timeout,
    )
    disconnect_api = DisconnectAPI(
        sessions,
        cluster=membership,
        auth=http_auth,
        max_body=config.publish_max_body,
        body_timeout=config.body_timeout,
    )
    feed_health = FeedHealth()
    readiness = Readiness(sessions, bus, feed_health)
    app = CORS(
        GatewayApp(
            hub,
            sessions,
            make_registry(hub, sessions, delivery, http_auth, version=__version__),
            version=__version__,
            publish=publish_api,
            alert_rules=alert_rules_api,
            disconnect=disconnect_api,
            auth=http_auth,
            readiness=readiness,
            cluster=None if membership is None else membership.view,
        ),
        config.cors_allowed_origins,
    )
    http_app = AccessLog(app, sessions.sources) if config.access_log else app
    async with trio.open_nursery() as nursery:
        if isinstance(bus, RedisBus):  # a node: the hub follows Redis before clients come
            await nursery.start(bus.run)
        await nursery.start(delivery.run)
        await nursery.start(sessions.run)
        try:
            listener: Listener = await nursery.start(
                partial(
                    listen,
                    config.host,
                    config.port,
                    websocket_handler=sessions.handle,
                    asgi_app=http_app,
                    max_websockets=_connection_cap(config.max_connections),
                    ssl_context=ssl_context,
                    sources=sessions.sources,
                    # --workers: the other workers listen on the same port.
                    reuse_port=config.workers > 1,
                )
            )
        except OSError as exc:
            raise StartupError(_listen_error(config, exc)) from exc
        _log_authentication(sessions.verifier, listener)
        if runs_feeds:
            start_feeds(nursery, config, feeds, bus, health=feed_health, universe=universe)
        server = Server(
            config,
            hub,
            bus,
            sessions,
            delivery,
            listener,
            feeds,
            publish_api,
            alert_rules_api,
            disconnect_api,
            http_auth,
            readiness,
            universe,
        )
        task_status.started(server)
        await server._shutdown.wait()
        await _drain(server)
        nursery.cancel_scope.cancel()


def _log_authentication(verifier: TokenVerifier | None, listener: Listener) -> None:
    """One line that says whether connections must authenticate."""
    if verifier is not None:
        logger.info("Authentication on: connections need a token (%s)", verifier.description)
        return
    logger.warning(
        "Authentication is off: whoever reaches %s reads every channel "
        "(give --jwt-secret, --jwt-public-key or --jwks to turn it on)",
        ", ".join(f"{host}:{port}" for host, port in listener.addresses),
    )


def _connection_cap(max_connections: int) -> int:
    open_files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = connection_cap(max_connections, open_files)
    if cap < max_connections:
        logger.warning(
            "At most %d connections at once, not %d: the open files limit is %d "
            "(raise it with ulimit -n, or LimitNOFILE= under systemd)",
            cap,
            max_connections,
            open_files,
        )
    return cap


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    if config.certfile is None or config.keyfile is None:
        return None
    try:
        return server_context(config.certfile, config.keyfile)
    except TLSFileError as exc:  # Config loaded them: they changed since
        raise StartupError(f"{_flag(exc.setting)}: {exc}") from exc


def url_host(host: str) -> str:
    """``host`` as it goes into a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def _listen_error(config: Config, exc: OSError) -> str:
    """What went wrong binding ``--host``:``--port``, naming the setting to change."""
    address = f"{url_host(config.host)}:{config.port}"
    if isinstance(exc, socket.gaierror):
        return f"{_flag('host')}: cannot resolve {config.host!r}: {exc.strerror}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{_flag('port')}: {address} is already in use: another gateway or program "
            "listens there; stop it or choose another port"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{_flag('host')}: {config.host} is not an address of this machine"
    if exc.errno == errno.EACCES:
        return (
            f"{_flag('port')}: not allowed to listen on {address}: ports below 1024 "
            "need root or CAP_NET_BIND_SERVICE"
        )
    return f"{_flag('host')}, {_flag('port')}: cannot listen on {address}: {exc.strerror or exc}"


async def _drain(server: Server) -> None:
    config, sessions = server.config, server.sessions
    logger.info(
        "Draining %d connections (grace %gs)", server.hub.connection_count, config.shutdown_grace
    )
    # Straight into the hub, without a write: it is in every outbox, and so goes out
    # before the 1001 close that drain() queues behind what is pending. On a node of a
    # cluster as the node's own notice (seq 0): Redis numbers the stream, and a number
    # of the node's would collide with its next one.
    notice = NotificationData(
        id=uuid.uuid4().hex,
        message="Server draining: connections close with 1001; reconnect with jitter",
        type=NotificationType.WARNING,
    )
    if server.config.bus is None:
        server.hub.publish(Event(Channel.NOTIFICATIONS, notice, utc_now()))
    else:
        server.hub.announce(notice)
    sessions.drain()
    # Leave room for the closing handshakes that the cancellation below bounds.
    with trio.move_on_after(max(0.0, config.shutdown_grace - DEFAULT_CLOSE_TIMEOUT)) as grace:
        await sessions.wait_idle()
    if grace.cancelled_caught:
        logger.warning("Grace period over; aborting %d connections", server.hub.connection_count)
    server.listener.stop_accepting()
    logger.info("Shut down")
