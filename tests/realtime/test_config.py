"""Configuration: every limit has a default, a flag, a variable, and a clear error."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from feeds import SAMPLE_REPLAY
from realtime import Config
from realtime._cli import _parser
from realtime._config import environment


def test_defaults_are_the_documented_limits() -> None:
    config = Config()
    assert (config.host, config.port) == ("127.0.0.1", 8000)
    assert config.max_message_size == 64 * 1024
    assert config.max_symbols == 500
    assert (config.rate_limit, config.rate_burst, config.rate_strikes) == (20, 40, 10)
    assert (config.outbox_messages, config.outbox_bytes) == (1024, 4 * 1024 * 1024)
    assert config.write_timeout == 10
    assert (config.heartbeat_interval, config.heartbeat_misses) == (20, 2)
    assert (config.history_messages, config.history_seconds) == (1000, 600)
    assert config.max_connections == 50_000
    assert (config.connect_rate, config.connect_burst, config.max_sources) == (10, 100, 10_000)
    assert (config.limit_loopback, config.trusted_networks) == (False, ())
    assert config.shutdown_grace == 10
    assert (config.log_max_bytes, config.log_backups) == (10 * 1024 * 1024, 5)
    assert config.demo_events is True
    assert config.cors_origins is None
    assert (config.log_format, config.access_log) == ("text", True)


def test_environment_then_flags() -> None:
    environ = {"REALTIME_PORT": "9000", "REALTIME_RATE_LIMIT": "2.5", "REALTIME_FEEDS": "off"}
    config = Config.from_env(environ, port=9100)
    assert config.port == 9100
    assert config.rate_limit == 2.5
    assert config.feeds is False
    assert Config.from_env({"REALTIME_LOG_FILE": "logs/x.log"}).log_file == Path("logs/x.log")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"REALTIME_PORT": "70000"}, "--port (REALTIME_PORT) must be between 0 and 65535"),
        (
            {"REALTIME_MAX_SYMBOLS": "0"},
            "--max-symbols (REALTIME_MAX_SYMBOLS) must be greater than 0",
        ),
        ({"REALTIME_HEARTBEAT_INTERVAL": "soon"}, "must be a number, got 'soon'"),
        ({"REALTIME_FEEDS": "maybe"}, "must be true or false"),
        (
            {"REALTIME_FLUSH_DELAY": "0.5"},
            "--flush-delay (REALTIME_FLUSH_DELAY) must be between 0 and 0.1, got 0.5",
        ),
        (
            {"REALTIME_FLUSH_DELAY": "-0.001"},
            "--flush-delay (REALTIME_FLUSH_DELAY) must be between 0 and 0.1",
        ),
        (
            {"REALTIME_LOG_LEVEL": "loud"},
            "--log-level (REALTIME_LOG_LEVEL) must be one of debug, info, warning, error, "
            "got 'loud'",
        ),
        (
            {"REALTIME_HOST": "999.1.1.1"},
            "--host (REALTIME_HOST) must be an IP address (127.0.0.1, or 0.0.0.0",
        ),
        ({"REALTIME_HOST": "[::1]"}, "IPv6 without brackets"),
        ({"REALTIME_HOST": ""}, "--host (REALTIME_HOST) must be an IP address"),
        (
            {"REALTIME_SYMBOLS": "10000000"},
            "--symbols (REALTIME_SYMBOLS) must be between 1 and 100000, got 10000000",
        ),
        ({"REALTIME_SYMBOLS": "0"}, "--symbols (REALTIME_SYMBOLS) must be between 1 and"),
        (
            {"REALTIME_TICK_RATE": "5000"},
            "--tick-rate (REALTIME_TICK_RATE) must be greater than 0 and at most 1000",
        ),
        (
            {"REALTIME_UPDATES_PER_TICK": "10000000000000"},
            "--updates-per-tick (REALTIME_UPDATES_PER_TICK) must be from 1 to 100,000",
        ),
        ({"REALTIME_CERTFILE": "cert.pem"}, "--certfile and --keyfile go together"),
        (
            {"REALTIME_LOG_MAX_BYTES": "0"},
            "--log-max-bytes (REALTIME_LOG_MAX_BYTES) must be greater than 0",
        ),
        (
            # 0 backups would make the handler never rotate: the file would grow forever.
            {"REALTIME_LOG_BACKUPS": "0"},
            "--log-backups (REALTIME_LOG_BACKUPS) must be greater than 0",
        ),
        ({"REALTIME_DEMO_EVENTS": "sometimes"}, "--demo-events (REALTIME_DEMO_EVENTS) must be"),
        (
            {"REALTIME_FORWARDED_ALLOW_IPS": "10.0.0.1, nginx"},
            "--forwarded-allow-ips (REALTIME_FORWARDED_ALLOW_IPS): 'nginx' is not an IP address "
            "or CIDR",
        ),
        (
            {"REALTIME_CONNECT_RATE": "0"},
            "--connect-rate (REALTIME_CONNECT_RATE) must be greater than 0",
        ),
        (
            {"REALTIME_LOG_FORMAT": "logfmt"},
            "--log-format (REALTIME_LOG_FORMAT) must be one of text, json, got 'logfmt'",
        ),
        ({"REALTIME_ACCESS_LOG": "some"}, "--access-log (REALTIME_ACCESS_LOG) must be true"),
        ({"REALTIME_WORKERS": "0"}, "--workers (REALTIME_WORKERS) must be greater than 0"),
        (
            # Each worker would be a gateway of its own: another stream at random.
            {"REALTIME_WORKERS": "2"},
            "--workers (REALTIME_WORKERS) 2 needs --bus redis://HOST:PORT/DB: without it each "
            "worker is a gateway of its own",
        ),
    ],
)
def test_bad_values_name_the_setting(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Config.from_env(environ)


def test_forwarded_allow_ips_are_addresses_or_blocks() -> None:
    config = Config.from_env({"REALTIME_FORWARDED_ALLOW_IPS": "127.0.0.1, 10.0.0.0/8 ,::1"})
    assert [str(n) for n in config.trusted_networks] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]


def test_every_setting_has_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--help"])
    help_text = capsys.readouterr().out
    for field in attrs.fields(Config):
        assert f"--{field.name.replace('_', '-')}" in help_text


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "0.0.0.0", "::1", "::", "fe80::1%lo", "localhost", "gw-1.example.", "app_gw"],
)
def test_hosts_that_can_be_bound(host: str) -> None:
    # (Without a key, only loopback is allowed unless --insecure-no-auth says otherwise.)
    assert Config(host=host, insecure_no_auth=True).host == host


@pytest.mark.parametrize("level", ["INFO", "Debug", "warning"])
def test_log_level_in_any_case(level: str) -> None:
    assert Config.from_env({"REALTIME_LOG_LEVEL": level}).log_level == level.lower()


def test_log_file_must_be_a_file_it_can_create(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is a directory; name a file in it, e\.g\. "):
        Config(log_file=tmp_path)
    (tmp_path / "taken").write_text("")
    with pytest.raises(ValueError, match=r"taken is not a directory"):
        Config(log_file=tmp_path / "taken" / "logs" / "gateway.log")
    # A folder that does not exist yet is fine: serve creates it.
    assert Config(log_file=tmp_path / "logs" / "gateway.log").log_file is not None


def test_feed_files_must_be_readable_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--alerts \(REALTIME_ALERTS\): .* is a directory"):
        Config(alerts=tmp_path)
    with pytest.raises(ValueError, match=r"--feed \(REALTIME_FEED\): .* is a directory"):
        Config(feed=f"replay:{tmp_path}")


def test_replay_sample_is_the_shipped_file() -> None:
    assert Config(feed="replay:sample").replay_file == SAMPLE_REPLAY
    assert Config(feed="replay: sample ").replay_file == SAMPLE_REPLAY
    # Any other name is a path: a file of one's own named sample is ./sample.
    with pytest.raises(ValueError, match=r"no such file: sample$"):
        Config(feed="replay:./sample")


# --- the config file (--config) -----------------------------------------------------


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_the_file_is_under_the_environment_which_is_under_the_flags(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        'port = 9001\nmax-connections = 1000\ntick-rate = 2\nfeeds = false\nlog-level = "DEBUG"\n'
        'log-file = "logs/gw.log"\nforwarded-allow-ips = "10.0.0.0/8"\n',
    )
    config = Config.from_env({}, config_file=path)
    assert (config.port, config.max_connections, config.tick_rate) == (9001, 1000, 2.0)
    assert (config.feeds, config.log_level, config.log_file) == (
        False,
        "debug",
        Path("logs/gw.log"),
    )
    assert config.forwarded_allow_ips == "10.0.0.0/8"
    config = Config.from_env({"REALTIME_PORT": "9002"}, config_file=path)
    assert (config.port, config.max_connections) == (9002, 1000)
    config = Config.from_env({"REALTIME_PORT": "9002"}, config_file=path, port=9003)
    assert config.port == 9003
    # REALTIME_CONFIG names the file when no flag does; --config wins over it.
    assert Config.from_env({"REALTIME_CONFIG": str(path)}).port == 9001
    other = tmp_path / "other.toml"
    other.write_text("port = 9004\n")
    assert Config.from_env({"REALTIME_CONFIG": str(path)}, config_file=other).port == 9004


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "max-conections = 10\n",
            "unknown setting 'max-conections': did you mean 'max-connections'?",
        ),
        (
            "max_connections = 10\n",
            "unknown setting 'max_connections': write it as the flag, 'max-connections'",
        ),
        (
            "colour = 'blue'\n",
            "unknown setting 'colour': settings are the flags of `realtime serve --help`",
        ),
        ("[serve]\nport = 1\n", "unknown setting 'serve'"),
        ('port = "8000"\n', "port must be an integer, got '8000'"),
        ("port = 8000.5\n", "port must be an integer, got 8000.5"),
        ("feeds = 1\n", "feeds must be true or false, got 1"),
        ("tick-rate = true\n", "tick-rate must be a number, got True"),
        ("alerts = 3\n", "alerts must be a string (a path), got 3"),
        ("port = 70000\n", "--port (REALTIME_PORT) must be between 0 and 65535, got 70000"),
        ('log-format = "xml"\n', "--log-format (REALTIME_LOG_FORMAT) must be one of text, json"),
        ("port = \n", "not valid TOML: Invalid value (at line 1, column 8)"),
    ],
)
def test_a_bad_file_is_refused_in_one_line_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _toml(tmp_path, text)
    with pytest.raises(ValueError, match=r"^--config") as refused:
        Config.from_env({}, config_file=path)
    assert str(refused.value).startswith(f"--config (REALTIME_CONFIG) {path}: ")
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_missing_or_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        Config.from_env({}, config_file=tmp_path / "absent.toml")
    with pytest.raises(ValueError, match="a directory, not a file"):
        Config.from_env({}, config_file=tmp_path)


def test_the_environment_of_a_config_gives_it_back(tmp_path: Path) -> None:
    """How ``--workers`` hands its settings to each worker: flags included, and a
    variable of the supervisor's environment that a flag overrode or unset does not
    leak through."""
    alerts = tmp_path / "alerts.toml"
    alerts.write_text("")
    config = Config(
        port=0,
        bus="redis://:secret@127.0.0.1:6379/0",
        workers=3,
        feeds=False,
        rate_limit=2.5,
        flush_delay=0.0005,
        history_seconds=1e9,
        updates_per_tick=None,
        seed=-7,
        alerts=alerts,
        log_file=Path("logs/websocket.log"),
        forwarded_allow_ips="127.0.0.1, 10.0.0.0/8",
        insecure_no_auth=True,
        log_level="warning",
    )
    variables = environment(config)
    assert variables["REALTIME_FEEDS"] == "false"
    assert variables["REALTIME_CONFIG"] is None  # everything is in the variables
    assert variables["REALTIME_UPDATES_PER_TICK"] is None
    assert Config.from_env({k: v for k, v in variables.items() if v is not None}) == config
    assert Config.from_env({k: v for k, v in environment(Config()).items() if v}) == Config()
