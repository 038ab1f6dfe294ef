"""``realtime feed --bus redis://...``: the producers, once for a whole cluster.

The same feeds as a single gateway runs (``_server.build_feeds``: the simulated or
replayed prices through the price tap, alerts, signals, portfolio and the demo's
notifications), each supervised, publishing through a
:class:`RedisPublisher` instead of the in-process bus. The nodes (``realtime serve
--bus``) run none and deliver what this process publishes.
"""

from __future__ import annotations

import logging
from typing import Final

import attrs
import trio

from ._config import Config
from ._redis_bus import (
    SYMBOLS_KEY,
    BusUnavailable,
    RedisPublisher,
    events_channel,
    failure,
    load_scripts,
    open_redis,
    redacted,
)
from ._server import Feeds, build_feeds, start_feeds

logger = logging.getLogger("realtime.feed")

#: The settings ``realtime feed`` takes: the bus, what the feeds are, how long Redis
#: keeps history, and the log.
FEED_SETTINGS: Final = (
    "bus",
    "feed",
    "replay_speed",
    "symbols",
    "tick_rate",
    "updates_per_tick",
    "seed",
    "derived_feeds",
    "demo_events",
    "alerts",
    "portfolio",
    "signal_interval",
    "portfolio_interval",
    "history_messages",
    "history_seconds",
    "log_file",
    "log_max_bytes",
    "log_backups",
    "log_level",
    "log_format",
)


@attrs.frozen
class FeedProcess:
    """Handle on a running ``realtime feed``: its feeds and its publisher."""

    feeds: Feeds
    publisher: RedisPublisher


async def run_feed(
    config: Config, *, task_status: trio.TaskStatus[FeedProcess] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the feeds into the Redis of ``config.bus`` until cancelled.

    Raises ``ValueError`` without a bus or for a bad replay, alerts or portfolio file
    (see ``build_feeds``), and :exc:`BusUnavailable` when Redis cannot be reached at
    start. Once started, a feed that fails because Redis is away is restarted with
    backoff by its supervisor.
    """
    if config.bus is None:
        raise ValueError("realtime feed publishes into Redis: give --bus redis://HOST:PORT/DB")
    async with open_redis(config.bus) as client:
        try:
            await load_scripts(client)
        except Exception as exc:
            raise BusUnavailable(
                f"Cannot use Redis at {redacted(config.bus)}: {failure(exc)}"
            ) from None
        publisher = RedisPublisher(
            client,
            events=events_channel(config.bus),
            history_messages=config.history_messages,
            history_seconds=config.history_seconds,
        )
        feeds = build_feeds(config, publisher)
        # Nodes compare it with theirs: a node started with other --symbols or --feed
        # would refuse the symbols this feed publishes.
        await client.set(SYMBOLS_KEY, " ".join(feeds.symbols))
        logger.info(
            "Feeding Redis at %s: %d symbols, %s",
            redacted(config.bus),
            len(feeds.symbols),
            "replay" if config.replay_file else "simulated market",
        )
        async with trio.open_nursery() as nursery:
            start_feeds(nursery, config, feeds, publisher)
            task_status.started(FeedProcess(feeds, publisher))
