"""Who calls the HTTP side: the API key, or with authentication on a token.

Theory of operation
-------------------
Every guarded route (``/api/*``; with authentication on also ``/ws/stats`` and
``/metrics``) reads one credential, ``Authorization: Bearer <credential>``:

* the API key (``--api-key``), compared in constant time: the administrator;
* with a key for tokens configured (``--jwt-secret``, ``--jwt-public-key``,
  ``--jwks``), a token verified exactly as a connection's is (signature, ``exp``,
  ``nbf``, ``aud``, ``iss``): its ``sub`` is the caller, an administrator when its
  ``roles`` claim lists ``"admin"``.

:meth:`HTTPAuth.caller` returns the :class:`Caller`, or raises :exc:`Reject`: 403 when
no credential could work (no API key, authentication off: the API is off), 401 for a
missing or refused one. :meth:`HTTPAuth.admin` also refuses (403) a caller who is not
an administrator. What each route then allows a user who is not one is the route's
business (``_rules_api``: their own alert rules).

Refusals are counted here; each route logs its own (``[API] Refused publish from
HOST: reason``) through :meth:`HTTPAuth.log_refusal`, one
:class:`~realtime._throttle.ThrottledLog` that every route shares, so a flood of bad
credentials writes a few lines, not one per request. A credential is never logged,
whole or in part, and no reason quotes one.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NoReturn

import attrs

from protocol import ErrorCode

from ._auth import ADMIN_ROLE, TokenError, TokenVerifier
from ._throttle import ThrottledLog

logger = logging.getLogger("realtime.api")

Scope = dict[str, Any]
Headers = Sequence[tuple[bytes, bytes]]

#: Code of a missing or refused credential (the HTTP API's own; the WebSocket never
#: sends it).
UNAUTHORIZED: Final = "unauthorized"
_CHALLENGE: Final = (b"www-authenticate", b'Bearer realm="realtime"')


class Reject(Exception):
    """An error answer of the HTTP side: raised anywhere inside a handler, turned into
    the JSON body ``{"error": message, "code": code}`` (and the fields of ``details``)
    once, with ``headers`` added to the response."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Headers = (),
        details: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.details = details or {}


@attrs.frozen
class Caller:
    """Who made a request: ``user`` is a token's ``sub`` (``None``: the API key);
    ``admin`` whether it may do everything the HTTP side does."""

    user: str | None
    admin: bool


#: The holder of the API key.
KEY_HOLDER: Final = Caller(None, admin=True)


def peer(scope: Scope) -> str:
    """The client's address, for logs."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class HTTPAuth:
    """Checks the credentials of HTTP requests; see the module doc.

    ``api_key`` ``None``: no API key; ``verifier`` ``None``: authentication is off (no
    token is taken). ``wall_clock`` gives Unix seconds (what ``exp`` counts in),
    ``clock`` the time the refusal log is throttled by. Never blocks.
    """

    def __init__(
        self,
        *,
        api_key: str | None,
        verifier: TokenVerifier | None,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = api_key.encode("utf-8") if api_key else None
        self.verifier = verifier
        self._wall_clock = wall_clock
        #: Refusals of every route, at most a few lines every few seconds.
        self.refusal_log = ThrottledLog(logger, clock=clock)
        #: Requests refused for their credential (401), or for want of the admin role.
        self.unauthorized = 0
        self.forbidden = 0

    @property
    def authentication(self) -> bool:
        """Whether tokens are taken: ``/ws/stats`` and ``/metrics`` are then guarded."""
        return self.verifier is not None

    def caller(self, scope: Scope, *, api_name: str = "The HTTP API") -> Caller:
        """Who sent ``scope``'s request; raises :exc:`Reject` (see the module doc)."""
        if self._key is None and self.verifier is None:
            raise Reject(
                403,
                ErrorCode.FORBIDDEN,
                f"{api_name} is off: start the gateway with --api-key "
                "(or REALTIME_API_KEY) to turn it on",
            )
        values = [value for name, value in scope["headers"] if name.lower() == b"authorization"]
        scheme, _, credential = (values[0] if len(values) == 1 else b"").partition(b" ")
        credential = credential.strip()
        if scheme.lower() != b"bearer" or not credential:
            self._refuse(
                "no credential" if not values else "not sent as 'Authorization: Bearer ...'",
            )
        # compare_digest runs in time independent of where the strings differ.
        if self._key is not None and hmac.compare_digest(credential, self._key):
            return KEY_HOLDER
        if self.verifier is None:
            self._refuse("wrong API key")
        try:
            claims = self.verifier.verify(credential.decode("latin-1"), now=self._wall_clock())
        except TokenError as error:
            if credential.count(b".") != 2:  # not even shaped like a token: a key
                self._refuse("not a token" if self._key is None else "wrong API key")
            self._refuse(f"token refused: {error.reason}")
        return Caller(claims.sub, admin=claims.admin)

    def admin(self, scope: Scope, *, api_name: str = "The HTTP API") -> Caller:
        """:meth:`caller`, and 403 unless it is an administrator."""
        caller = self.caller(scope, api_name=api_name)
        if not caller.admin:
            self.forbidden += 1
            raise Reject(
                403,
                ErrorCode.FORBIDDEN,
                f"{api_name} needs the API key, or a token whose roles claim lists "
                f"{ADMIN_ROLE!r} (user {(caller.user or '')[:64]!r} has no such role)",
            )
        return caller

    def log_refusal(self, action: str, scope: Scope, reason: str) -> None:
        """Log a refused request: ``[API] Refused {action} from HOST: {reason}``,
        rate-limited across every route."""
        self.refusal_log.warning("[API] Refused %s from %s: %s", action, peer(scope), reason)

    def _refuse(self, reason: str) -> NoReturn:
        self.unauthorized += 1
        tokens = " or a token" if self.verifier is not None else ""
        raise Reject(
            401,
            UNAUTHORIZED,
            f"Unauthorized ({reason}): send the gateway's API key{tokens} "
            "as 'Authorization: Bearer <credential>'",
            headers=[_CHALLENGE],
        )
