"""One TCP listener per port, serving our WebSockets and hypercorn's HTTP.

Theory of operation
-------------------
`serve` binds the port(s) and reports a `Listener` handle through
``task_status.started``. Each accepted connection gets its own task, which:

1. wraps the stream in `trio.SSLStream` when an ``ssl_context`` is given, so
   both paths below get TLS (a client that negotiated ``h2`` by ALPN goes
   straight to hypercorn);
2. reads the HTTP request head, bounded by ``max_head_size`` (431) and
   ``head_timeout`` (408; that deadline also covers the TLS handshake);
3. names the request's source and takes a connect token for it from ``sources``
   (a `SourceTable`): without one the answer is 429 with ``Retry-After``, before
   any upgrade or hand-off. A connection counts once, for its first request head;
   HTTP/2 (ALPN or prior knowledge), which has no head to read, counts under the
   peer's address and is closed without an answer when refused;
4. routes: a ``GET`` under ``websocket_prefix`` (``/ws/``) that asks for
   ``Upgrade: websocket`` is ours. It is validated (400/426 otherwise), counted
   against ``max_websockets`` (503 beyond it) and handed to
   ``websocket_handler(stream, request)``, with any bytes read past the head in
   ``request.trailing``. Everything else -- including ``GET /ws/stats``,
   which is not an upgrade -- is handed to hypercorn's trio ``TCPServer`` with
   every byte already read replayed first, and hypercorn owns the connection
   from then on (keep-alive, pipelining, its own timeouts).

Before a hand-off, a request with both ``Content-Length`` and
``Transfer-Encoding`` is refused and an ``Upgrade: h2c`` is dropped (see
`_plain_http`). Refusals are written with `reject_websocket` under
``reject_timeout``.

Shutdown: `Listener.stop_accepting` closes the listening sockets at once (new
connects are refused by the kernel) while accepted connections carry on.
hypercorn is then told it is terminating, so it finishes requests in flight
and closes idle keep-alive connections; WebSocket connections are left to
their handler (the session closes them with 1001). `serve` returns when the
last connection task has finished; cancelling it tears everything down.

hypercorn runs without ASGI lifespan: the server's own nursery starts and
stops the hub and feeds, so the app has nothing to do at startup. Its access
log is off unless the caller's ``http_config`` sets one; its error log goes to
the ``realtime.http`` logger.

Depends on hypercorn internals (pinned to 0.18.0 and covered by tests):
``hypercorn.trio.tcp_server.TCPServer(app, config, context, state, stream)``,
``hypercorn.trio.worker_context.WorkerContext`` and
``hypercorn.app_wrappers.ASGIWrapper``, the same pieces
``hypercorn.trio.run.worker_serve`` assembles.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Final

import attrs
import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext

from ._connection import ConnectionClosed
from ._handshake import check_websocket_upgrade, reject_websocket
from ._head import BadRequest, RequestHead, parse_request_head
from ._sources import SourceTable, retry_after

__all__ = [
    "ASGIApp",
    "Listener",
    "ListenerStatistics",
    "WebSocketHandler",
    "bind_shared",
    "serve",
]

logger = logging.getLogger("realtime.listener")

#: ``async def handler(stream, request)``: owns ``stream`` until it returns
#: (the listener closes it afterwards in any case). ``request`` is a valid
#: WebSocket upgrade; accept it with `accept_websocket` or refuse it with
#: `reject_websocket`.
WebSocketHandler = Callable[[trio.abc.Stream, RequestHead], Awaitable[None]]

#: An ASGI 3 application (``async def app(scope, receive, send)``).
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

DEFAULT_MAX_WEBSOCKETS: Final = 50_000
DEFAULT_MAX_HEAD_SIZE: Final = 16 * 1024
DEFAULT_HEAD_TIMEOUT: Final = 10.0
DEFAULT_REJECT_TIMEOUT: Final = 2.0

_RECEIVE_SIZE: Final = 64 * 1024
#: accept() errors that say the process or system is out of a resource (file
#: descriptors, memory): worth waiting out, unlike the others.
_ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)
_ACCEPT_BACKOFF_MIN: Final = 0.01
_ACCEPT_BACKOFF_MAX: Final = 1.0
#: Seconds between two warnings that accept is failing.
ACCEPT_WARNING_INTERVAL: Final = 10.0
#: What `trio.open_tcp_listeners` asks for; the kernel caps it at net.core.somaxconn.
_MAX_BACKLOG: Final = 0xFFFF
_HTTP2_PREFACE: Final = b"PRI * HTTP/2.0\r\n"
_SERVER_FULL: Final = BadRequest(
    503, "Server is at capacity; retry later", [(b"Retry-After", b"5")]
)


@attrs.frozen
class ListenerStatistics:
    """A snapshot of a `Listener`'s counters.

    ``connections``: accepted TCP connections still being served, any kind.
    ``websockets``: connections inside the WebSocket handler.
    ``http_connections``: connections owned by hypercorn.
    ``accepted_total``: connections accepted since start.
    ``refused_full_total``: handshakes refused with 503 at ``max_websockets``.
    ``refused_rate_total``: connections refused (429, or closed for HTTP/2) by the
    per-source connect rate.
    ``refused_total``: requests refused with any HTTP error before hand-off
    (including the 503s).
    ``accept_failures_total``: accepts that failed for want of file descriptors or
    memory (each retried after a backoff).
    """

    accepting: bool
    connections: int
    websockets: int
    http_connections: int
    accepted_total: int
    refused_full_total: int
    refused_rate_total: int
    refused_total: int
    accept_failures_total: int


def _plain_http(request: RequestHead, data: bytes) -> bytes:
    """The bytes to hand to hypercorn for an HTTP request read as ``data``.

    A request with both ``Content-Length`` and ``Transfer-Encoding`` is refused (RFC
    9112 section 6.1): the two framings disagree on where it ends, and what one reads
    as body the other runs as the next request. An ``Upgrade: h2c`` is dropped, so
    the request is answered in HTTP/1.1 as if it had not asked (RFC 9113 section
    3.1): honoured, it would open an HTTP/2 tunnel past the path rules of a proxy
    that forwards ``Upgrade`` for WebSockets. Raises `BadRequest`.
    """
    names = {name for name, _ in request.headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        raise BadRequest(400, "Content-Length and Transfer-Encoding together are refused")
    if "h2c" not in request.header_tokens("upgrade"):
        return data
    kept = [
        line
        for line in request.raw_headers.split(b"\r\n")
        if line.partition(b":")[0].strip().lower() not in (b"upgrade", b"http2-settings")
    ]
    line = f"{request.method} {request.target} HTTP/{request.http_version}".encode("ascii")
    return b"\r\n".join([line, *kept]) + b"\r\n\r\n" + request.trailing


class _ReplayStream(trio.abc.Stream):
    """A stream that first returns bytes already read, then reads the real one.

    hypercorn's ``TCPServer`` probes its stream duck-typed: ``do_handshake``,
    ``selected_alpn_protocol`` and ``transport_stream`` exist only on TLS
    streams (an AttributeError means plain TCP), ``socket`` gives the
    addresses, and ``send_eof`` exists only on half-closeable streams.
    ``__getattr__`` forwards all of those to the wrapped stream unchanged.
    """

    __slots__ = ("_prefix", "_stream")

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        prefix = self._prefix
        if not prefix:
            return await self._stream.receive_some(max_bytes)
        await trio.lowlevel.checkpoint()
        if max_bytes is None or max_bytes >= len(prefix):
            self._prefix = b""
            return prefix
        self._prefix = prefix[max_bytes:]
        return prefix[:max_bytes]

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _default_http_config() -> Config:
    config = Config()
    config.accesslog = None
    config.errorlog = logging.getLogger("realtime.http")
    return config


def _peer_address(stream: trio.SocketStream) -> tuple[str, int] | None:
    try:
        address = stream.socket.getpeername()
    except OSError:
        return None
    if isinstance(address, tuple) and len(address) >= 2:
        return (str(address[0]), int(address[1]))
    return None


class Listener:
    """Handle on a running `serve`: its addresses, counters and the drain switch."""

    def __init__(
        self,
        listeners: list[trio.SocketListener],
        *,
        websocket_handler: WebSocketHandler,
        asgi_app: ASGIApp,
        ssl_context: ssl.SSLContext | None,
        websocket_prefix: str,
        max_websockets: int,
        max_head_size: int,
        head_timeout: float,
        reject_timeout: float,
        http_config: Config | None,
        sources: SourceTable | None = None,
    ) -> None:
        self._listeners = listeners
        self._websocket_handler = websocket_handler
        self._ssl_context = ssl_context
        self._websocket_prefix = websocket_prefix
        self._max_websockets = max_websockets
        self._max_head_size = max_head_size
        self._head_timeout = head_timeout
        self._reject_timeout = reject_timeout
        self._sources = sources
        # Set once the log has said that a proxy's X-Forwarded-For is not trusted.
        self._untrusted_forwarding_logged = False
        self._http_config = http_config if http_config is not None else _default_http_config()
        self._http_app = ASGIWrapper(asgi_app)
        self._http_context = WorkerContext(None)
        # hypercorn shares one state dict per listener (``scope["state"]``);
        # without lifespan it stays empty.
        self._http_state: dict[str, Any] = {}
        self._accept_scope = trio.CancelScope()
        self._connections = 0
        self._websockets = 0
        self._http_connections = 0
        self._accepted_total = 0
        self._refused_full_total = 0
        self._refused_rate_total = 0
        self._refused_total = 0
        self._accept_failures = 0
        self._next_accept_warning = -math.inf
        addresses: list[tuple[str, int]] = []
        for listener in listeners:
            sockname = listener.socket.getsockname()
            addresses.append((str(sockname[0]), int(sockname[1])))
        #: The bound ``(host, port)`` of every listening socket.
        self.addresses: tuple[tuple[str, int], ...] = tuple(addresses)

    @property
    def port(self) -> int:
        """The bound port (of the first socket, if several were bound)."""
        return self.addresses[0][1]

    @property
    def accepting(self) -> bool:
        """False once `stop_accepting` was called."""
        return not self._accept_scope.cancel_called

    def stop_accepting(self) -> None:
        """Stop accepting: close the listening sockets; keep serving the rest.

        Does not block. Connections already accepted carry on (a WebSocket
        handshake already being read still reaches the handler); hypercorn
        closes its idle keep-alive connections and each busy one after its
        response. `serve` returns once every connection has ended.
        Idempotent.
        """
        self._accept_scope.cancel()

    def statistics(self) -> ListenerStatistics:
        """A snapshot of the counters; see `ListenerStatistics`."""
        return ListenerStatistics(
            accepting=self.accepting,
            connections=self._connections,
            websockets=self._websockets,
            http_connections=self._http_connections,
            accepted_total=self._accepted_total,
            refused_full_total=self._refused_full_total,
            refused_rate_total=self._refused_rate_total,
            refused_total=self._refused_total,
            accept_failures_total=self._accept_failures,
        )

    async def _run(self) -> None:
        try:
            async with trio.open_nursery() as connections:
                with self._accept_scope:
                    async with trio.open_nursery() as acceptors:
                        for listener in self._listeners:
                            acceptors.start_soon(self._accept_forever, listener, connections)
                # Close at once so new connects are refused rather than left
                # queued in the backlog while existing connections drain.
                self._close_listeners()
                await self._http_context.terminated.set()
                logger.info("Stopped accepting on %s", self._describe())
        finally:
            self._close_listeners()

    async def _accept_forever(
        self, listener: trio.SocketListener, connections: trio.Nursery
    ) -> None:
        """Accept connections, each served in a task of its own, until cancelled.

        When the process is out of file descriptors (or memory) accept fails: it
        backs off, doubling from 10 ms to 1 s, and says so once per
        ``ACCEPT_WARNING_INTERVAL`` instead of once per attempt, so that the log
        stays readable and the connections already open are served meanwhile.
        """
        backoff = _ACCEPT_BACKOFF_MIN
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                self._accept_failures += 1
                now = trio.current_time()
                if now >= self._next_accept_warning:
                    self._next_accept_warning = now + ACCEPT_WARNING_INTERVAL
                    logger.warning(
                        "Cannot accept connections: %s (%s), %d open; retrying with "
                        "backoff (%d failed accepts so far)",
                        errno.errorcode.get(exc.errno or 0, exc.errno),
                        os.strerror(exc.errno or 0),
                        self._connections,
                        self._accept_failures,
                    )
                await trio.sleep(backoff)
                backoff = min(2 * backoff, _ACCEPT_BACKOFF_MAX)
            else:
                backoff = _ACCEPT_BACKOFF_MIN
                connections.start_soon(self._serve_stream, stream)

    async def _serve_stream(self, stream: trio.SocketStream) -> None:
        try:
            await self._handle_connection(stream)
        finally:
            await trio.aclose_forcefully(stream)

    def _close_listeners(self) -> None:
        # Closing twice is harmless.
        for listener in self._listeners:
            listener.socket.close()

    def _describe(self) -> str:
        return ", ".join(f"{host}:{port}" for host, port in self.addresses)

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        # trio.serve_listeners closes ``stream`` forcefully after we return.
        # The WebSocket handler is called from here rather than from a helper
        # so that an idle connection's task keeps as few coroutine frames alive
        # as possible.
        self._connections += 1
        self._accepted_total += 1
        try:
            upgrade = await self._route(stream)
            if upgrade is not None:
                transport, request = upgrade
                del upgrade
                if self._websockets >= self._max_websockets:
                    self._refused_full_total += 1
                    await self._refuse(transport, _SERVER_FULL)
                else:
                    self._websockets += 1
                    try:
                        await self._websocket_handler(transport, request)
                    finally:
                        self._websockets -= 1
        except ConnectionClosed as closed:
            logger.debug("Connection closed: %s", closed)
        except Exception:
            # One connection's failure must never take the server down.
            logger.exception("Unhandled error on connection from %s", _peer_address(stream))
        finally:
            self._connections -= 1

    async def _route(self, stream: trio.SocketStream) -> tuple[trio.abc.Stream, RequestHead] | None:
        """Serve everything but a valid WebSocket upgrade, which is returned.

        Does the TLS handshake, reads the head, refuses bad requests and runs
        hypercorn for HTTP connections until they end.
        """
        client = _peer_address(stream)
        deadline = trio.current_time() + self._head_timeout
        transport: trio.abc.Stream = stream
        if self._ssl_context is not None:
            tls = trio.SSLStream(stream, self._ssl_context, server_side=True, https_compatible=True)
            with trio.move_on_at(deadline) as handshake_scope:
                try:
                    await tls.do_handshake()
                except trio.BrokenResourceError:
                    return None
            if handshake_scope.cancelled_caught:
                return None
            if tls.selected_alpn_protocol() == "h2":
                if self._admit_peer(client):
                    await self._serve_http(tls, b"")
                return None
            transport = tls
        try:
            head = await self._read_head(transport, deadline)
            if head is None:
                return None
            data, end = head
            if data.startswith(_HTTP2_PREFACE):
                # HTTP/2 with prior knowledge: hypercorn speaks it, we do not.
                if self._admit_peer(client):
                    await self._serve_http(transport, data)
                return None
            request = parse_request_head(data[:end], trailing=data[end:], client=client)
            if self._sources is not None:
                request = self._admit(self._sources, request)
            if not (
                request.path.startswith(self._websocket_prefix) and request.is_websocket_upgrade
            ):
                await self._serve_http(transport, _plain_http(request, data))
                return None
            check_websocket_upgrade(request)
        except BadRequest as error:
            await self._refuse(transport, error)
            return None
        return transport, request

    def _admit(self, sources: SourceTable, request: RequestHead) -> RequestHead:
        """``request`` with its source, once a connect token was taken for it.
        Raises `BadRequest` 429 when the source has none left."""
        peer = request.client[0] if request.client is not None else None
        source = sources.source_of(peer, request)
        if (
            not self._untrusted_forwarding_logged
            and not sources.limits.forwarded_allow_ips
            and request.header("x-forwarded-for") is not None
        ):
            self._untrusted_forwarding_logged = True
            logger.warning(
                "A request from %s carries X-Forwarded-For, but no proxy is trusted: the "
                "per-IP limits count the peer's address. Behind a proxy, name it with "
                "--forwarded-allow-ips (logged once)",
                peer,
            )
        if source is None:
            return request
        wait = sources.admit(source, trio.current_time())
        if wait:
            self._refused_rate_total += 1
            limits = sources.limits
            seconds = retry_after(wait)
            raise BadRequest(
                429,
                f"Too many new connections from your address: at most "
                f"{limits.connect_rate:g} a second after the first {limits.connect_burst}; "
                f"retry in {seconds} s",
                [(b"Retry-After", b"%d" % seconds)],
            )
        return attrs.evolve(request, source=source)

    def _admit_peer(self, client: tuple[str, int] | None) -> bool:
        """Take a connect token for an HTTP/2 connection, counted under its peer."""
        sources = self._sources
        if sources is None:
            return True
        source = sources.source_of(client[0] if client is not None else None)
        if source is None or not sources.admit(source, trio.current_time()):
            return True
        self._refused_rate_total += 1
        return False

    async def _read_head(
        self, stream: trio.abc.Stream, deadline: float
    ) -> tuple[bytes, int] | None:
        """Read until the end of the request head.

        Returns ``(bytes read, index just past the head)``, or None when the
        peer went away or stayed silent. Raises `BadRequest` 431 / 408.
        """
        buffer = bytearray()
        with trio.move_on_at(deadline):
            while True:
                try:
                    chunk = await stream.receive_some(_RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return None
                if not chunk:
                    return None
                search_from = max(0, len(buffer) - 3)
                buffer += chunk
                # RFC 9112 section 2.2: ignore empty lines before the request line.
                while buffer.startswith(b"\r\n"):
                    del buffer[:2]
                    search_from = 0
                end = buffer.find(b"\r\n\r\n", search_from)
                if end >= 0:
                    if end + 4 > self._max_head_size:
                        raise BadRequest(431, "Request header fields too large")
                    return bytes(buffer), end + 4
                if len(buffer) >= self._max_head_size:
                    raise BadRequest(431, "Request header fields too large")
        if not buffer:
            return None  # An idle connect (health probe, preconnect): nothing to answer.
        raise BadRequest(408, "Request head not received in time")

    async def _refuse(self, stream: trio.abc.Stream, error: BadRequest) -> None:
        self._refused_total += 1
        logger.debug("Refused request: %s", error)
        with trio.move_on_after(self._reject_timeout):
            await reject_websocket(stream, error.status_code, error.message, headers=error.headers)

    async def _serve_http(self, stream: trio.abc.Stream, data: bytes) -> None:
        self._http_connections += 1
        try:
            server = TCPServer(
                self._http_app,
                self._http_config,
                self._http_context,
                self._http_state,
                # TCPServer is annotated with SSLStream but duck-types plain
                # streams (see _ReplayStream).
                _ReplayStream(stream, data),  # type: ignore[arg-type]
            )
            await server.run()
        finally:
            self._http_connections -= 1


async def serve(
    host: str | None,
    port: int,
    *,
    websocket_handler: WebSocketHandler,
    asgi_app: ASGIApp,
    ssl_context: ssl.SSLContext | None = None,
    websocket_prefix: str = "/ws/",
    max_websockets: int = DEFAULT_MAX_WEBSOCKETS,
    max_head_size: int = DEFAULT_MAX_HEAD_SIZE,
    head_timeout: float = DEFAULT_HEAD_TIMEOUT,
    reject_timeout: float = DEFAULT_REJECT_TIMEOUT,
    http_config: Config | None = None,
    sources: SourceTable | None = None,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` and serve WebSockets and HTTP on it.

    Start with ``listener = await nursery.start(partial(serve, ...))``: the
    sockets are bound and listening when the `Listener` is reported. ``port``
    0 picks a free port (see `Listener.port`); ``host`` None binds every
    interface, possibly one socket per address family.

    ``websocket_handler`` gets upgrade requests under ``websocket_prefix``
    (validated; 503 beyond ``max_websockets`` handlers at once); ``asgi_app``
    gets everything else through hypercorn configured by ``http_config``
    (default: hypercorn's defaults, access log off, errors to the
    ``realtime.http`` logger). ``ssl_context`` makes every connection TLS.
    ``sources`` (default: none) limits new connections per source IP (429) and
    names each upgrade's ``request.source``. ``reuse_port`` binds with
    ``SO_REUSEPORT`` (see `bind_shared`), so that other processes can listen on
    the same port and the kernel spreads new connections among them.

    Runs until cancelled, or until `Listener.stop_accepting` was called and
    every accepted connection has ended. Exceptions from one connection
    (handler included) are logged and contained. Raises OSError if the
    address cannot be bound.
    """
    if reuse_port:
        listeners = [
            trio.SocketListener(sock)
            for sock in await bind_shared(host, port, backlog=_MAX_BACKLOG)
        ]
    else:
        listeners = await trio.open_tcp_listeners(port, host=host)
    try:
        listener = Listener(
            listeners,
            websocket_handler=websocket_handler,
            asgi_app=asgi_app,
            ssl_context=ssl_context,
            websocket_prefix=websocket_prefix,
            max_websockets=max_websockets,
            max_head_size=max_head_size,
            head_timeout=head_timeout,
            reject_timeout=reject_timeout,
            http_config=http_config,
            sources=sources,
        )
    except Exception:
        for socket_listener in listeners:
            socket_listener.socket.close()
        raise
    logger.info("Listening on %s", listener._describe())
    task_status.started(listener)
    await listener._run()


