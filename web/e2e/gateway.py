"""Start the real gateway (``realtime serve ARGS``) for the browser end-to-end tests.

Until ``realtime/_app.py`` serves the built dashboard itself (see docs/browser.md,
"Wiring"), this wraps the gateway's ASGI app so that ``GET /`` and its assets come
from ``realtime._static.StaticFiles``: the same helper, mounted the same way the
lead's wiring will mount it. Once ``_app`` imports ``StaticFiles`` this script
changes nothing and is exactly ``realtime serve``.
"""

from __future__ import annotations

import sys
from typing import Any

import realtime._app
import realtime._server
from realtime._app import GatewayApp
from realtime._cli import main
from realtime._static import StaticFiles


def _wire_static() -> None:
    class GatewayWithDashboard(GatewayApp):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._routes.pop("/", None)
            self._static = StaticFiles()

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            path = scope.get("path", "")
            if (
                scope["type"] == "http"
                and scope["method"] in ("GET", "HEAD")
                and path not in self._routes
                and not path.startswith(("/ws/", "/api/"))
            ):
                await self._static(scope, receive, send)
                return
            await super().__call__(scope, receive, send)

    # The server module builds its app from this name; replace it for this process only.
    server_module: Any = realtime._server
    server_module.GatewayApp = GatewayWithDashboard


if __name__ == "__main__":
    if not hasattr(realtime._app, "StaticFiles"):
        _wire_static()
    main(["serve", *sys.argv[1:]])
