"""The ``realtime`` command: ``serve`` the gateway, ``feed`` a cluster, ``schema``,
``listen`` (the viewer)."""

from __future__ import annotations

import argparse
import gc
import logging
import logging.handlers
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import attrs
import orjson
import trio

from protocol import SYMBOL_PATTERN, Channel, json_schema

from ._auth import ADMIN_ROLE, MAX_SUB_LENGTH, mint_token
from ._config import CONFIG_VARIABLE, ENV_PREFIX, Config, _flag, parse_setting, setting_type
from ._feed import FEED_SETTINGS, run_feed
from ._logs import formatter
from ._open_files import raise_open_files_limit
from ._redis_bus import BusUnavailable
from ._server import Server, StartupError, __version__, serve, url_host
from ._static import StaticFiles
from ._workers import WORKER_OPTION, WorkerLink, run_workers, worker_log_file
from .client._viewer_options import add_listen_arguments, listen_options

logger = logging.getLogger("realtime")


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "schema":
        sys.stdout.write(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if args.command == "token":
        sys.stdout.write(_mint(args, parser) + "\n")
        return
    if args.command == "listen":
        # Imported only here: the viewer is what needs rich, and `serve` never does.
        from .client._viewer import run as run_listen

        try:
            options = listen_options(args)
        except ValueError as exc:
            _fail(f"realtime listen: error: {exc}", 2)
        sys.exit(run_listen(options))
    # Every way the start can fail for a setting ends in one line that names it, and
    # exit status 2 (a value refused) or 1 (refused at start): no usage text, no
    # traceback. Anything else is a bug, and keeps its traceback.
    command = f"realtime {args.command}"
    try:
        overrides: dict[str, Any] = {
            # A bool switch given alone (--insecure-no-auth) is already True.
            field.name: raw if isinstance(raw, bool) else parse_setting(field.name, raw)
            for field in attrs.fields(Config)
            if (raw := getattr(args, field.name, None)) is not None
        }
        config_file = Path(args.config) if args.config is not None else None
        config = Config.from_env(config_file=config_file, **overrides)
    except ValueError as exc:
        _fail(f"{command}: error: {exc}", 2)
    if args.command == "feed" and config.bus is None:
        _fail(f"{command}: error: feed publishes into Redis: give --bus redis://HOST:PORT/DB", 2)
    worker = _worker_link(args)
    try:
        _configure_logging(config, worker=None if worker is None else worker.index)
    except OSError as exc:
        _fail(
            f"{command}: error: {_flag('log_file')}: cannot open {config.log_file}: "
            f"{exc.strerror or exc}",
            1,
        )
    _tune_gc()
    before, after = raise_open_files_limit()
    if after != before:
        logger.info("Open files limit raised from %d to %d", before, after)
    try:
        if args.command == "feed":
            trio.run(_feed_until_signalled, config)
        elif config.workers > 1 and worker is None:
            sys.exit(trio.run(run_workers, config))
        else:
            trio.run(_serve_until_signalled, config, worker)
    except (StartupError, BusUnavailable, BaseExceptionGroup) as exc:
        error = startup_error(exc)
        if error is None:
            raise
        message = str(error) if isinstance(error, StartupError) else f"{_flag('bus')}: {error}"
        logger.error("Cannot start: %s", _one_line(message))
        sys.exit(1)


def startup_error(exc: BaseException) -> StartupError | BusUnavailable | None:
    """The :exc:`StartupError` or :exc:`BusUnavailable` that ``exc`` is, or is all that
    it holds: Trio delivers what a nursery raised inside an ``ExceptionGroup``, nested
    once per nursery. ``None`` when the group holds anything else (a bug, which must
    keep its traceback)."""
    expected = (StartupError, BusUnavailable)
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(expected)
        if matched is None or rest is not None:
            return None
        exc = matched
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
    return exc if isinstance(exc, expected) else None


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _fail(message: str, status: int) -> NoReturn:
    sys.stderr.write(_one_line(message) + "\n")
    sys.exit(status)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="realtime", description="Real-time WebSocket gateway for a stock-trading agent system."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve",
        help="run the gateway with its simulated feeds",
        description=f"Every option can also be set as {ENV_PREFIX}<OPTION> in the environment "
        "(e.g. REALTIME_PORT=9000) or in a TOML file (--config); flags win over the "
        "environment, which wins over the file. docs/configuration.md lists them all.",
        # Not the generated one, 50 options long: it is printed above every syntax error.
        usage="%(prog)s [-h] [--config FILE] [--OPTION VALUE ...]",
    )
    _add_config_argument(serve_parser)
    for field in attrs.fields(Config):
        kind = setting_type(field.name)
        default = field.default
        flag = f"--{field.name.replace('_', '-')}"
        # A switch alone means true (--insecure-no-auth), and takes a value too.
        switch: dict[str, Any] = {"nargs": "?", "const": True} if kind is bool else {}
        # Values are parsed in main(), so that a bad one gets the same one-line error
        # as a bad REALTIME_* variable, not argparse's usage text.
        serve_parser.add_argument(
            flag,
            metavar="true|false" if kind is bool else field.name.upper(),
            help=f"{field.metadata['help']} (default: {default})",
            **switch,
        )
    # What makes a process one of --workers; its supervisor gives it (realtime/_workers.py).
    serve_parser.add_argument(WORKER_OPTION, help=argparse.SUPPRESS)
    commands.add_parser("schema", help="print the JSON Schema of protocol v1")
    _add_token_parser(commands)
    add_listen_arguments(
        commands.add_parser("listen", help="watch a channel live in the terminal (or as NDJSON)")
    )
    _add_feed_parser(commands)
    return parser


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"a TOML file of settings, named as the flags without the dashes in front "
        f"(port = 9000, max-connections = 1000); the flags and {ENV_PREFIX}* variables "
        f"win over it (default: {CONFIG_VARIABLE}, else none)",
    )