async def bind_shared(
    host: str | None, port: int, *, backlog: int | None = None
) -> list[trio.socket.SocketType]:
    """Sockets bound to ``host:port`` with ``SO_REUSEPORT``, one per address of
    ``host`` (as `trio.open_tcp_listeners` binds them), listening when a
    ``backlog`` is given.

    Processes of one user that bind a port this way share it: the kernel (Linux
    3.9+) spreads new connections over the sockets that listen on it, each with its
    own accept queue, and a socket that closes (its process died) simply drops out.
    A socket bound without listening takes no connections: a supervisor holds one to
    keep the port while its workers come and go. ``port`` 0 picks a free port for
    the first address, and the others take the same one. Raises OSError if the
    address cannot be bound (in use by a socket without ``SO_REUSEPORT``, or by
    another user).
    """
    addresses = await trio.socket.getaddrinfo(
        host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    sockets: list[trio.socket.SocketType] = []
    try:
        for family, type_, proto, _, sockaddr in addresses:
            try:
                sock = trio.socket.socket(family, type_, proto)
            except OSError as exc:
                # An address family this system lacks (IPv6 for "localhost", say).
                if exc.errno == errno.EAFNOSUPPORT:
                    continue
                raise
            sockets.append(sock)
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
            if family == trio.socket.AF_INET6:
                sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                sockaddr = (sockaddr[0], sockets[0].getsockname()[1], *sockaddr[2:])
            await sock.bind(sockaddr)
            if backlog is not None:
                sock.listen(backlog)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(errno.EAFNOSUPPORT, f"no address family of {host} is supported here")
    return sockets
