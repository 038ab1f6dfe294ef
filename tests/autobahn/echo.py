"""An echo server on our own WebSocket layer, for the Autobahn cases.

``realtime.ws.serve`` (the gateway's listener: HTTP head, upgrade routing)
plus ``realtime.ws.accept_websocket`` (our wsproto connection), with a
handler that sends every message back. Run as a process::

    python -c "from tests.autobahn.echo import main; main()" PORT

It prints ``listening PORT`` once the port is bound.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Any, Final

import trio

from realtime.ws import ConnectionClosed, InboundLimits, RequestHead, accept_websocket, serve

#: Autobahn's 9.x cases send messages of up to 16 MiB, some in 64-byte fragments, and
#: its 2.x cases pings in bursts: it checks the protocol, not the gateway's limits.
LIMITS: Final = InboundLimits(
    max_message_size=32 * 1024 * 1024,
    max_fragments=1 << 20,
    control_rate=1e6,
    control_burst=1 << 20,
)


async def echo(stream: trio.abc.Stream, request: RequestHead) -> None:
    try:
        ws = await accept_websocket(stream, request, limits=LIMITS)
    except ConnectionClosed:
        return
    try:
        while True:
            message = await ws.receive_message()
            await ws.send_message(message)
    except ConnectionClosed:
        pass
    finally:
        await ws.aclose()


async def _no_http(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def run(port: int) -> None:
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(
                serve,
                "127.0.0.1",
                port,
                websocket_handler=echo,
                asgi_app=_no_http,
                websocket_prefix="/",  # Autobahn asks for /runCase?case=N&agent=...
            )
        )
        print(f"listening {listener.port}", flush=True)


def main() -> None:
    trio.run(run, int(sys.argv[1]) if len(sys.argv) > 1 else 0)