def _add_token_parser(commands: Any) -> None:
    token = commands.add_parser(
        "token",
        help="print a development token signed with the gateway's --jwt-secret",
        description="Mint an HS256 token for curl, tests and the docs, signed with the secret "
        f"the gateway verifies with ({ENV_PREFIX}JWT_SECRET, or --jwt-secret), with the "
        f"gateway's {ENV_PREFIX}JWT_AUDIENCE and {ENV_PREFIX}JWT_ISSUER as aud and iss. "
        "Production tokens come from your identity provider.",
    )
    token.add_argument("--sub", required=True, help="the user the token names (its sub)")
    token.add_argument(
        "--channels",
        type=_channels,
        metavar="CHANNELS",
        help=f"comma-separated channels it grants, of {', '.join(Channel)} (default: every one)",
    )
    token.add_argument(
        "--symbols",
        type=_symbols,
        metavar="SYMBOLS",
        help="comma-separated price symbols it grants (default: every one)",
    )
    token.add_argument(
        "--ttl",
        type=_ttl,
        default=_ttl("1h"),
        metavar="TTL",
        help="how long it is valid: 90s, 30m, 1h, 7d or seconds (default: 1h)",
    )
    token.add_argument(
        "--jwt-secret",
        metavar="SECRET",
        help=f"the gateway's secret (default: {ENV_PREFIX}JWT_SECRET; prefer it: flags show "
        "in the process list)",
    )
    token.add_argument(
        "--admin",
        action="store_true",
        help=f'add roles ["{ADMIN_ROLE}"]: an administrator\'s token, which the HTTP side '
        "(/ws/stats, /metrics, /api/*) takes as it takes the API key",
    )
    token.add_argument("--jwt-audience", metavar="AUD", help="aud to put in the token")
    token.add_argument("--jwt-issuer", metavar="ISS", help="iss to put in the token")


