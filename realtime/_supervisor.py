"""Feed supervision: a feed that fails is logged, announced and restarted with backoff."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from feeds import Publisher
from protocol import Channel, NotificationData, NotificationType

logger = logging.getLogger("realtime.feeds")

INITIAL_BACKOFF: Final = 1.0
MAX_BACKOFF: Final = 30.0
#: A feed that ran this long before failing starts again from the initial backoff.
HEALTHY_RUN: Final = 60.0


async def supervise(
    name: str,
    run: Callable[[Publisher], Awaitable[object]],
    publisher: Publisher,
    *,
    initial_backoff: float = INITIAL_BACKOFF,
    max_backoff: float = MAX_BACKOFF,
    announce_start: bool = False,
) -> None:
    """Run ``run(publisher)`` until cancelled, restarting it whenever it raises or returns.

    With ``announce_start``, the first start is published as an ``info``
    notification. Each failure is logged with its traceback and published as an
    ``error`` notification; each restart as a ``success`` one. The delay doubles from
    ``initial_backoff`` up to ``max_backoff`` and resets after a healthy run.
    Notifications go through ``publisher`` and so wait while the bus is full.
    """
    backoff = initial_backoff
    if announce_start:
        logger.info("Feed %s started", name)
        await _notify(publisher, f"Feed {name} started", NotificationType.INFO)
    while True:
        started = trio.current_time()
        try:
            await run(publisher)
        except Exception as exc:
            failure: Exception | None = exc
        else:
            failure = None
        if trio.current_time() - started >= HEALTHY_RUN:
            backoff = initial_backoff
        if failure is not None:
            logger.error("Feed %s failed; restarting in %.1fs", name, backoff, exc_info=failure)
            problem = f"{type(failure).__name__}: {failure}"
        else:
            logger.warning("Feed %s stopped; restarting in %.1fs", name, backoff)
            problem = "it stopped"
        await _notify(
            publisher,
            f"Feed {name} went down ({problem}); restarting in {backoff:g}s",
            NotificationType.ERROR,
        )
        await trio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)
        logger.info("Feed %s restarting", name)
        await _notify(publisher, f"Feed {name} is back up", NotificationType.SUCCESS)


async def _notify(publisher: Publisher, message: str, kind: NotificationType) -> None:
    data = NotificationData(id=uuid.uuid4().hex, message=message, type=kind)
    await publisher.publish(Channel.NOTIFICATIONS, data)
