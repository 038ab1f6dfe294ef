"""What ``realtime listen`` is asked to show: its options and their command-line flags.

Apart from the viewer itself (``_viewer``) so that defining the ``realtime`` command's
flags loads no rich: the viewer is imported only when ``listen`` runs.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
from collections.abc import Mapping
from typing import Final

import attrs

from protocol import Channel

DEFAULT_URL: Final = "ws://127.0.0.1:8000"
#: Where ``listen`` finds a fixed token: a variable, since flags show in the process list.
TOKEN_VARIABLE: Final = "REALTIME_TOKEN"
#: The gateway's address without ``--url``: the URL, else the port the gateway reads
#: too (``realtime serve`` takes ``REALTIME_PORT``), on this machine.
URL_VARIABLE: Final = "REALTIME_URL"
PORT_VARIABLE: Final = "REALTIME_PORT"


@attrs.frozen(kw_only=True)
class ListenOptions:
    url: str = DEFAULT_URL
    channel: Channel = Channel.PRICES
    #: Prices only; None: every symbol.
    symbols: tuple[str, ...] | None = None
    json: bool = False
    client_id: str = attrs.field(factory=lambda: f"listen-{secrets.token_hex(4)}")
    #: Stop after this many messages (None: until interrupted).
    count: int | None = None
    #: A fixed token (``REALTIME_TOKEN``), sent with the first connection.
    token: str | None = attrs.field(default=None, repr=False)
    #: A command printing a token, run for each later connection and refresh.
    token_command: tuple[str, ...] | None = None


def add_listen_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``realtime listen``."""
    parser.add_argument(
        "--url",
        help=f"gateway (default: {URL_VARIABLE}, else ws://127.0.0.1:${PORT_VARIABLE}, "
        f"else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--channel",
        type=Channel,
        choices=list(Channel),
        default=Channel.PRICES,
        help="channel to watch (default: prices)",
    )
    parser.add_argument(
        "--symbols", help="comma-separated prices symbols, e.g. AAPL,MSFT (default: every symbol)"
    )
    parser.add_argument("--json", action="store_true", help="print raw NDJSON for piping")
    parser.add_argument("--client-id", help="client id (default: listen-<random>)")
    parser.add_argument(
        "--count", type=int, help="stop after this many messages (default: run until Ctrl-C)"
    )
    parser.add_argument(
        "--token-command",
        metavar="CMD",
        help="a command that prints a token (JWT), run before each connection and ahead of "
        "each token's exp, e.g. 'realtime token --sub alice --ttl 10m'; a fixed token "
        f"goes in {TOKEN_VARIABLE} instead",
    )


def listen_options(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> ListenOptions:
    """The options of ``args``, with the token, and without ``--url`` the gateway's
    address, from ``environ`` (default: the process's). Raises ``ValueError`` for a
    ``REALTIME_PORT`` that is not a port."""
    environ = os.environ if environ is None else environ
    symbols = None
    if args.symbols:
        symbols = tuple(s.strip() for s in args.symbols.split(",") if s.strip())
    extra = {"client_id": args.client_id} if args.client_id else {}
    return ListenOptions(
        url=gateway_url(args.url, environ),
        channel=args.channel,
        symbols=symbols or None,
        json=args.json,
        count=args.count,
        token=environ.get(TOKEN_VARIABLE) or None,
        token_command=tuple(shlex.split(args.token_command)) if args.token_command else None,
        **extra,
    )


def gateway_url(url: str | None, environ: Mapping[str, str]) -> str:
    """``url``, else ``REALTIME_URL``, else ``ws://127.0.0.1:$REALTIME_PORT``, else the
    default; an ``http(s)://`` URL (the publish API's) is read as ``ws(s)://``."""
    url = url or environ.get(URL_VARIABLE) or None
    if url is None:
        port = environ.get(PORT_VARIABLE, "").strip()
        if not port:
            return DEFAULT_URL
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{PORT_VARIABLE} must be a port, 1-65535, got {port!r}")
        return f"ws://127.0.0.1:{int(port)}"
    scheme, separator, rest = url.partition("://")
    return {"http": "ws", "https": "wss"}.get(scheme, scheme) + separator + rest
