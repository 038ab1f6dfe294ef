"""``POST /api/disconnect``: close a user's connections, or one client's, with 4403.

The body is ``{"user": SUB}``, ``{"client_id": ID}``, or both (that connection, if it
is that user's). Every connection it names is closed with 4403 (forbidden: clients do
not reconnect on their own) at once, whatever it had pending; the answer, 200, lists
the client ids closed: ``{"disconnected": ["a1", "a2"]}`` (empty when none matched).
This is how a revoked user is cut off; see docs/security.md for what it does not do
(the tokens the user holds stay valid until their ``exp``).

On a node of a cluster (``--bus``) it closes them on every node: the node publishes
the order on the control channel, each live node closes its own and answers with the
client ids it closed, and the node waits for every answer, at most
``--disconnect-wait`` (``_cluster.Membership.disconnect``). The 200 lists the client
ids closed across the cluster, and ``nodes``, how many answered (all that were live).
Nothing is claimed that a node did not confirm (docs/cluster.md, "Disconnects").

Administrators only: the API key, or a token whose ``roles`` lists ``"admin"``.

====  ====================  ===========================================================
405   ``invalid_message``   not a POST
403   ``forbidden``         the API is off (no API key, authentication off), or a token
                            without the admin role
401   ``unauthorized``      ``Authorization: Bearer <key or token>`` missing or refused
413   ``too_large``         body over ``--publish-max-body``
400   ``invalid_json``,     not a JSON object; an unknown or mistyped field; neither
      ``invalid_message``   ``user`` nor ``client_id``
503   ``unavailable``       a node that lost Redis: nothing was closed, on any node;
                            ``Retry-After`` says when to try again
503   ``unconfirmed``       the order may have reached the nodes, or some live nodes
                            did not answer in time: ``disconnected`` lists the closes
                            confirmed, ``unconfirmed`` the nodes that did not answer.
                            Calling again is safe: a connection is closed only once
200                         ``{"disconnected": [client ids]}`` (and ``nodes`` on a node)
====  ====================  ===========================================================
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

from feeds import MAX_USER_LENGTH
from protocol import CLIENT_ID_PATTERN, ErrorCode

from ._bus import PublishUnavailable
from ._cluster import Membership
from ._http_auth import HTTPAuth, Reject, peer
from ._publish import (
    BODY_TIMEOUT,
    RETRY_AFTER,
    UNAVAILABLE,
    UNCONFIRMED,
    APIEndpoint,
    Headers,
    Receive,
    Scope,
    json_object,
)
from ._sessions import Sessions

logger = logging.getLogger("realtime.api")

PATH: Final = "/api/disconnect"
_CLIENT_ID: Final = re.compile(CLIENT_ID_PATTERN)


class DisconnectAPI(APIEndpoint):
    """The ASGI handler of ``POST /api/disconnect`` (see the module doc), closing the
    connections of ``sessions``, or with ``cluster`` those of every node. Blocks on
    the request's body, and on a node for the nodes' answers (bounded)."""

    _action = "disconnect"
    _api_name = "The disconnect API"

    def __init__(
        self,
        sessions: Sessions,
        *,
        cluster: Membership | None = None,
        auth: HTTPAuth,
        max_body: int,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        super().__init__(auth=auth, max_body=max_body, body_timeout=body_timeout)
        self._sessions = sessions
        self._cluster = cluster

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, object, Headers]:
        self._check_method(scope, ("POST",), "Use POST to disconnect")
        self._authenticate(scope)
        user, client_id = _parse(json_object(await self._read_body(scope, receive)))
        if self._cluster is None:
            closed = self._sessions.disconnect(user=user, client_id=client_id)
            answer: dict[str, object] = {"disconnected": closed}
        else:
            closed, answer = await self._everywhere(self._cluster, user, client_id, scope)
        logger.info(
            "[API] Disconnected %d connections (%s) from %s",
            len(closed),
            ", ".join(
                part
                for part in (
                    None if user is None else f"user {user[:64]!r}",
                    None if client_id is None else f"client {client_id}",
                )
                if part is not None
            ),
            peer(scope),
        )
        return 200, answer, ()

    async def _everywhere(
        self, cluster: Membership, user: str | None, client_id: str | None, scope: Scope
    ) -> tuple[list[str], dict[str, object]]:
        """The closes of every node, and the answer; raises Reject 503 unless every
        live node confirmed its own."""
        try:
            closed, nodes, silent = await cluster.disconnect(user=user, client_id=client_id)
        except PublishUnavailable as exc:
            logger.warning("[API] Could not disconnect from %s: %s", peer(scope), exc)
            if not exc.sent:
                raise Reject(
                    503, UNAVAILABLE, str(exc), headers=[(b"retry-after", b"%d" % RETRY_AFTER)]
                ) from None
            raise Reject(503, UNCONFIRMED, f"{exc}; disconnecting again is safe") from None
        if silent:
            logger.warning(
                "[API] Disconnect from %s: %d nodes did not answer (%s)",
                peer(scope),
                len(silent),
                ", ".join(silent),
            )
            raise Reject(
                503,
                UNCONFIRMED,
                f"{len(silent)} nodes did not confirm within the disconnect wait: they may "
                "or may not have closed their connections; disconnecting again is safe",
                details={"disconnected": closed, "unconfirmed": silent},
            )
        return closed, {"disconnected": closed, "nodes": nodes}


def _parse(body: dict[str, Any]) -> tuple[str | None, str | None]:
    for key in body:
        if key not in ("user", "client_id"):
            raise Reject(
                400,
                ErrorCode.INVALID_MESSAGE,
                f"Unknown field {key[:64]!r}: a disconnect body has user, client_id or both",
            )
    user, client_id = body.get("user"), body.get("client_id")
    if user is None and client_id is None:
        raise Reject(
            400, ErrorCode.INVALID_MESSAGE, "Name whom to disconnect: user, client_id or both"
        )
    if user is not None and not (isinstance(user, str) and 1 <= len(user) <= MAX_USER_LENGTH):
        raise Reject(
            400,
            ErrorCode.INVALID_MESSAGE,
            f"Field 'user' must be a user (a token's sub): a string of 1-{MAX_USER_LENGTH} "
            "characters",
        )
    if client_id is not None and not (
        isinstance(client_id, str) and _CLIENT_ID.fullmatch(client_id)
    ):
        raise Reject(
            400,
            ErrorCode.INVALID_MESSAGE,
            "Field 'client_id' must be a client id: 1-64 of A-Z a-z 0-9 _ . : -",
        )
    return user, client_id
