"""The in-process bus: feeds publish into a bounded channel that the hub drains.

The channel's bound is the backpressure DESIGN.md asks for: a feed that outruns the
hub waits in ``publish``; nothing between a feed and the hub grows without bound.

Batching: ``publish`` only yields when the channel is full, and the hub drains every
queued event before it yields. So a feed's whole tick reaches the hub, and every
outbox, before any writer runs, and each connection gets the tick's messages in one
write instead of one write per message: the syscall per write is most of the cost
of a delivery.
"""

from __future__ import annotations

import trio

from protocol import CHANNEL_EVENTS, Channel, EventData

from ._hub import Event, Hub, utc_now


class InProcessBus:
    """A :class:`feeds.Publisher` for producers in the gateway's own process."""

    def __init__(self, buffer: int) -> None:
        self._send, self._receive = trio.open_memory_channel[Event](buffer)

    async def publish(
        self,
        channel: Channel,
        data: EventData,
        *,
        symbol: str | None = None,
        to: str | None = None,
    ) -> None:
        """Stamp ``data`` with the publish time and queue it; blocks while the bus is full.

        Not a checkpoint while the bus has room (see the module docstring).

        Raises ``TypeError`` when ``data`` is not the channel's payload or a price has
        no symbol: a bug in the producer, caught where it happens.
        """
        expected = CHANNEL_EVENTS[channel][1]
        if type(data) is not expected:
            raise TypeError(f"{channel} carries {expected.__name__}, not {type(data).__name__}")
        if (symbol is None) is (channel is Channel.PRICES):
            raise TypeError("a symbol is required on prices and only there")
        event = Event(channel, data, utc_now(), symbol, to)
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            await self._send.send(event)

    async def run(
        self, hub: Hub, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver every queued event to ``hub`` until cancelled."""
        task_status.started()
        receive = self._receive
        async for event in receive:
            hub.publish(event)
            while True:
                try:
                    event = receive.receive_nowait()
                except trio.WouldBlock:
                    break
                hub.publish(event)
