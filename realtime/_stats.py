"""``GET /ws/stats``: who is connected and what each holds, in the spec's shape, a page at a time.

The body is the spec's::

    {"total_connections": 3,
     "clients": ["client-1", "client-2", "client-3"],
     "channel_subscriptions": {"client-1": ["prices", "alerts"], "client-2": ["signals"]},
     "symbol_subscriptions": {"client-1": ["AAPL", "MSFT"]}}

``clients`` lists connected client ids in code-point order; ``channel_subscriptions``
has an entry for each listed client holding at least one channel (channels in the
protocol's order), ``symbol_subscriptions`` one for each listed client holding price
symbols (sorted), where ``["*"]`` stands for a subscription to every symbol (the
universe could be 100,000 symbols long; ``welcome.symbols`` lists it).

Bounded at any number of connections: at most ``limit`` clients are listed (default
:data:`DEFAULT_LIMIT`, at most :data:`MAX_LIMIT`), starting after the client id
``after``. When more clients follow the page, the body also has ``"truncated": true``
and ``"next_after"``: the last id listed, to pass as ``after`` for the next page. The
hub keeps ids sorted, so a page costs O(log n + limit), not O(n); what it holds is
bounded by ``limit`` x ``--max-symbols`` symbols. Totals over every connection are in
``GET /metrics``. Subscriptions come from each connection's own state
(:class:`protocol.Subscriptions`), as its requests left it.

With authentication on, only an administrator may read it (``_app``), and the body
also has ``users``: each listed client's user (its token's ``sub``), so that an
administrator can see whom to ``POST /api/disconnect``.

On a node of a cluster the body is the node's own. ``?scope=cluster`` asks for the
cluster's instead: every live node with its connections and their sum, as of each
node's last report (every two seconds; ``_cluster``), without the per-client lists
(those stay per node: a listing of every client of the cluster would cost a walk over
every node's clients). A gateway that is no node answers it with 400.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import parse_qsl

from protocol import ALL_SYMBOLS, CLIENT_ID_PATTERN, Channel

from ._hub import Hub
from ._sessions import Sessions

#: Clients listed when the request names no ``limit``.
DEFAULT_LIMIT: Final = 1000
#: The largest ``limit`` a request may ask for.
MAX_LIMIT: Final = 10_000
#: ``symbol_subscriptions`` of a client subscribed to every price symbol.
EVERY_SYMBOL: Final = "*"

_PARAMETERS: Final = ("limit", "after", "scope")
#: ``scope`` values: this gateway's connections, or (on a node) the cluster's.
SCOPES: Final = ("node", "cluster")
_CLIENT_ID: Final = re.compile(CLIENT_ID_PATTERN)
_LIMIT: Final = re.compile(r"[0-9]{1,6}")


class StatsQueryError(ValueError):
    """A query string ``/ws/stats`` cannot answer; the message says what to send."""


def parse_query(query: bytes) -> tuple[int, str | None, bool]:
    """``(limit, after, cluster)`` of a ``/ws/stats`` query string (``cluster``: it
    asks for ``scope=cluster``); raises :exc:`StatsQueryError`."""
    try:
        pairs = parse_qsl(
            query.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=bool(query),
            max_num_fields=len(_PARAMETERS),
        )
    except ValueError:  # also UnicodeDecodeError: a query is percent-encoded ASCII
        raise StatsQueryError(
            "Unreadable query string: /ws/stats takes ?limit=N&after=CLIENT_ID&scope=node|cluster"
        ) from None
    values: dict[str, str] = {}
    for name, value in pairs:
        if name not in _PARAMETERS:
            raise StatsQueryError(
                f"Unknown query parameter {name[:64]!r}: /ws/stats takes limit, after and scope"
            )
        if name in values:
            raise StatsQueryError(f"Query parameter {name!r} given twice")
        values[name] = value
    limit = DEFAULT_LIMIT
    raw_limit = values.get("limit")
    if raw_limit is not None:
        if not _LIMIT.fullmatch(raw_limit) or int(raw_limit) > MAX_LIMIT:
            raise StatsQueryError(
                f"limit must be a whole number from 0 to {MAX_LIMIT}, got {raw_limit[:64]!r}"
            )
        limit = int(raw_limit)
    after = values.get("after")
    if after is not None and not _CLIENT_ID.fullmatch(after):
        raise StatsQueryError(
            "after must be a client id (1-64 characters of A-Z a-z 0-9 _ . : -), "
            f"got {after[:64]!r}"
        )
    scope = values.get("scope", "node")
    if scope not in SCOPES:
        raise StatsQueryError(f"scope must be node or cluster, got {scope[:64]!r}")
    return limit, after, scope == "cluster"


def stats_body(
    hub: Hub, sessions: Sessions, limit: int, after: str | None, *, users: bool = False
) -> dict[str, Any]:
    """The ``/ws/stats`` body for one page (see the module doc); ``users`` adds each
    listed client's user."""
    page, more = hub.clients_page(limit, after)
    clients: list[str] = []
    channels: dict[str, list[str]] = {}
    symbols: dict[str, list[str]] = {}
    owners: dict[str, str] = {}
    for outbox in page:
        client_id = outbox.client_id
        clients.append(client_id)
        if users and outbox.user is not None:
            owners[client_id] = outbox.user
        subscriptions = sessions.subscriptions_of(outbox)
        if subscriptions is None or not len(subscriptions):
            continue
        channels[client_id] = [str(channel) for channel in Channel if channel in subscriptions]
        selection = subscriptions.get(Channel.PRICES)
        if selection is ALL_SYMBOLS:
            symbols[client_id] = [EVERY_SYMBOL]
        elif selection is not None:
            symbols[client_id] = sorted(selection)
    body: dict[str, Any] = {
        "total_connections": hub.connection_count,
        "clients": clients,
        "channel_subscriptions": channels,
        "symbol_subscriptions": symbols,
    }
    if users:
        body["users"] = owners
    if more:
        body["truncated"] = True
        # The last id listed; with limit=0 the page is empty and the cursor stays put.
        next_after = clients[-1] if clients else after
        if next_after is not None:
            body["next_after"] = next_after
    return body
