"""The gateway in one process: hub, bus, feeds, sessions and the listener, and its drain.

One nursery supervises everything. ``serve`` reports a :class:`Server` handle once
the port is listening; ``Server.shutdown`` (the CLI calls it on SIGTERM/SIGINT)
drains: new WebSocket handshakes get 503 and ``/health`` 503, every connection is
closed with 1001 after what it has pending, and once they are gone (or the grace
period is over) the listener closes and everything else is cancelled.
"""

from __future__ import annotations

import logging
import ssl
from functools import partial
from importlib.metadata import version

import attrs
import trio

from feeds import PriceFeed, PriceFeedConfig

from ._app import GatewayApp
from ._bus import InProcessBus
from ._config import Config
from ._hub import Hub
from ._listener import Listener
from ._listener import serve as listen
from ._metrics import make_registry
from ._session import Sessions
from ._supervisor import supervise
from ._websocket import DEFAULT_CLOSE_TIMEOUT

logger = logging.getLogger("realtime.server")

__version__ = version("realtime-gateway")


@attrs.define(eq=False)
class Server:
    """Handle on a running gateway."""

    config: Config
    hub: Hub
    bus: InProcessBus
    sessions: Sessions
    listener: Listener
    price_feed: PriceFeed
    _shutdown: trio.Event = attrs.field(factory=trio.Event)

    @property
    def port(self) -> int:
        return self.listener.port

    @property
    def url(self) -> str:
        scheme = "https" if self.config.certfile else "http"
        return f"{scheme}://{self.config.host}:{self.port}/"

    def shutdown(self) -> None:
        """Start the drain; ``serve`` returns when it is done. Never blocks; idempotent."""
        self._shutdown.set()


async def serve(
    config: Config, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the gateway until :meth:`Server.shutdown` has drained it (or until cancelled).

    Raises ``OSError`` if the address cannot be bound.
    """
    price_feed = PriceFeed(
        PriceFeedConfig(
            symbols=config.symbols,
            tick_rate=config.tick_rate,
            updates_per_tick=config.updates_per_tick,
            seed=config.seed,
        )
    )
    hub = Hub(
        universe=price_feed.symbols,
        clock=trio.current_time,
        history_messages=config.history_messages,
        history_seconds=config.history_seconds,
    )
    bus = InProcessBus(config.publish_buffer)
    sessions = Sessions(config, hub, server_version=__version__)
    app = GatewayApp(hub, sessions, make_registry(hub, sessions), version=__version__)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run, hub)
        await nursery.start(sessions.run_watchdog)
        if config.feeds:
            nursery.start_soon(supervise, "prices", price_feed.run, bus)
        listener: Listener = await nursery.start(
            partial(
                listen,
                config.host,
                config.port,
                websocket_handler=sessions.handle,
                asgi_app=app,
                max_websockets=config.max_connections,
                ssl_context=_ssl_context(config),
            )
        )
        server = Server(config, hub, bus, sessions, listener, price_feed)
        task_status.started(server)
        await server._shutdown.wait()
        await _drain(server)
        nursery.cancel_scope.cancel()


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    if config.certfile is None or config.keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.certfile, config.keyfile)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def _drain(server: Server) -> None:
    config, sessions = server.config, server.sessions
    logger.info(
        "Draining %d connections (grace %gs)", server.hub.connection_count, config.shutdown_grace
    )
    sessions.drain()
    # Leave room for the closing handshakes that the cancellation below bounds.
    with trio.move_on_after(max(0.0, config.shutdown_grace - DEFAULT_CLOSE_TIMEOUT)) as grace:
        await sessions.wait_idle()
    if grace.cancelled_caught:
        logger.warning("Grace period over; aborting %d connections", server.hub.connection_count)
    server.listener.stop_accepting()
    logger.info("Shut down")
