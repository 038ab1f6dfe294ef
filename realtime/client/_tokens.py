"""Tokens as a client sees them: when one expires, and when to refresh it.

The client never verifies a token (the gateway does, and the client holds no key): it
reads the payload's ``exp`` and ``iat`` only to know when to ask its provider for the
next one. A token whose payload cannot be read, or carries no numeric ``exp``, is sent
as it is and never refreshed ahead of time; the gateway then closes the connection
with 4401 when it expires, which the client answers as it answers any 4401.

The refresh rule (docs/client.md, "Tokens"): ask for a new token when
``min(REFRESH_MARGIN, REFRESH_FRACTION * lifetime)`` is left before ``exp``. Thirty
seconds covers the provider's own round trip and the clock skew between client and
gateway for a token of an hour; a token of a few minutes is refreshed after 90 % of
its life, not every few seconds. Pure functions of their arguments: the caller's clock
(``now``, Unix seconds) comes in as one, so MockClock or fake timers drive the rule.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Final

import attrs

__all__ = [
    "REFRESH_FRACTION",
    "REFRESH_MARGIN",
    "RETRY_AFTER",
    "TokenTimes",
    "token_times",
]

#: Longest time before ``exp`` a token is refreshed, in seconds.
REFRESH_MARGIN: Final = 30.0
#: Share of a token's lifetime left when it is refreshed, if that is less than the margin.
REFRESH_FRACTION: Final = 0.1
#: Shortest wait before asking again when the provider failed or returned no newer token.
RETRY_AFTER: Final = 1.0


@attrs.frozen
class TokenTimes:
    """When a token expires and when to refresh it, Unix seconds."""

    exp: float
    refresh_at: float

    def retry(self, now: float) -> TokenTimes | None:
        """The times for asking again at ``now``, after a refresh that did not produce a
        newer token: half way to ``exp``, at least :data:`RETRY_AFTER` later. ``None``
        once ``exp`` has passed (the gateway closes with 4401 then)."""
        if now >= self.exp:
            return None
        return TokenTimes(self.exp, now + max(RETRY_AFTER, (self.exp - now) / 2))


def token_times(token: str, now: float) -> TokenTimes | None:
    """When ``token`` (a JWT) expires and when to refresh it, as received at ``now``.

    Reads the payload without verifying it. The lifetime counts from ``iat`` when the
    token has one in the past, else from ``now``. ``None`` when the payload is not a
    JSON object with a numeric ``exp``.
    """
    payload = _payload(token)
    if payload is None:
        return None
    exp = payload.get("exp")
    if not _is_number(exp):
        return None
    assert isinstance(exp, int | float)
    iat = payload.get("iat")
    issued = now
    if _is_number(iat) and isinstance(iat, int | float) and iat <= now:
        issued = float(iat)
    lifetime = max(0.0, exp - issued)
    return TokenTimes(float(exp), exp - min(REFRESH_MARGIN, REFRESH_FRACTION * lifetime))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _payload(token: str) -> dict[str, object] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    segment = parts[1]
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    return payload if isinstance(payload, dict) else None
