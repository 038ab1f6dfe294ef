"""``POST /api/disconnect``: close a user's connections, or one client's, with 4403.

The body is ``{"user": SUB}``, ``{"client_id": ID}``, or both (that connection, if it
is that user's). Every connection it names is closed with 4403 (forbidden: clients do
not reconnect on their own) at once, whatever it had pending; the answer, 200, lists
the client ids closed: ``{"disconnected": ["a1", "a2"]}`` (empty when none matched).
This is how a revoked user is cut off; see docs/security.md for what it does not do
(the tokens the user holds stay valid until their ``exp``).

Administrators only: the API key, or a token whose ``roles`` lists ``"admin"``. The
connections are this process's: a cluster's other nodes are not told (docs/cluster.md).

====  ====================  ===========================================================
405   ``invalid_message``   not a POST
403   ``forbidden``         the API is off (no API key, authentication off), or a token
                            without the admin role
401   ``unauthorized``      ``Authorization: Bearer <key or token>`` missing or refused
413   ``too_large``         body over ``--publish-max-body``
400   ``invalid_json``,     not a JSON object; an unknown or mistyped field; neither
      ``invalid_message``   ``user`` nor ``client_id``
200                         ``{"disconnected": [client ids]}``
====  ====================  ===========================================================
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

from feeds import MAX_USER_LENGTH
from protocol import CLIENT_ID_PATTERN, ErrorCode

from ._http_auth import HTTPAuth, Reject, peer
from ._publish import BODY_TIMEOUT, APIEndpoint, Headers, Receive, Scope, json_object
from ._sessions import Sessions

logger = logging.getLogger("realtime.api")

PATH: Final = "/api/disconnect"
_CLIENT_ID: Final = re.compile(CLIENT_ID_PATTERN)


class DisconnectAPI(APIEndpoint):
    """The ASGI handler of ``POST /api/disconnect`` (see the module doc), closing the
    connections of ``sessions``. Never blocks but on the request's body."""

    _action = "disconnect"
    _api_name = "The disconnect API"

    def __init__(
        self,
        sessions: Sessions,
        *,
        auth: HTTPAuth,
        max_body: int,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        super().__init__(auth=auth, max_body=max_body, body_timeout=body_timeout)
        self._sessions = sessions

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, object, Headers]:
        self._check_method(scope, ("POST",), "Use POST to disconnect")
        self._authenticate(scope)
        user, client_id = _parse(json_object(await self._read_body(scope, receive)))
        closed = self._sessions.disconnect(user=user, client_id=client_id)
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
        return 200, {"disconnected": closed}, ()


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
