"""Subscribers that resume: the Python client (``realtime.client``) on the signals
channel, recording what it receives, for tests that kill or move what they connect to."""

from __future__ import annotations

import random
import ssl

import attrs
import trio

from protocol import Channel, TradingSignal
from realtime.client import Backoff, Disconnected, HistoryGap, Reconnected, open_client

#: Reconnect within a fraction of a second, many times: the tests kill nodes on purpose.
FAST = Backoff(initial=0.2, max_delay=1.0, max_attempts=50)


@attrs.define
class Subscriber:
    """What one client saw: the seqs of its trading signals, in the order received, and
    its own events."""

    client_id: str
    seqs: list[int] = attrs.Factory(list)
    disconnects: list[int] = attrs.Factory(list)
    reconnects: int = 0
    gaps: list[HistoryGap] = attrs.Factory(list)

    def check_exactly_once(self) -> None:
        """Every signal from its first to its last, once each, in order."""
        assert not self.gaps, (self.client_id, self.gaps)
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
        cancelled; started once subscribed."""
        async with open_client(
            url,
            self.client_id,
            backoff=FAST,
            ssl_context=ssl_context,
            rng=random.Random(self.client_id),
        ) as client:
            await client.subscribe(Channel.SIGNALS)
            task_status.started()
            async for item in client:
                if isinstance(item, TradingSignal):
                    self.seqs.append(item.seq)
                elif isinstance(item, Disconnected):
                    self.disconnects.append(item.code)
                elif isinstance(item, Reconnected):
                    self.reconnects += 1
                elif isinstance(item, HistoryGap):
                    self.gaps.append(item)


async def until_past(subscribers: list[Subscriber], seq: int) -> None:
    """Return once every subscriber has received a signal numbered ``seq`` or later.
    The caller's ``fail_after`` bounds it."""
    while not all(each.seqs and each.seqs[-1] >= seq for each in subscribers):
        await trio.sleep(0.05)


def last_seq(subscribers: list[Subscriber]) -> int:
    """The highest seq any of them has received."""
    return max(each.seqs[-1] for each in subscribers if each.seqs)
