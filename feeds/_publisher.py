"""What a feed publishes into: the one interface between producers and the server."""

from __future__ import annotations

from typing import Final, Protocol

from protocol import Channel, EventData

#: The user the feeds' own portfolio belongs to. With authentication off every
#: connection is this user's, so the dashboard shows it; with it on, a token whose
#: ``sub`` is ``demo`` sees it (docs/security.md, "Per-user data").
DEMO_USER: Final = "demo"
#: Longest user name (a token's ``sub``): it is logged, and names a user's connections.
MAX_USER_LENGTH: Final = 256


class Publisher(Protocol):
    """Where feeds (and the publish API) put events.

    The bus behind it stamps each event with its ``timestamp`` and its per-stream
    ``seq`` and builds the channel's event message. ``publish`` returns once the bus
    has taken the event: the gateway's in-process bus fans it out before returning,
    so a fast feed can never outrun the hub; a bus with a buffer blocks while it is
    full. Either way that is the backpressure.
    """

    async def publish(
        self,
        channel: Channel,
        data: EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
        user: str | None = None,
    ) -> None:
        """Publish ``data`` on ``channel``.

        ``symbol`` is required for prices (the stream a price update counts in) and
        unused otherwise. ``to`` sends to one client id instead of every subscriber;
        ``user`` to every connection of that user (a token's ``sub``) and nobody
        else's. Given both, the event reaches that client id only if it is that
        user's. Resumes replay the event to the same receivers only.
        """
        ...
