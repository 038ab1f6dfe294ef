"""What a feed publishes into: the one interface between producers and the server."""

from __future__ import annotations

from typing import Protocol

from protocol import Channel, EventData


class Publisher(Protocol):
    """Where feeds (and the publish API) put events.

    The bus behind it stamps each event with its ``timestamp`` and its per-stream
    ``seq`` and builds the channel's event message. ``publish`` blocks while the bus
    is full: that is the backpressure that keeps a fast feed from outrunning the hub.
    """

    async def publish(
        self,
        channel: Channel,
        data: EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
    ) -> None:
        """Publish ``data`` on ``channel``.

        ``symbol`` is required for prices (the stream a price update counts in) and
        unused otherwise. ``to`` sends to one client id instead of every subscriber.
        """
        ...
