"""Which browser pages may open a WebSocket on the gateway: the ``Origin`` check.

A browser sends ``Origin`` with every WebSocket handshake, and lets any page open a
WebSocket to any host: without this check, a page on another site could read the
gateway in the name of whoever visits it (cross-site WebSocket hijacking). Programs
send no ``Origin`` and are not concerned.

:class:`OriginPolicy` allows a handshake when it has no ``Origin``; else when the
origin is the gateway's own (its host and port are those of the request's ``Host``,
as a browser sends them for a page served by the gateway, such as the dashboard);
else when ``--allowed-origins`` lists it exactly, matches one of its
``scheme://*.domain[:port]`` patterns (any subdomain, at any depth, of the domain;
not the domain itself; scheme and port as written), or is ``*``; else, with the
``localhost`` default (authentication off and no ``--allowed-origins``), when its
host is ``localhost``, ``127.0.0.1`` or ``[::1]``, on any port. Everything else,
``Origin: null`` (sandboxed frames, ``file:`` pages) included, is refused: the
session answers 403 before the 101.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from ._config import ANY_ORIGIN, SUBDOMAINS

__all__ = ["OriginPolicy"]

_ORIGIN: Final = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[^\]/]*\]|[^:/\[]+)(?::(?P<port>[0-9]{1,5}))?"
)
_LOCALHOST: Final = frozenset({"localhost", "127.0.0.1", "[::1]"})


class OriginPolicy:
    """The ``Origin`` check of WebSocket handshakes; see the module docstring.

    ``allowed`` is ``--allowed-origins`` parsed (exact origins, patterns, or ``*``
    alone); ``localhost`` also allows pages on this machine, any port.
    """

    __slots__ = ("_any", "_exact", "_localhost", "_patterns")

    def __init__(self, allowed: Sequence[str], *, localhost: bool) -> None:
        self._any = ANY_ORIGIN in allowed
        self._exact = frozenset(origin for origin in allowed if f"://{SUBDOMAINS}" not in origin)
        patterns = []
        for origin in allowed:
            scheme, separator, rest = origin.partition(f"://{SUBDOMAINS}")
            if separator:
                domain, _, port = rest.partition(":")
                patterns.append((scheme, "." + domain, port or None))
        self._patterns = tuple(patterns)
        self._localhost = localhost

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a handshake with header ``Origin: origin`` (``None``: absent) and
        ``Host: host`` may open a WebSocket."""
        if origin is None or self._any:
            return True
        origin = origin.strip().lower()
        if origin in self._exact:
            return True
        match = _ORIGIN.fullmatch(origin)
        if match is None:
            return False
        netloc = match["host"] + (f":{match['port']}" if match["port"] else "")
        if host is not None and netloc == host.strip().lower():
            return True
        if self._localhost and match["host"] in _LOCALHOST:
            return True
        return any(
            match["scheme"] == scheme and match["host"].endswith(suffix) and match["port"] == port
            for scheme, suffix, port in self._patterns
        )
