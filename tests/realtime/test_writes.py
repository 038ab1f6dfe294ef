"""The write path: direct writes, the hand-over to a writer task when a socket is
full and back, and coalescing of bursts, against the real gateway."""

from __future__ import annotations

import json
import re

import pytest
import trio
from wsproto.events import TextMessage

from protocol import Channel, NotificationData, NotificationType

from .helpers import (
    TIMEOUT,
    drain_log,
    http_get,
    open_ws,
    raw_client,
    start_gateway,
    start_process,
)


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
            assert server.sessions.blocked_writes >= 1
            received = [await client.next_message() for _ in range(burst)]
            while server.sessions.writers:  # the writer has caught up and ended
                await trio.sleep(0.01)
            await publish(burst, after)
            received += [await client.next_message() for _ in range(after)]
    assert [m["data"]["id"] for m in received] == [str(n) for n in range(burst + after)]
    seqs = [m["seq"] for m in received]
    assert seqs == list(range(seqs[0], seqs[0] + burst + after))


@pytest.mark.parametrize(
    ("tick_rate", "coalesced"),
    [
        (5, False),  # 500 events/s: idle, every message goes out alone
        (400, True),  # 40,000 events/s: loaded, a client's burst shares writes
    ],
)
async def test_messages_share_writes_only_under_load(tick_rate: int, coalesced: bool) -> None:
    # A process of its own, so that its load is its feed's and not the test's.
    process, port, log = await start_process(
        "--symbols", "100", "--tick-rate", str(tick_rate), "--updates-per-tick", "100",
        "--derived-feeds", "false",
    )  # fmt: skip
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_log, process, log)
            with trio.fail_after(TIMEOUT):
                async with open_ws(f"ws://127.0.0.1:{port}/ws/reader") as ws:
                    welcome = json.loads(await ws.get_message())
                    request = {"type": "subscribe", "channel": "prices"}
                    request["symbols"] = welcome["symbols"][:10]
                    await ws.send_message(json.dumps(request))
                    before = await _sent_and_writes(port)
                    with trio.move_on_after(1.5):
                        while True:
                            await ws.get_message()
                    after = await _sent_and_writes(port)
            nursery.cancel_scope.cancel()
    finally:
        process.kill()
        await process.wait()
    sent, writes = after[0] - before[0], after[1] - before[1]
    assert sent >= 1.5 * tick_rate * 10 * 0.5, b"".join(log).decode()[-2000:]
    if coalesced:
        assert sent / writes >= 2, (sent, writes)
    else:
        assert sent == writes


async def _sent_and_writes(port: int) -> tuple[float, float]:
    status, body = await http_get(port, "/metrics")
    assert status == 200
    values = dict(re.findall(r"^(realtime_\w+_total) (\S+)$", body.decode(), re.MULTILINE))
    return float(values["realtime_messages_sent_total"]), float(
        values["realtime_socket_writes_total"]
    )
