"""One client that never reads must not hurt the others or grow the server's memory."""

from __future__ import annotations

import trio
from wsproto.events import TextMessage

from protocol import Channel, NotificationData, NotificationType

from .helpers import TIMEOUT, age, connect, raw_client, start_gateway

READERS = 50
TICK_RATE = 20.0
OUTBOX_MESSAGES = 64


async def test_a_stuck_client_is_closed_and_the_others_keep_their_rate(
    nursery: trio.Nursery,
) -> None:
    server = await start_gateway(
        nursery, tick_rate=TICK_RATE, outbox_messages=OUTBOX_MESSAGES, write_timeout=2.0
    )
    received: list[list[float]] = [[] for _ in range(READERS)]
    measuring = trio.Event()
    done = trio.Event()

    async def reader(index: int, task_status: trio.TaskStatus[None]) -> None:
        async with connect(server, f"reader-{index}") as client:
            await client.request(
                {"type": "subscribe", "channel": "prices", "symbols": ["AAPL"]}, "subscribed"
            )
            task_status.started()
            while not done.is_set():
                message = await client.receive()
                if measuring.is_set() and message["type"] == "price_update":
                    received[index].append(age(message))

    with trio.fail_after(TIMEOUT * 3):
        async with trio.open_nursery() as readers:
            for index in range(READERS):
                await readers.start(reader, index)
            # A client that handshakes, subscribes to everything, then never reads.
            async with raw_client(server.port, "/ws/stuck", receive_buffer=4096) as stuck:
                for channel in ("prices", "notifications"):
                    frame = f'{{"type":"subscribe","channel":"{channel}"}}'
                    await stuck.send(TextMessage(data=frame))
                while server.hub.statistics().channel_subscriptions["notifications"] < 1:
                    await trio.sleep(0.01)
                measuring.set()
                started = trio.current_time()
                max_depth = 0
                # 8 KB notifications until the stuck client's socket buffers and then its
                # outbox are full: it is closed as a slow consumer.
                payload = "x" * 8192
                for number in range(2000):
                    await server.bus.publish(
                        Channel.NOTIFICATIONS,
                        NotificationData(
                            id=str(number), message=payload, type=NotificationType.INFO
                        ),
                    )
                    max_depth = max(max_depth, server.hub.statistics().outbox_max_depth)
                    if server.hub.slow_consumer_closes:
                        break
                    if number % 50 == 0:
                        await trio.sleep(0.01)
                assert server.hub.slow_consumer_closes == 1
                # The stuck writer gives up at its write deadline; the connection is gone.
                while "stuck" in server.hub.statistics().clients:
                    await trio.sleep(0.05)
                assert trio.current_time() - started < 2.0 + 5.0
                await trio.sleep(1.0)
                elapsed = trio.current_time() - started
                done.set()
                measuring = trio.Event()
        del stuck

    # Memory: the outbox never held more than its bound (plus one conflated price per symbol).
    assert max_depth <= OUTBOX_MESSAGES + 16
    expected = TICK_RATE * elapsed
    for ages in received:
        assert len(ages) >= 0.8 * expected, (len(ages), expected)
        ages.sort()
        assert ages[int(len(ages) * 0.99)] < 0.5  # nobody waited behind the stuck client
    assert server.hub.statistics().total_connections == 0
