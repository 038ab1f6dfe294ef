"""One client that never reads must not hurt the others or grow the server's memory.

How fast the others are served meanwhile is a speed figure, measured by the
benchmarks (S3, docs/benchmarks.md); here only what holds on any machine.
"""

from __future__ import annotations

import trio
import trio.testing
from wsproto.events import TextMessage

from protocol import Channel, NotificationData, NotificationType

from .helpers import TIMEOUT, connect, raw_client, start_gateway

READERS = 50
TICK_RATE = 20.0
OUTBOX_MESSAGES = 64
SYMBOL = "AAPL"


async def test_a_stuck_client_is_closed_and_the_others_keep_their_rate(
    nursery: trio.Nursery, socket_clock: trio.testing.MockClock
) -> None:
    server = await start_gateway(
        nursery, tick_rate=TICK_RATE, outbox_messages=OUTBOX_MESSAGES, write_timeout=2.0
    )
    # The seqs of the prices each reader got, and whether it got one published after
    # the stuck client was closed while that client's connection was still open.
    received: list[list[int]] = [[] for _ in range(READERS)]
    served_while_stuck = [False] * READERS
    closed_at: int | None = None
    done = trio.Event()

    def price_seq() -> int:
        last = server.hub.last_price(SYMBOL)
        assert last is not None
        return last.seq

    async def reader(index: int, task_status: trio.TaskStatus[None]) -> None:
        async with connect(server, f"reader-{index}") as client:
            await client.request(
                {"type": "subscribe", "channel": "prices", "symbols": [SYMBOL]}, "subscribed"
            )
            task_status.started()
            while not done.is_set():
                message = await client.receive()
                if message["type"] == "price_update":
                    received[index].append(message["seq"])
                    stuck_still_open = server.hub.connection_count > READERS
                    if closed_at is not None and message["seq"] > closed_at and stuck_still_open:
                        served_while_stuck[index] = True

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
                closed_at = price_seq()
                # Its write stays blocked until the write deadline, then the connection is
                # aborted and gone. Meanwhile (2 s on the virtual clock, which only moves
                # when all is idle: 40 ticks) the readers were served.
                while "stuck" in server.hub.statistics().clients:
                    await trio.sleep(0.01)
                # And they still are afterwards: each gets a price published from now on.
                gone_at = price_seq()
                while any(not seqs or seqs[-1] <= gone_at for seqs in received):
                    await trio.sleep(0.01)
                clients = server.hub.statistics().clients
                done.set()
        del stuck

    # Memory: the outbox never held more than its bound (plus one conflated price per symbol).
    assert max_depth <= OUTBOX_MESSAGES + 16
    # The stuck client was the one closed; every reader is still there.
    assert clients == tuple(sorted(f"reader-{index}" for index in range(READERS)))
    for seqs in received:
        assert seqs == sorted(set(seqs))  # in order, none twice (conflation may skip some)
    # Nobody waited behind the stuck client.
    assert all(served_while_stuck), served_while_stuck.count(False)
    assert server.hub.statistics().total_connections == 0
