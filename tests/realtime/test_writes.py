"""The write path against the real gateway: direct writes, and the hand-over to a
writer task when a socket is full and back. The delivery's policy on its own, under
Trio's MockClock, is in test_delivery."""

from __future__ import annotations

import trio
from wsproto.events import TextMessage

from protocol import Channel, NotificationData, NotificationType

from .helpers import TIMEOUT, raw_client, start_gateway


async def test_a_client_that_pauses_gets_every_message_in_order(nursery: trio.Nursery) -> None:
    # Writes go straight to the socket until it is full; then a writer task takes over
    # what is pending, and direct writes resume once it has caught up. Across both
    # hand-overs nothing may be lost, duplicated or reordered.
    server = await start_gateway(
        nursery, feeds=False, outbox_messages=5000, outbox_bytes=64 * 1024 * 1024
    )
    payload = "y" * 8192
    burst, after = 600, 20

    async def publish(first: int, count: int) -> None:
        for number in range(first, first + count):
            await server.bus.publish(
                Channel.NOTIFICATIONS,
                NotificationData(id=str(number), message=payload, type=NotificationType.INFO),
            )
            if number % 25 == 0:
                await trio.lowlevel.checkpoint()  # let a writer task run

    with trio.fail_after(TIMEOUT * 2):
        async with raw_client(server.port, "/ws/pausing", receive_buffer=4096) as client:
            await client.send(TextMessage(data='{"type":"subscribe","channel":"notifications"}'))
            while (await client.next_message())["type"] != "subscribed":
                pass
            await publish(0, burst)  # nobody reads meanwhile: the socket fills up
            assert server.delivery.blocked_writes >= 1
            received = [await client.next_message() for _ in range(burst)]
            while server.delivery.writers:  # the writer has caught up and ended
                await trio.sleep(0.01)
            await publish(burst, after)
            received += [await client.next_message() for _ in range(after)]
    assert [m["data"]["id"] for m in received] == [str(n) for n in range(burst + after)]
    seqs = [m["seq"] for m in received]
    assert seqs == list(range(seqs[0], seqs[0] + burst + after))
