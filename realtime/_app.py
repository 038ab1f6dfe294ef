"""The HTTP side: a plain ASGI app that hypercorn serves on the gateway's port.

``GET /health``, ``GET /livez`` and ``GET /readyz`` (``_health``), ``GET /ws/stats``
(``_stats``), ``GET /metrics``, ``POST /api/publish``, ``/api/alert-rules[/ID]`` and
``POST /api/disconnect`` (their own handlers, in ``_publish``, ``_rules_api`` and
``_disconnect``), and the built dashboard for every other ``GET`` (``_static``: ``/`` is
its ``index.html``; unknown files are 404). With authentication on, ``/ws/stats`` and
``/metrics`` are an administrator's, as every ``/api/*`` is (``_http_auth``); ``/health``,
the probes and the dashboard stay open. 405 for a known path with another method, 426
for a ``/ws/`` request that is not an upgrade. CORS preflights never get here:
``_cors.CORS`` wraps the app and answers them. No framework: a handful of routes do not
earn one, and the app stays a thin view over the hub's statistics.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ._disconnect import PATH as DISCONNECT_PATH
from ._disconnect import DisconnectAPI
from ._health import Check, Readiness
from ._http_auth import HTTPAuth, Reject
from ._hub import Hub
from ._publish import PATH as PUBLISH_PATH
from ._publish import PublishAPI
from ._rules_api import AlertRulesAPI
from ._sessions import Sessions
from ._static import StaticFiles
from ._stats import StatsQueryError, parse_query, stats_body

#: Routes open to anyone whatever the authentication: an orchestrator's probes carry
#: no credential.
OPEN_ROUTES: Final = frozenset({"/health", "/livez", "/readyz"})

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class GatewayApp:
    """The ASGI 3 application of the gateway's HTTP routes."""

    def __init__(
        self,
        hub: Hub,
        sessions: Sessions,
        registry: CollectorRegistry,
        *,
        version: str,
        publish: PublishAPI | None = None,
        alert_rules: AlertRulesAPI | None = None,
        disconnect: DisconnectAPI | None = None,
        auth: HTTPAuth | None = None,
        readiness: Readiness | None = None,
        cluster: Callable[[], dict[str, Any]] | None = None,
        static: StaticFiles | None = None,
    ) -> None:
        self.hub = hub
        #: The cluster's view, for ``/ws/stats?scope=cluster``; ``None``: no cluster.
        self.cluster = cluster
        #: Guards ``/ws/stats`` and ``/metrics`` while authentication is on; ``None``:
        #: they are open.
        self.auth = auth
        #: The checks of ``/readyz``; ``None``: only the drain is checked.
        self.readiness = readiness
        #: ``POST /api/publish``; ``None``: the route is 404.
        self.publish = publish
        #: ``/api/alert-rules`` and ``/api/alert-rules/{id}``; ``None``: they are 404.
        self.alert_rules = alert_rules
        #: ``POST /api/disconnect``; ``None``: the route is 404.
        self.disconnect = disconnect
        self.sessions = sessions
        self.registry = registry
        self.version = version
        self._routes: dict[str, Callable[[Scope], tuple[int, bytes, bytes]]] = {
            "/health": self._health,
            "/livez": self._livez,
            "/readyz": self._readyz,
            "/ws/stats": self._stats,
            "/metrics": self._metrics,
        }
        #: The dashboard: ``GET``/``HEAD`` of any path no route above claims.
        self.static = static if static is not None else StaticFiles()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await _refuse_websocket(scope, receive, send)
            return
        if scope["type"] != "http":  # no lifespan
            return
        if scope["path"] == PUBLISH_PATH and self.publish is not None:
            await self.publish(scope, receive, send)
            return
        if self.alert_rules is not None and self.alert_rules.claims(scope["path"]):
            await self.alert_rules(scope, receive, send)
            return
        if scope["path"] == DISCONNECT_PATH and self.disconnect is not None:
            await self.disconnect(scope, receive, send)
            return
        route = self._routes.get(scope["path"])
        if (
            route is None
            and scope["method"] in ("GET", "HEAD")
            and not scope["path"].startswith(("/ws/", "/api/"))
        ):
            await self.static(scope, receive, send)
            return
        refused: Reject | None = None
        if route is None and scope["path"].startswith("/ws/"):
            status, content_type = 426, b"application/json"
            body = _json_error("A WebSocket endpoint: connect with Upgrade: websocket")
        elif route is None:
            status, content_type, body = 404, b"application/json", _json_error("Not found")
        elif scope["method"] not in ("GET", "HEAD"):
            status, content_type, body = 405, b"application/json", _json_error("Use GET")
        elif (refused := self._refusal(scope)) is not None:
            status, content_type, body = refused.status, b"application/json", _reject_body(refused)
        else:
            status, content_type, body = route(scope)
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        if refused is not None:
            headers += list(refused.headers)
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        elif status == 426:
            headers += [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    def _refusal(self, scope: Scope) -> Reject | None:
        """Why a guarded route is refused to this request: with authentication on,
        ``/ws/stats`` and ``/metrics`` need an administrator's credential."""
        auth = self.auth
        if auth is None or not auth.authentication or scope["path"] in OPEN_ROUTES:
            return None
        name = scope["path"]
        try:
            auth.admin(scope, api_name=name)
        except Reject as reject:
            auth.log_refusal(f"{name} request", scope, reject.message)
            return reject
        return None

    def _health(self, scope: Scope) -> tuple[int, bytes, bytes]:
        draining = self.sessions.draining
        body = {
            "status": "draining" if draining else "ok",
            "version": self.version,
            "connections": self.hub.connection_count,
            "epoch": self.hub.epoch,
        }
        return (503 if draining else 200), b"application/json", orjson.dumps(body)

    def _livez(self, scope: Scope) -> tuple[int, bytes, bytes]:
        """The process answers: 200, draining or not (a drain is no reason to restart)."""
        return 200, b"application/json", b'{"status":"alive"}'

    def _readyz(self, scope: Scope) -> tuple[int, bytes, bytes]:
        """200 when every check of ``_health.Readiness`` passes, else 503 naming the
        checks that failed and why."""
        if self.readiness is not None:
            checks = self.readiness.checks()
        else:
            checks = [Check("draining", not self.sessions.draining, "the gateway is shutting down")]
        failed = [check.name for check in checks if not check.ok]
        body: dict[str, object] = {
            "status": "not ready" if failed else "ready",
            "checks": {check.name: "ok" if check.ok else check.detail for check in checks},
        }
        if failed:
            body["failed"] = failed
        return (503 if failed else 200), b"application/json", orjson.dumps(body)

    def _stats(self, scope: Scope) -> tuple[int, bytes, bytes]:
        """The spec's shape, one bounded page of clients at a time (see ``_stats``)."""
        try:
            limit, after, cluster = parse_query(scope.get("query_string", b""))
        except StatsQueryError as exc:
            return 400, b"application/json", _json_error(str(exc))
        if cluster:
            if self.cluster is None:
                message = "scope=cluster is for a node of a cluster (--bus): this gateway is alone"
                return 400, b"application/json", _json_error(message)
            return 200, b"application/json", orjson.dumps(self.cluster())
        users = self.auth is not None and self.auth.authentication
        body = stats_body(self.hub, self.sessions, limit, after, users=users)
        return 200, b"application/json", orjson.dumps(body)

    def _metrics(self, scope: Scope) -> tuple[int, bytes, bytes]:
        return 200, CONTENT_TYPE_LATEST.encode(), generate_latest(self.registry)


def _json_error(text: str) -> bytes:
    return orjson.dumps({"error": text})


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer an upgrade hypercorn was handed, which the gateway does not serve: one to
    a path other than ``/ws/{client_id}``, or one after another request on the same
    connection (the listener reads only a connection's first request; later ones are
    hypercorn's). Says which, with a status, instead of hypercorn's bare 500."""
    await receive()  # websocket.connect
    path = scope["path"]
    if path.startswith("/ws/"):
        status = 400
        text = (
            "Open each WebSocket on a connection of its own: an upgrade after another "
            "request on the same connection is not served"
        )
    else:
        status, text = 404, f"No WebSocket endpoint at {path[:200]}: connect to /ws/{{client_id}}"
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close"})  # the server answers 403
        return
    body = _json_error(text)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


def _reject_body(reject: Reject) -> bytes:
    return orjson.dumps({"error": reject.message, "code": reject.code})