_TTL = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: Longest --ttl: a development token valid for longer is a credential to forget about.
MAX_TTL = 366 * 86400


def _ttl(raw: str) -> float:
    match = _TTL.fullmatch(raw.strip())
    seconds = float(match[1]) * _TTL_UNITS[match[2]] if match else 0.0
    if not 0 < seconds <= MAX_TTL:
        raise argparse.ArgumentTypeError(
            f"--ttl must be a duration such as 90s, 30m, 1h or 7d, up to 366d, got {raw!r}"
        )
    return seconds


def _channels(raw: str) -> list[Channel]:
    names = [name.strip() for name in raw.split(",") if name.strip()]
    for name in names:
        if name not in {channel.value for channel in Channel}:
            raise argparse.ArgumentTypeError(
                f"--channels: unknown channel {name!r}; channels are {', '.join(Channel)}"
            )
    return [Channel(name) for name in names]


def _symbols(raw: str) -> list[str]:
    names = [name.strip() for name in raw.split(",") if name.strip()]
    for name in names:
        if not re.fullmatch(SYMBOL_PATTERN, name):
            raise argparse.ArgumentTypeError(
                f"--symbols: {name!r} is not a ticker (1-10 of A-Z 0-9 . -, a letter first)"
            )
    return names


def _mint(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """The token ``realtime token`` prints; exits with a one-line error when the
    gateway's configuration has no secret to sign it with."""
    if not 1 <= len(args.sub) <= MAX_SUB_LENGTH:
        parser.error(f"token: --sub must be 1-{MAX_SUB_LENGTH} characters")
    secret = args.jwt_secret or os.environ.get(f"{ENV_PREFIX}JWT_SECRET")
    if secret is None:
        verifies = [
            flag
            for flag in ("JWT_PUBLIC_KEY", "JWKS")
            if os.environ.get(f"{ENV_PREFIX}{flag}") is not None
        ]
        parser.error(
            "token: signs with the gateway's shared secret: set "
            f"{ENV_PREFIX}JWT_SECRET or give --jwt-secret"
            + (
                f" (this gateway verifies with {ENV_PREFIX}{verifies[0]}: tokens for it come "
                "from the issuer holding the private key)"
                if verifies
                else ""
            )
        )
    overrides = {
        "jwt_secret": secret,
        "jwt_audience": args.jwt_audience,
        "jwt_issuer": args.jwt_issuer,
    }
    try:
        config = Config.from_env(**overrides)
    except (ValueError, TypeError) as exc:
        parser.error(f"token: {exc}")
    assert config.jwt_secret is not None
    return mint_token(
        config.jwt_secret,
        sub=args.sub,
        now=time.time(),
        ttl=args.ttl,
        channels=args.channels,
        symbols=args.symbols,
        roles=[ADMIN_ROLE] if args.admin else None,
        audience=config.jwt_audience,
        issuer=config.jwt_issuer,
    )


def _add_feed_parser(commands: Any) -> None:
    feed_parser = commands.add_parser(
        "feed",
        help="run the producers once for a cluster, publishing into Redis (--bus)",
        description="The simulated (or replayed) prices, alerts, signals, portfolio and "
        "notifications, published into the Redis that the nodes (realtime serve --bus) "
        f"follow. Every option can also be set as {ENV_PREFIX}<OPTION> or in a TOML file "
        "(--config); flags win, then the environment.",
        usage="%(prog)s [-h] [--config FILE] [--OPTION VALUE ...]",
    )
    _add_config_argument(feed_parser)
    fields = attrs.fields_dict(Config)
    for name in FEED_SETTINGS:
        field = fields[name]
        kind = setting_type(name)
        default = field.default
        flag = f"--{name.replace('_', '-')}"
        feed_parser.add_argument(  # parsed in main(), as serve's
            flag,
            metavar="true|false" if kind is bool else field.name.upper(),
            help=f"{field.metadata['help']} (default: {default})",
        )


def _worker_link(args: argparse.Namespace) -> WorkerLink | None:
    raw = getattr(args, WORKER_OPTION.lstrip("-").replace("-", "_"), None)
    if raw is None:
        return None
    try:
        return WorkerLink.parse(raw)
    except ValueError as exc:
        _fail(f"realtime serve: error: {exc}", 2)


def _tune_gc() -> None:
    """Keep the cyclic garbage collector's pauses out of the delivery latency.

    With the default thresholds (700, 10, 10) a busy gateway runs a collection every
    few hundred allocations and regularly walks every long-lived object: with 1,000
    connections those pauses put S2's p99 at 72 ms (bench/results/2026-11-26). Freezing
    what start-up allocated (modules, the app) takes it out of every walk, and larger
    thresholds make collections rarer: p99 10 ms in the same scenario. Young cycles are
    still collected every 50,000 allocations and old ones every 10**8, so garbage
    stays bounded (S6 churn checks RSS). A process-wide policy: the ``serve`` command
    sets it, the library's ``serve()`` leaves an embedding program's GC alone.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _configure_logging(config: Config, *, worker: int | None = None) -> None:
    """stderr, and ``--log-file`` (its folder created) rotated at ``--log-max-bytes``
    with ``--log-backups`` old files kept: at most (backups + 1) x max bytes on disk.
    Worker ``worker`` of ``--workers`` marks its lines and has a file of its own."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if worker is not None:
        config = worker_log_file(config, worker)
    if config.log_file is not None:
        config.log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                config.log_file,
                maxBytes=config.log_max_bytes,
                backupCount=config.log_backups,
                encoding="utf-8",
            )
        )
    for handler in handlers:
        handler.setFormatter(formatter(config.log_format, worker=worker))
    logging.basicConfig(level=config.log_level.upper(), handlers=handlers, force=True)
    # hypercorn logs every keep-alive close at INFO; only its problems matter here.
    logging.getLogger("realtime.http").setLevel(max(logging.WARNING, logging.root.level))


