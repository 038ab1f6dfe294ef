"""The server's configuration: one frozen object, from flags, ``REALTIME_*`` variables
and a TOML file (``--config``), in that order of precedence, over the defaults.

Every limit in DESIGN.md's table is a field here with its documented default, and is
validated when the object is built, so a bad value stops the server at start with a
message naming the setting, never later under load. The file's keys are the flags'
names without the dashes in front (``max-connections = 1000``); a key that is no
setting is refused, naming it.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from feeds import (
    MAX_TICK_RATE,
    MAX_UNIVERSE,
    MAX_UPDATES_PER_TICK,
    SAMPLE_REPLAY,
    load_universe,
    parse_universe,
)

from ._auth import TokenVerifier, check_secret
from ._tls import TLSFileError, server_context
from .ws import parse_networks

ENV_PREFIX: Final = "REALTIME_"
#: The variable naming the config file when ``--config`` does not.
CONFIG_VARIABLE: Final = ENV_PREFIX + "CONFIG"


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{_flag(attribute.name)} must be greater than 0, got {value}")


#: Longest ``--flush-delay``: a frame never waits longer than this to share a write.
MAX_FLUSH_DELAY: Final = 0.1


def _flush_delay(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 <= value <= MAX_FLUSH_DELAY:
        raise ValueError(
            f"{_flag(attribute.name)} must be between 0 and {MAX_FLUSH_DELAY}, got {value}"
        )


def _port(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"{_flag(attribute.name)} must be between 0 and 65535, got {value}")


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')} ({ENV_PREFIX}{name.upper()})"


def _setting(default: Any, help: str, *, validator: Any = _positive, **kwargs: Any) -> Any:
    return attrs.field(default=default, validator=validator, metadata={"help": help}, **kwargs)


def _no_check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Settings whose every value of the right type is valid."""


#: ``--feed`` values: the simulated market, or ``replay:`` and a file of recorded quotes.
SIMULATED: Final = "simulated"
REPLAY_PREFIX: Final = "replay:"
#: ``--feed replay:sample``: the recorded quotes that ship inside the package
#: (``feeds.SAMPLE_REPLAY``), found wherever it is installed. ``replay:./sample`` is a file.
SAMPLE: Final = "sample"
#: Fastest ``--replay-speed``: about 30 years of quotes per second.
MAX_REPLAY_SPEED: Final = 1e9


