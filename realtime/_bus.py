"""The in-process bus: feeds publish, and each event reaches the hub at once.

``publish`` stamps the event and hands it to the hub, which offers its frames to
every subscriber's outbox: a frame for an idle connection is written there and then,
and the flusher writes what is due of the rest; all in the publisher's task, without
yielding. So the stamp is taken right before the fan-out, a publisher can never
outrun the hub (it pays for the fan-out itself: the strongest backpressure, with no
buffer to bound), and the flusher coalesces what a burst of events leaves for each
connection (see ``_session.Flusher``).
"""

from __future__ import annotations

from protocol import CHANNEL_EVENTS, Channel, EventData

from ._hub import Event, Hub, utc_now
from ._session import Flusher


class InProcessBus:
    """A :class:`feeds.Publisher` for producers in the gateway's own process."""

    def __init__(self) -> None:
        self._hub: Hub | None = None
        self._flusher: Flusher | None = None

    def attach(self, hub: Hub, flusher: Flusher) -> None:
        """Deliver to ``hub`` and write through ``flusher`` from now on. The feeds are
        built around the bus before the hub, which needs their symbols, exists."""
        self._hub = hub
        self._flusher = flusher

    async def publish(
        self,
        channel: Channel,
        data: EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
    ) -> None:
        """Stamp ``data`` with the publish time and deliver it to every subscriber's
        outbox; never blocks and is not a checkpoint (see the module docstring).

        Raises ``RuntimeError`` before :meth:`attach`, and ``TypeError`` when ``data``
        is not the channel's payload or a price has no symbol: a bug in the producer,
        caught where it happens.
        """
        expected = CHANNEL_EVENTS[channel][1]
        if type(data) is not expected:
            raise TypeError(f"{channel} carries {expected.__name__}, not {type(data).__name__}")
        if (symbol is None) is (channel is Channel.PRICES):
            raise TypeError("a symbol is required on prices and only there")
        if self._hub is None or self._flusher is None:
            raise RuntimeError("the bus is not attached to a hub yet")
        self._flusher.tick()
        self._hub.publish(Event(channel, data, utc_now(), symbol, to))
        self._flusher.flush_due()
