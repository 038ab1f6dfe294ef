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
    parser.add_argument("--url", default=DEFAULT_URL, help=f"gateway (default: {DEFAULT_URL})")
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
    """The options of ``args``, with the token from ``environ`` (default: the process's)."""
    environ = os.environ if environ is None else environ
    symbols = None
    if args.symbols:
        symbols = tuple(s.strip() for s in args.symbols.split(",") if s.strip())
    extra = {"client_id": args.client_id} if args.client_id else {}
    return ListenOptions(
        url=args.url,
        channel=args.channel,
        symbols=symbols or None,
        json=args.json,
        count=args.count,
        token=environ.get(TOKEN_VARIABLE) or None,
        token_command=tuple(shlex.split(args.token_command)) if args.token_command else None,
        **extra,
    )
