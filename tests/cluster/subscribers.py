"""Subscribers that resume, for tests that kill or move what they connect to.

Raw trio-websocket clients that resume the signals channel with ``since`` and
``epoch`` after every loss, and record every signal as it arrives. Not the Python
client: it drops what it has already seen, and so would hide a duplicate sent by
the server, which is what these tests look for.
"""

from __future__ import annotations

import json
import random
import ssl
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from tests.realtime.helpers import close_of, open_ws

#: The longest pause before a reconnect (uniformly random below it).
RECONNECT_JITTER = 0.2


@attrs.define
class Subscriber:
    """What one client saw: the seq of every trading signal in the order received, the
    close code of every connection lost, and the error replies to its resumes."""

    client_id: str
    seqs: list[int] = attrs.Factory(list)
    closes: list[int] = attrs.Factory(list)
    reconnects: int = 0
    errors: list[dict[str, Any]] = attrs.Factory(list)

    def check_exactly_once(self) -> None:
        """Every signal from its first to its last, once each, in order; every resume
        answered with a replay, never with ``history_unavailable``."""
        assert not self.errors, (self.client_id, self.errors)
        assert self.seqs == list(range(self.seqs[0], self.seqs[-1] + 1)), (
            self.client_id,
            self.seqs,
        )

    async def run(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Subscribe to signals at ``url`` (``ws[s]://host:port``) and record until
        cancelled, reconnecting and resuming after every loss; started once first
        subscribed. A refused or failed connect is retried too."""
        rng = random.Random(self.client_id)
        position: tuple[int, str] | None = None  # (seq, epoch) to resume from
        started = False
        while True:
            try:
                async with open_ws(f"{url}/ws/{self.client_id}", ssl_context=ssl_context) as ws:
                    welcome = json.loads(await ws.get_message())
                    request: dict[str, Any] = {"type": "subscribe", "channel": "signals"}
                    if position is not None:
                        request |= {"since": position[0], "epoch": position[1]}
                    await ws.send_message(json.dumps(request))
                    while (ack := json.loads(await ws.get_message()))["type"] not in (
                        "subscribed",
                        "error",
                    ):
                        pass  # nothing else is subscribed: only a notification
                    if ack["type"] == "error":
                        self.errors.append(ack)
                        return
                    position = (ack["seq"], welcome["epoch"])
                    if started:
                        self.reconnects += 1
                    else:
                        started = True
                        task_status.started()
                    while True:
                        message = json.loads(await ws.get_message())
                        if message["type"] == "trading_signal":
                            self.seqs.append(message["seq"])
                            position = (message["seq"], welcome["epoch"])
            except ConnectionClosed as closed:
                self.closes.append(close_of(closed)[0])
            except (HandshakeError, OSError, trio.BrokenResourceError):
                pass  # nothing listens there now, or a proxy answered 502: retry
            await trio.sleep(rng.uniform(0, RECONNECT_JITTER))


async def until_past(subscribers: list[Subscriber], seq: int) -> None:
    """Return once every subscriber has received a signal numbered ``seq`` or later.
    The caller's ``fail_after`` bounds it."""
    while not all(each.seqs and each.seqs[-1] >= seq for each in subscribers):
        await trio.sleep(0.05)


def last_seq(subscribers: list[Subscriber]) -> int:
    """The highest seq any of them has received."""
    return max(each.seqs[-1] for each in subscribers if each.seqs)