async def _serve_until_signalled(config: Config, worker: WorkerLink | None = None) -> None:
    """Serve; the first SIGTERM/SIGINT drains, a second one stops at once. A
    ``worker`` of ``--workers`` reports to its supervisor when it listens, and
    drains if the supervisor goes away."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def run(task_status: trio.TaskStatus[Server]) -> None:
                await serve(config, task_status=task_status)
                nursery.cancel_scope.cancel()  # drained: stop watching for signals

            server: Server = await nursery.start(run)
            dashboard = StaticFiles()
            if dashboard.built:
                logger.info("Gateway %s ready: dashboard at %s", __version__, server.url)
            else:
                logger.warning(
                    "Gateway %s ready at %s, without its dashboard: %s",
                    __version__,
                    server.url,
                    dashboard.missing,
                )
            scheme = "wss" if config.certfile else "ws"
            logger.info(
                "WebSocket endpoint: %s://%s:%d/ws/{client_id}",
                scheme,
                url_host(config.host),
                server.port,
            )
            nursery.start_soon(_watch_signals, signals, server, nursery.cancel_scope)
            if worker is not None:
                nursery.start_soon(worker.serve, server)


async def _feed_until_signalled(config: Config) -> None:
    """Feed until the first SIGTERM/SIGINT."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_feed, config)
            async for signum in signals:
                logger.info("Received %s: stopping the feeds", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


async def _watch_signals(signals: Any, server: Server, scope: trio.CancelScope) -> None:
    received = 0
    async for signum in signals:
        received += 1
        if received == 1:
            logger.info("Received %s: draining", signal.Signals(signum).name)
            server.shutdown()
        else:
            logger.warning("Received %s again: stopping now", signal.Signals(signum).name)
            scope.cancel()
