"""Publish events into the gateway from any Python program: ``POST /api/publish`` on
httpx, blocking or async (asyncio or Trio), with retries and typed errors.

::

    from realtime.publish import PublishClient
    from protocol import PriceData

    with PublishClient("http://127.0.0.1:8000", api_key=KEY) as gateway:
        gateway.publish_price("ORCL", PriceData(price=142.5, change=1.25, change_pct=0.88,
                                                 volume=1200, bid=142.49, ask=142.51))

See ``docs/client.md`` and the theory of operation in ``realtime.publish._client``.
Importing it loads no server module.
"""

from __future__ import annotations

from ._client import (
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    RETRY_STATUSES,
    AsyncPublishClient,
    Event,
    Payload,
    PublishClient,
    PublishError,
    Retry,
    event,
    price,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "RETRY_STATUSES",
    "AsyncPublishClient",
    "Event",
    "Payload",
    "PublishClient",
    "PublishError",
    "Retry",
    "event",
    "price",
]
