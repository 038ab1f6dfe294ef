"""The real-time gateway server: sessions on Trio + wsproto, the hub, the HTTP side.

The server's names are loaded on first use (PEP 562), not when the package is
imported: ``realtime.client`` lives inside this package and must not pull in the
server (hypercorn, prometheus_client, the feeds) with it. A test checks this.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._config import Config
    from ._hub import Event, Hub, HubStatistics
    from ._server import Server, StartupError, __version__, serve
    from ._universe import PriceUniverse

__all__ = [
    "Config",
    "Event",
    "Hub",
    "HubStatistics",
    "PriceUniverse",
    "Server",
    "StartupError",
    "__version__",
    "serve",
]

#: Where each public name lives, by private module.
_HOMES: Final = {
    "Config": "._config",
    "Event": "._hub",
    "Hub": "._hub",
    "HubStatistics": "._hub",
    "PriceUniverse": "._universe",
    "Server": "._server",
    "StartupError": "._server",
    "__version__": "._server",
    "serve": "._server",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # later lookups no longer come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
