"""The Python client of the gateway (protocol v1), on trio-websocket.

::

    async with open_client("ws://127.0.0.1:8000", "client-123", token=jwt) as client:
        await client.subscribe(Channel.PRICES, ["AAPL"])
        async for item in client:
            ...

Under asyncio, ``open_asyncio_client`` takes the same arguments and yields a client
with the same methods (the Trio client in a thread of its own; see ``_asyncio``).

See ``docs/client.md`` and the theory of operation in ``realtime.client._client``.
The terminal viewer behind ``realtime listen`` (``_viewer``, on rich) is not imported
here: importing this package loads no server module and no rich.
"""

from __future__ import annotations

from ._asyncio import AsyncioClient, open_asyncio_client
from ._client import (
    DEFAULT_BUFFER_SIZE,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    EVENT_RESERVE,
    AuthenticationError,
    Backoff,
    Client,
    ClientError,
    ClientEvent,
    ClientStatistics,
    ConnectError,
    ConnectionClosedError,
    Disconnected,
    HistoryGap,
    Item,
    Lagged,
    Reconnected,
    ReconnectFailed,
    RequestError,
    TLSError,
    TokenProvider,
    open_client,
)

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "EVENT_RESERVE",
    "AsyncioClient",
    "AuthenticationError",
    "Backoff",
    "Client",
    "ClientError",
    "ClientEvent",
    "ClientStatistics",
    "ConnectError",
    "ConnectionClosedError",
    "Disconnected",
    "HistoryGap",
    "Item",
    "Lagged",
    "ReconnectFailed",
    "Reconnected",
    "RequestError",
    "TLSError",
    "TokenProvider",
    "open_asyncio_client",
    "open_client",
]
