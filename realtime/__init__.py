"""The real-time gateway server: sessions on Trio + wsproto, the hub, the HTTP side."""

from __future__ import annotations

from ._config import Config
from ._hub import Event, Hub, HubStatistics
from ._server import Server, __version__, serve

__all__ = ["Config", "Event", "Hub", "HubStatistics", "Server", "__version__", "serve"]
