"""The in-process bus: feeds publish, and each event reaches the hub at once.

``publish`` stamps the event and hands it to the hub, which offers its frames to
every subscriber's outbox, in the publisher's task and without yielding. So the
stamp is taken right before the fan-out, and a publisher can never outrun the hub:
it pays for the fan-out itself, the strongest backpressure, with no buffer to bound.
Writing the outboxes to the sockets is the delivery's business (``_delivery``).
"""

from __future__ import annotations

from protocol import CHANNEL_EVENTS, Channel, EventData

from ._hub import Event, Hub, utc_now


class PublishUnavailable(Exception):
    """The bus cannot take an event now: a cluster node whose link to Redis is down,
    or a publish that Redis did not confirm. The publish API answers 503; the caller
    may retry later. ``sent`` says whether the event may have reached Redis before
    the failure (it may then have been published after all: a retry could publish it
    twice); when False, nothing was sent."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


def check_event(channel: Channel, data: EventData, symbol: str | None) -> None:
    """Raise ``TypeError`` when ``data`` is not ``channel``'s payload, or ``symbol`` is
    missing on a price or given elsewhere: a producer's bug, caught by every bus."""
    expected = CHANNEL_EVENTS[channel][1]
    if type(data) is not expected:
        raise TypeError(f"{channel} carries {expected.__name__}, not {type(data).__name__}")
    if (symbol is None) is (channel is Channel.PRICES):
        raise TypeError("a symbol is required on prices and only there")


class InProcessBus:
    """A :class:`feeds.Publisher` for producers in the gateway's own process."""

    def __init__(self) -> None:
        self._hub: Hub | None = None

    def attach(self, hub: Hub) -> None:
        """Deliver to ``hub`` from now on. The feeds are built around the bus before
        the hub, which needs their symbols, exists."""
        self._hub = hub

    @property
    def connected(self) -> bool:
        """Always: nothing lies between the publishers and the hub (``/readyz``)."""
        return True

    async def publish(
        self,
        channel: Channel,
        data: EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
        user: str | None = None,
    ) -> None:
        """Stamp ``data`` with the publish time and deliver it to every subscriber's
        outbox it is addressed to (``to``, ``user``: see :class:`feeds.Publisher`);
        never blocks and is not a checkpoint (see the module docstring).

        Raises ``RuntimeError`` before :meth:`attach`, and ``TypeError`` when ``data``
        is not the channel's payload or a price has no symbol: a bug in the producer,
        caught where it happens.
        """
        check_event(channel, data, symbol)
        if self._hub is None:
            raise RuntimeError("the bus is not attached to a hub yet")
        self._hub.publish(Event(channel, data, utc_now(), symbol, to, user))