#: ``--feed module:callable``: a feed hook, imported by name (docs/feeds.md, "Your own
#: feed"). ``replay:`` is taken first, so a module named ``replay`` cannot be a hook.
FEED_HOOK: Final = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def _feed(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value == SIMULATED:
        return
    if value.startswith(REPLAY_PREFIX):
        if value[len(REPLAY_PREFIX) :].strip():
            return
    elif FEED_HOOK.fullmatch(value):
        return
    raise ValueError(
        f"{_flag(attribute.name)} must be '{SIMULATED}', 'replay:{SAMPLE}', 'replay:FILE' "
        f"or a feed hook 'module:callable', got {value!r}"
    )


def _replay_speed(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 < value <= MAX_REPLAY_SPEED:
        raise ValueError(
            f"{_flag(attribute.name)} must be > 0 and <= {MAX_REPLAY_SPEED:g}, got {value}"
        )


#: ``--bus`` schemes: Redis over TCP, over TLS, or a unix socket.
BUS_SCHEMES: Final = ("redis", "rediss", "unix")


def _bus(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    # The message never repeats the URL: it may hold a password.
    if value is not None and value.partition("://")[0] not in BUS_SCHEMES:
        raise ValueError(
            f"{_flag(attribute.name)} must be a Redis URL: redis://[:PASSWORD@]HOST:PORT/DB, "
            "rediss://... for TLS, or unix:///PATH"
        )


def _api_key(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    # A short key is guessable; one with spaces or control characters cannot be sent
    # in an Authorization header as is. The message never repeats the key.
    if value is None:
        return
    if len(value) < 16 or not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError(
            f"{_flag(attribute.name)} must be at least 16 printable ASCII characters without spaces"
        )


#: A label of a host name; with "_", which container and service names use and resolve.
_HOST_LABEL: Final = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)", re.IGNORECASE)


def _host(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    # What the resolver would refuse only once the feeds are built: '999.1.1.1' (a name
    # cannot end in a number), '[::1]', '' or 'a b'. A well-formed name that does not
    # resolve is found when the server binds, and reported then.
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    labels = value.removesuffix(".").split(".")
    if len(value) <= 253 and all(map(_HOST_LABEL.fullmatch, labels)) and not labels[-1].isdigit():
        return
    raise ValueError(
        f"{_flag(attribute.name)} must be an IP address (127.0.0.1, or 0.0.0.0 for every "
        f"interface; IPv6 without brackets: ::1, ::) or a host name, got {value!r}"
    )


#: ``--symbols`` unless told otherwise: the well-known tickers.
DEFAULT_SYMBOLS: Final = 16


def _symbols(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= MAX_UNIVERSE:
        raise ValueError(
            f"{_flag(attribute.name)} must be between 1 and {MAX_UNIVERSE}, got {value}"
        )


def _universe(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None:
        try:
            parse_universe(value, source=_flag(attribute.name))
        except ValueError as exc:
            raise ValueError(str(exc)) from None


def _tick_rate(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 < value <= MAX_TICK_RATE:
        raise ValueError(
            f"{_flag(attribute.name)} must be greater than 0 and at most {MAX_TICK_RATE:g} "
            f"(for more prices a second, raise --updates-per-tick), got {value}"
        )


def _updates_per_tick(instance: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not 1 <= value <= MAX_UPDATES_PER_TICK:
        raise ValueError(
            f"{_flag(attribute.name)} must be from 1 to {MAX_UPDATES_PER_TICK:,}, got {value}"
        )


LOG_LEVELS: Final = ("debug", "info", "warning", "error")
#: ``--log-format``: the readable line, or one JSON object per line.
LOG_FORMATS: Final = ("text", "json")


def _lowercase(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _log_level(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in LOG_LEVELS:
        raise ValueError(
            f"{_flag(attribute.name)} must be one of {', '.join(LOG_LEVELS)}, got {value!r}"
        )


def _log_format(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in LOG_FORMATS:
        raise ValueError(
            f"{_flag(attribute.name)} must be one of {', '.join(LOG_FORMATS)}, got {value!r}"
        )


def _log_file(instance: object, attribute: attrs.Attribute[Any], value: Path | None) -> None:
    # The folder is created at start (mkdir -p): what would make that or the open fail.
    if value is None:
        return
    if value.is_dir():
        raise ValueError(
            f"{_flag(attribute.name)}: {value} is a directory; name a file in it, "
            f"e.g. {value / 'websocket.log'}"
        )
    for parent in value.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{_flag(attribute.name)}: {parent} is not a directory")
            break


def _check_readable(name: str, path: Path) -> None:
    """That ``path`` is a file the process can open; ``ValueError`` naming setting ``name``."""
    if not path.exists():
        raise ValueError(f"{_flag(name)}: no such file: {path}")
    if path.is_dir():
        raise ValueError(f"{_flag(name)}: {path} is a directory, not a file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{_flag(name)}: cannot read {path}: {exc.strerror or exc}") from None


#: ``--cors-origins`` value that allows every origin (given alone).
ANY_ORIGIN: Final = "*"
_ORIGIN: Final = re.compile(
    r"(?P<scheme>https?)://(?P<host>[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}


def parse_origins(name: str, value: str | None) -> tuple[str, ...]:
    """The origins of ``--cors-origins``: comma-separated ``scheme://host[:port]``, or
    ``*`` alone; ``None`` or blank: none. Raises ``ValueError`` naming the setting and
    saying what a browser's ``Origin`` header looks like."""
    if value is None or not value.strip():
        return ()
    origins = [origin.strip() for origin in value.split(",")]
    if ANY_ORIGIN in origins:
        if len(origins) > 1:
            raise ValueError(f"{_flag(name)}: '*' allows every origin; give it alone")
        return (ANY_ORIGIN,)
    for origin in origins:
        match = _ORIGIN.fullmatch(origin)
        if match is None:
            raise ValueError(
                f"{_flag(name)}: {origin[:100]!r} is not an origin: write it as a browser "
                "sends it, scheme://host[:port] in lowercase without a path or trailing "
                "slash (e.g. https://dashboard.example.com), or '*' alone"
            )
        port = match["port"]
        if port is not None and not 1 <= int(port) <= 65535:
            raise ValueError(f"{_flag(name)}: {origin!r}: the port must be 1-65535")
        if port == _DEFAULT_PORTS[match["scheme"]]:
            raise ValueError(
                f"{_flag(name)}: {origin!r}: leave out the default port, as browsers do "
                f"({match['scheme']}://{match['host']})"
            )
    return tuple(dict.fromkeys(origins))


def _cors_origins(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    parse_origins(attribute.name, value)


#: How an ``--allowed-origins`` pattern starts its host: any subdomain of what follows.
SUBDOMAINS: Final = "*."


def parse_origin_patterns(name: str, value: str | None) -> tuple[str, ...]:
    """The origins of ``--allowed-origins``: as :func:`parse_origins`, plus patterns
    ``scheme://*.domain[:port]`` for every subdomain (any depth) of a domain with at
    least one dot. Raises ``ValueError`` naming the setting."""
    if value is None or not value.strip():
        return ()
    origins = [origin.strip() for origin in value.split(",")]
    plain = []
    for origin in origins:
        scheme, separator, rest = origin.partition("://" + SUBDOMAINS)
        if separator:
            if "." not in rest.partition(":")[0]:
                raise ValueError(
                    f"{_flag(name)}: {origin[:100]!r} is too broad: name a domain, as in "
                    "https://*.example.com"
                )
            origin = f"{scheme}://{rest}"
        plain.append(origin)
    parse_origins(name, ",".join(plain))
    return tuple(dict.fromkeys(origins))


def _allowed_origins(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    parse_origin_patterns(attribute.name, value)


def _jwt_secret(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None:
        try:
            check_secret(value)
        except ValueError as exc:
            raise ValueError(f"{_flag(attribute.name)} {exc}") from None


#: Names of this machine that ``--host`` may give without authentication.
_LOOPBACK_NAMES: Final = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only: ``localhost``, 127.0.0.0/8,
    ``::1``. Any other name or address (``0.0.0.0``, a host name) counts as reachable
    from outside: names are not resolved."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _forwarded_allow_ips(
    instance: object, attribute: attrs.Attribute[Any], value: str | None
) -> None:
    try:
        parse_networks(value)
    except ValueError as exc:
        raise ValueError(f"{_flag(attribute.name)}: {exc}") from None


@attrs.frozen(kw_only=True)
class Config:
    """Everything ``realtime serve`` can be told. Defaults are the safe, documented ones."""

    host: str = _setting(
        "127.0.0.1", "address to listen on (0.0.0.0: every interface)", validator=_host
    )
    port: int = _setting(8000, "port to listen on (0: any free port)", validator=_port)

    # Limits (DESIGN.md, "Limits").
    max_message_size: int = _setting(64 * 1024, "largest inbound message, bytes (close 1009)")
    max_fragments: int = _setting(256, "frames one inbound message may arrive in (close 1009)")
    control_rate: float = _setting(10.0, "inbound pings and pongs per second per connection")
    control_burst: int = _setting(50, "inbound control frames allowed above the rate (close 1008)")
    max_symbols: int = _setting(500, "price symbols one connection may hold")
    rate_limit: float = _setting(20.0, "inbound messages per second per connection")
    rate_burst: int = _setting(40, "inbound burst allowed above the rate")
    rate_strikes: int = _setting(10, "rate-limited messages in a minute before close 4429")
    rate_replayed: float = _setting(
        10.0, "messages a replay (since) sends per token of the inbound rate"
    )
    outbox_messages: int = _setting(1024, "queued messages per connection before close 4499")
    outbox_bytes: int = _setting(4 * 1024 * 1024, "queued bytes per connection before 4499")
    write_timeout: float = _setting(10.0, "seconds a write may take before the connection aborts")
    heartbeat_interval: float = _setting(20.0, "seconds between server pings")
    heartbeat_misses: int = _setting(2, "missed heartbeats before close 1011")
    history_messages: int = _setting(1000, "messages kept per stream for resume")
    history_seconds: float = _setting(600.0, "seconds a message is kept for resume")
    max_connections: int = _setting(50_000, "connections per process (handshake gets 503)")
    # Per source IP (docs/security.md, "Per source IP").
    connect_rate: float = _setting(
        10.0, "new connections a second per source IP, WebSocket or HTTP (429 past the burst)"
    )
    connect_burst: int = _setting(
        100, "new connections one source IP may open at once above --connect-rate"
    )
    max_sources: int = _setting(
        10_000, "source IPs the per-IP limits remember at once (the least recent is forgotten)"
    )
    max_unauthenticated: int = _setting(
        64,
        "connections one source IP may have waiting for their token at once, with "
        "authentication on (429 past it)",
    )
    limit_loopback: bool = _setting(
        False,
        "apply the per-IP limits to loopback clients (127.0.0.0/8, ::1) too; false: they are "
        "exempt, so local tools, tests and benchmarks are never refused",
        validator=_no_check,
    )
    forwarded_allow_ips: str | None = _setting(
        None,
        "proxies whose X-Forwarded-For names the client for the per-IP limits and the "
        "log: comma-separated addresses or CIDR blocks (unset: none, the peer's address "
        "counts)",
        validator=_forwarded_allow_ips,
    )
    shutdown_grace: float = _setting(10.0, "seconds to drain on SIGTERM before aborting")
    flush_delay: float = _setting(
        0.0005,
        "seconds a frame may wait to share a write: for the end of its burst, or under "
        "load after the connection's last write (0: each event is written at once)",
        validator=_flush_delay,
    )

    # The simulated market.
    symbols: int = _setting(
        DEFAULT_SYMBOLS,
        "simulated universe size (well-known tickers first); --universe names the symbols instead",
        validator=_symbols,
    )
    universe: str | None = _setting(
        None,
        "the price universe, comma-separated tickers (AAPL,ORCL,...): what clients may "
        "subscribe to; the simulated market trades them (unknown tickers get generic "
        "prices), or the publish API and a feed hook publish their prices (unset: the "
        "--symbols simulated tickers)",
        validator=_universe,
    )
    universe_file: Path | None = _setting(
        None,
        "the price universe from a file: one ticker per line (or comma-separated), # starts "
        "a comment",
        validator=_no_check,
    )
    tick_rate: float = _setting(1.0, "simulated price ticks per second", validator=_tick_rate)
    updates_per_tick: int | None = _setting(
        None,
        "symbols updated per tick (default: all)",
        validator=_updates_per_tick,
    )
    seed: int | None = _setting(None, "seed for a repeatable market", validator=_no_check)
    feeds: bool = _setting(True, "run the simulated feeds", validator=_no_check)
    derived_feeds: bool = _setting(
        True,
        "with --feeds, also run the alert, signal and portfolio feeds (false: prices only)",
        validator=_no_check,
    )

    demo_events: bool = _setting(
        True,
        "with --feeds, also publish the demo's system notifications (model training, "
        "rebalancing, delayed data; false: only the gateway's own)",
        validator=_no_check,
    )

    # The feeds (docs/feeds.md).
    feed: str = _setting(
        SIMULATED,
        "price source: 'simulated', 'replay:FILE' to replay recorded quotes (CSV or "
        "NDJSON; 'replay:sample': the shipped sample, five stocks 2007-2009), or "
        "'module:callable', a feed hook of your own (docs/feeds.md)",
        validator=_feed,
    )
    replay_speed: float = _setting(
        1.0, "replay pace: 1 = as recorded, 86400 = a day per second", validator=_replay_speed
    )
    alerts: Path | None = _setting(
        None, "alert rules (TOML; default: a built-in demo set)", validator=_no_check
    )
    portfolio: Path | None = _setting(
        None, "portfolio positions (TOML; default: a built-in demo)", validator=_no_check
    )
    signal_interval: float = _setting(3.0, "seconds between two trading signals")
    portfolio_interval: float = _setting(1.0, "least seconds between two portfolio updates")

    # A cluster (docs/cluster.md).
    bus: str | None = _setting(
        None,
        "Redis URL (redis://[:PASSWORD@]HOST:PORT/DB, rediss:// for TLS): serve is then a "
        "node of the cluster sharing it, and feed its producers (unset: one process, "
        "in-process bus). Prefer the variable when it holds a password",
        validator=_bus,
        repr=False,  # may hold a password
    )
    workers: int = _setting(
        1,
        "gateway processes sharing the port (SO_REUSEPORT), each restarted when it dies: "
        "one per core uses them all; more than 1 needs --bus, which they share",
    )
    node_heartbeat: float = _setting(
        2.0,
        "on a node of a cluster, seconds between two reports of the node to Redis; a "
        "node silent for three is gone: its client ids and connection counts are freed",
    )
    disconnect_wait: float = _setting(
        2.0,
        "on a node of a cluster, seconds POST /api/disconnect waits for every node to "
        "confirm its closes (503 unconfirmed past it)",
    )
    resume_wait: float = _setting(
        2.0,
        "seconds a node (--bus) lets a resume wait for a since it has not received from "
        "Redis yet (the client came from a node that is ahead); history_unavailable after",
    )
    feed_lock_ttl: float = _setting(
        3.0,
        "seconds the active realtime feed's lock lasts unrenewed: a standby feed takes "
        "over within this and a third of it after the active one dies",
    )

    # POST /api/publish (docs/feeds.md).
    api_key: str | None = _setting(
        None,
        "key for POST /api/publish (Authorization: Bearer KEY); unset, the API answers 403. "
        "Prefer the variable: flags show in the process list",
        validator=_api_key,
        repr=False,  # never in a log or a traceback
    )
    publish_max_body: int = _setting(64 * 1024, "largest POST /api/publish body, bytes (413)")
    body_timeout: float = _setting(
        10.0, "seconds an HTTP API request body may take to arrive (408)"
    )

    cors_origins: str | None = _setting(
        None,
        "browser origins allowed to call the HTTP API from other sites: comma-separated "
        "scheme://host[:port], or '*' for any (unset: none; the dashboard is same-origin)",
        validator=_cors_origins,
    )

    # Authentication and origins (docs/security.md, "Authentication and authorization").
    jwt_secret: str | None = _setting(
        None,
        "shared secret of at least 32 bytes verifying HS256/384/512 tokens; turns "
        "authentication on. Prefer the variable: flags show in the process list",
        validator=_jwt_secret,
        repr=False,  # never in a log or a traceback
    )
    jwt_public_key: Path | None = _setting(
        None,
        "PEM public key or certificate verifying RS256, ES256 or EdDSA tokens; turns "
        "authentication on",
        validator=_no_check,
    )
    jwks: Path | None = _setting(
        None,
        "JWKS file whose keys verify tokens, chosen by the token's kid (for key "
        "rotation); turns authentication on",
        validator=_no_check,
    )
    jwt_audience: str | None = _setting(
        None, "aud that tokens must carry (unset: aud is not checked)", validator=_no_check
    )
    jwt_issuer: str | None = _setting(
        None, "iss that tokens must carry (unset: iss is not checked)", validator=_no_check
    )
    allowed_origins: str | None = _setting(
        None,
        "browser origins whose pages may open WebSockets, beyond the gateway's own: "
        "comma-separated scheme://host[:port], scheme://*.domain patterns, or '*' for any "
        "(unset: also localhost, any port, while authentication is off)",
        validator=_allowed_origins,
    )
    insecure_no_auth: bool = _setting(
        False,
        "without a key, serve a --host other than loopback anyway: whoever reaches it "
        "reads every channel",
        validator=_no_check,
    )
    auth_timeout: float = _setting(
        5.0,
        "with authentication on, seconds a connection that sent no Authorization header "
        "has to send its auth message (else 4401)",
    )
    max_connections_per_user: int = _setting(
        100,
        "with authentication on, connections one user (a token's sub) may have open at "
        "once, on this process or across a cluster (--bus); one more is closed with 4429",
    )

    certfile: Path | None = _setting(
        None,
        "TLS certificate chain (PEM); with --keyfile serves wss:// and https://",
        validator=_no_check,
    )
    keyfile: Path | None = _setting(None, "TLS private key (PEM)", validator=_no_check)

    log_file: Path | None = _setting(
        None,
        "also write the log to this file, rotated (make run: logs/websocket.log)",
        validator=_log_file,
    )
    log_max_bytes: int = _setting(10 * 1024 * 1024, "size at which --log-file is rotated, bytes")
    log_backups: int = _setting(5, "rotated files of --log-file kept (FILE.1 ... FILE.N)")
    log_level: str = _setting(
        "info",
        "debug, info, warning or error (any case)",
        validator=_log_level,
        converter=_lowercase,
    )
    log_format: str = _setting(
        "text",
        "text (time level logger: message) or json (one object per line: time, level, "
        "logger, message and the line's fields, e.g. client_id and peer)",
        validator=_log_format,
        converter=_lowercase,
    )
    access_log: bool = _setting(
        True,
        "log each HTTP request (method, path, status, bytes, time, the client's address) "
        "on the realtime.access logger; WebSocket connections have their own lines",
        validator=_no_check,
    )

    def __attrs_post_init__(self) -> None:
        if self.workers > 1 and self.bus is None:
            # Each would have its own in-process bus: other prices, seq, history.
            raise ValueError(
                f"{_flag('workers')} {self.workers} needs --bus redis://HOST:PORT/DB: "
                "without it each worker is a gateway of its own, with its own prices, seq "
                "and history, and a client that reconnects lands on another one at random"
            )
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("--certfile and --keyfile go together: give both for TLS, or neither")
        self._check_universe()
        files = {
            "universe_file": self.universe_file,
            "alerts": self.alerts,
            "portfolio": self.portfolio,
            "feed": self.replay_file,
            "certfile": self.certfile,
            "keyfile": self.keyfile,
        }
        for name, path in files.items():
            if path is not None:
                _check_readable(name, path)
        if self.certfile is not None and self.keyfile is not None:
            # Loaded here, and again to serve: a bad pair stops the start before binding.
            try:
                server_context(self.certfile, self.keyfile)
            except TLSFileError as exc:
                raise ValueError(f"{_flag(exc.setting)}: {exc}") from None
        self._check_authentication()

    def _check_universe(self) -> None:
        if self.universe is not None and self.universe_file is not None:
            raise ValueError(
                f"{_flag('universe')} and {_flag('universe_file')}: give the universe one way"
            )
        if self.symbols != DEFAULT_SYMBOLS and (
            self.universe is not None or self.universe_file is not None
        ):
            raise ValueError(
                f"{_flag('symbols')} is the size of the simulated universe, and --universe "
                "names it: give one"
            )
        if self.universe_file is not None:
            _check_readable("universe_file", self.universe_file)
            self.price_universe()

    def price_universe(self) -> tuple[str, ...] | None:
        """The tickers of ``--universe`` or ``--universe-file`` (read anew), in order;
        ``None`` when neither is given. Raises ``ValueError`` naming the setting, and the
        file and line, for a bad one."""
        if self.universe is not None:
            return parse_universe(self.universe, source=_flag("universe"))
        if self.universe_file is None:
            return None
        try:
            return load_universe(self.universe_file)
        except ValueError as exc:
            raise ValueError(f"{_flag('universe_file')}: {exc}") from None

    @property
    def feed_hook(self) -> str | None:
        """The ``module:callable`` of a ``--feed`` hook; ``None`` for the built-in feeds."""
        if self.feed == SIMULATED or self.feed.startswith(REPLAY_PREFIX):
            return None
        return self.feed

    def _check_authentication(self) -> None:
        keys = [
            name
            for name in ("jwt_secret", "jwt_public_key", "jwks")
            if getattr(self, name) is not None
        ]
        if len(keys) > 1:
            raise ValueError(
                f"{' and '.join(_flag(name) for name in keys)}: give one way to verify tokens"
            )
        if not keys:
            for name in ("jwt_audience", "jwt_issuer"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{_flag(name)} checks tokens: give a key too (--jwt-secret, "
                        "--jwt-public-key or --jwks)"
                    )
            if not self.insecure_no_auth and not is_loopback(self.host):
                raise ValueError(
                    f"{_flag('host')} {self.host!r} is reachable from other machines and "
                    "authentication is off: give a key (--jwt-secret, --jwt-public-key or "
                    "--jwks), or --insecure-no-auth to let anyone who reaches it read every "
                    "channel"
                )
            return
        self.token_verifier()  # reads and checks the key file now, not at the first token

    @property
    def authentication(self) -> bool:
        """Whether a key is configured: connections must then authenticate."""
        return any(value is not None for value in (self.jwt_secret, self.jwt_public_key, self.jwks))

    def token_verifier(self) -> TokenVerifier | None:
        """A verifier for the configured key (read anew from its file), or ``None`` when
        authentication is off. Raises ``ValueError`` naming the setting for an unfit key."""
        checks = {"audience": self.jwt_audience, "issuer": self.jwt_issuer}
        if self.jwt_secret is not None:
            return TokenVerifier.from_secret(self.jwt_secret, **checks)
        for name, path, load in (
            ("jwt_public_key", self.jwt_public_key, TokenVerifier.from_public_key),
            ("jwks", self.jwks, TokenVerifier.from_jwks),
        ):
            if path is not None:
                try:
                    return load(path, **checks)
                except ValueError as exc:
                    raise ValueError(f"{_flag(name)}: {exc}") from None
        return None

    @property
    def websocket_origins(self) -> tuple[str, ...]:
        """The origins and patterns of ``--allowed-origins`` (``("*",)``: any)."""
        return parse_origin_patterns("allowed_origins", self.allowed_origins)

    @property
    def replay_file(self) -> Path | None:
        """The file of ``--feed replay:FILE`` (``replay:sample``: the shipped sample);
        ``None`` for the simulated market or a feed hook."""
        if not self.feed.startswith(REPLAY_PREFIX):
            return None
        name = self.feed[len(REPLAY_PREFIX) :].strip()
        return SAMPLE_REPLAY if name == SAMPLE else Path(name)

    @property
    def cors_allowed_origins(self) -> tuple[str, ...]:
        """The origins of ``--cors-origins`` (``("*",)`` for any; empty for none)."""
        return parse_origins("cors_origins", self.cors_origins)

    @property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The networks of ``--forwarded-allow-ips`` (empty for none)."""
        return parse_networks(self.forwarded_allow_ips)

    @property
    def heartbeat_timeout(self) -> float:
        """Silence after which a peer counts as dead."""
        return self.heartbeat_interval * (self.heartbeat_misses + 1)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        config_file: Path | None = None,
        **overrides: Any,
    ) -> Config:
        """A config from the TOML file ``config_file`` (default: the one
        ``REALTIME_CONFIG`` names, if any), then ``REALTIME_*`` variables on top, then
        ``overrides`` (flags) on top of those.

        Raises ``ValueError`` naming the setting for a value that does not parse or
        fit, and naming the file and key for a file that cannot be read, is not
        TOML, or holds a key that is no setting.
        """
        environ = os.environ if environ is None else environ
        if config_file is None and environ.get(CONFIG_VARIABLE):
            config_file = Path(environ[CONFIG_VARIABLE])
        values: dict[str, Any] = {} if config_file is None else read_config_file(config_file)
        for field in attrs.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = parse_setting(field.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings of the TOML file ``path``, by field name, each checked as
    :class:`Config` checks it. Keys are the flags' names (``max-connections``).

    Raises ``ValueError`` with one line naming the file and the key: a file that
    cannot be read or is not TOML, a key that is no setting (with the nearest one), a
    value of the wrong TOML type, or one the setting refuses.
    """
    where = f"--config ({CONFIG_VARIABLE}) {path}"
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise ValueError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{where}: a directory, not a file") from None
    except OSError as exc:
        raise ValueError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: not valid TOML: {exc}") from None
    fields = attrs.fields_dict(Config)
    keys = [name.replace("_", "-") for name in fields]
    values: dict[str, Any] = {}
    for key, value in document.items():
        name = key.replace("-", "_")
        if "_" in key or name not in fields:
            hint = (
                f"write it as the flag, {key.replace('_', '-')!r}"
                if key.replace("_", "-") in keys
                else "; ".join(
                    f"did you mean {match!r}?"
                    for match in difflib.get_close_matches(key, keys, n=1, cutoff=0.7)
                )
                or "settings are the flags of `realtime serve --help`, without the dashes"
            )
            raise ValueError(f"{where}: unknown setting {key!r}: {hint}")
        field = fields[name]
        value = _from_toml(name, value, where)
        if field.converter is not None:  # ours are plain functions of the value
            value = typing.cast(Callable[[Any], Any], field.converter)(value)
        validator = field.validator
        assert validator is not None  # _setting gives every field one
        try:
            validator(None, field, value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        values[name] = value
    return values


_TOML_TYPES: Final = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    Path: "a string (a path)",
}


def _from_toml(name: str, value: object, where: str) -> Any:
    """``value`` as setting ``name`` takes it: TOML's own types, a number for a float,
    a string for a path. Raises ``ValueError`` naming the key and what it needs."""
    kind = setting_type(name)
    if kind is bool:
        fits = isinstance(value, bool)
    elif kind is int:
        fits = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        fits = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        fits = isinstance(value, str)
    if not fits:
        key = name.replace("_", "-")
        raise ValueError(f"{where}: {key} must be {_TOML_TYPES[kind]}, got {value!r}")
    return kind(value) if kind in (Path, float) else value


def setting_type(name: str) -> Any:
    """The plain type of setting ``name`` (int, float, str, bool or Path)."""
    field = attrs.fields_dict(Config)[name]
    text = str(field.type)
    for plain in (bool, int, float, Path, str):
        if text.startswith(plain.__name__):
            return plain
    raise TypeError(f"setting {name} has no plain type: {text}")  # pragma: no cover


def parse_setting(name: str, raw: str) -> Any:
    """Parse the text of setting ``name``; raises ``ValueError`` naming it."""
    kind = setting_type(name)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"{_flag(name)} must be true or false, got {raw!r}")
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(
            f"{_flag(name)} must be {'an integer' if kind is int else 'a number'}, got {raw!r}"
        ) from None


def environment(config: Config) -> dict[str, str | None]:
    """The ``REALTIME_*`` variables from which :meth:`Config.from_env` builds ``config``
    again: each setting's text as :func:`parse_setting` reads it, or ``None`` for a
    setting that is unset (its variable must then be absent). ``REALTIME_CONFIG`` is
    absent too: every setting is here, and a file read again could have changed since.
    Holds the secrets: for a child process's environment only, never for a log.
    """
    variables: dict[str, str | None] = {CONFIG_VARIABLE: None}
    for field in attrs.fields(Config):
        value = getattr(config, field.name)
        if value is None:
            text = None
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = repr(value) if isinstance(value, float) else str(value)
        variables[ENV_PREFIX + field.name.upper()] = text
    return variables
