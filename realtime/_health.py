"""Liveness and readiness: what ``GET /livez`` and ``GET /readyz`` answer.

``/livez`` says that the process answers HTTP: nothing is checked beyond that, so
an orchestrator restarts the gateway only when it is wedged, never because Redis or
a feed is down (a restart would not bring them back, and would cut every client).

``/readyz`` says whether the gateway should get new clients, from three checks:

* ``draining``: no drain has begun (SIGTERM, :meth:`Server.shutdown`);
* ``bus``: the bus is connected. The in-process bus always is; a node's Redis bus
  is while it follows Redis (subscribed and caught up), not while it reconnects;
* ``feeds``: no feed of this process is down, i.e. between a failure and its
  restart (see :func:`supervise`). A node of a cluster runs no feeds.

Each check is a few attribute reads: a probe costs no more than ``/health``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs

from feeds import Publisher


class _Bus(Protocol):
    @property
    def connected(self) -> bool: ...


class _Draining(Protocol):
    draining: bool


@attrs.frozen
class Check:
    """One readiness check: its name, whether it passed, and if not, why."""

    name: str
    ok: bool
    detail: str = ""


class FeedHealth:
    """Which of the supervised feeds are down now, and why.

    :meth:`track` wraps a feed's ``run``: the feed counts as up while a run is in
    progress, and down from the moment a run raises or returns until the next run
    begins (the supervisor's backoff). Cancellation leaves the state as it was.
    """

    def __init__(self) -> None:
        self._down: dict[str, str] = {}

    @property
    def down(self) -> dict[str, str]:
        """The feeds that are down, each with the reason (a copy)."""
        return dict(self._down)

    def track(
        self, name: str, run: Callable[[Publisher], Awaitable[object]]
    ) -> Callable[[Publisher], Awaitable[None]]:
        """``run``, recording feed ``name`` as up while it runs and down after."""

        async def tracked(publisher: Publisher) -> None:
            self._down.pop(name, None)
            try:
                await run(publisher)
            except Exception as exc:
                self._down[name] = f"failed: {type(exc).__name__}: {exc}"[:200]
                raise
            self._down[name] = "stopped"

        return tracked


class Readiness:
    """The checks of ``/readyz`` over a gateway's sessions, bus and feeds."""

    def __init__(self, sessions: _Draining, bus: _Bus, feeds: FeedHealth) -> None:
        self.sessions = sessions
        self.bus = bus
        self.feeds = feeds

    def checks(self) -> list[Check]:
        """Every check, in a fixed order (``draining``, ``bus``, ``feeds``)."""
        down = self.feeds.down
        return [
            Check("draining", not self.sessions.draining, "the gateway is shutting down"),
            Check("bus", self.bus.connected, "not connected to Redis; reconnecting"),
            Check(
                "feeds",
                not down,
                "; ".join(f"{name} {why}" for name, why in sorted(down.items())),
            ),
        ]
