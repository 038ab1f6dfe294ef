"""``realtime serve`` refuses to start with one line that names the setting and the cause.

Each case runs the real command. Whatever it logged before (a warning, say), the
output holds exactly one line that is not a log line at INFO or WARNING: the error.
No traceback, no usage text, a non-zero status: 2 for a value refused before anything
starts, 1 for what is found at start (a file that does not parse, a port in use).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import trio
import trustme
from cryptography.hazmat.primitives import serialization

from realtime import StartupError
from realtime._cli import startup_error

from .helpers import REALTIME, TIMEOUT, drain_log, start_process

#: A line of the gateway's log that is not an error.
_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d [\d:,]+ (?:DEBUG|INFO|WARNING) ")


def _serve(
    *args: str, command: Sequence[str] = REALTIME, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_")}
    return subprocess.run(
        [*command, "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=cwd,
        # No controlling terminal: had OpenSSL prompted for a pass phrase on /dev/tty,
        # the test would fail, not hang.
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )


def _error_line(result: subprocess.CompletedProcess[str], status: int, *says: str) -> str:
    """The one error line of a failed start, checked for ``says``."""
    output = result.stderr + result.stdout
    assert result.returncode == status, output
    assert "Traceback" not in output, output
    others = [line for line in output.splitlines() if not _LOG_LINE.match(line)]
    assert len(others) == 1, output
    (line,) = others
    for fragment in says:
        assert fragment in line, line
    return line


# Values refused before anything starts: status 2, "realtime serve: error: ...".


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--host", "999.1.1.1"], ["--host (REALTIME_HOST) must be an IP address", "999.1.1.1"]),
        (
            ["--symbols", "10000000"],
            ["--symbols (REALTIME_SYMBOLS) must be between 1 and 100000, got 10000000"],
        ),
        (
            ["--log-level", "loud"],
            ["--log-level (REALTIME_LOG_LEVEL) must be one of debug, info, warning, error"],
        ),
        (["--port", "eighty"], ["--port (REALTIME_PORT) must be an integer, got 'eighty'"]),
        (["--tick-rate", "1e9"], ["--tick-rate (REALTIME_TICK_RATE) must be greater than 0"]),
        (["--alerts", "no-such.toml"], ["--alerts (REALTIME_ALERTS): no such file: no-such.toml"]),
        (["--feed", "replay:nothing.csv"], ["--feed (REALTIME_FEED): no such file: nothing.csv"]),
        (
            ["--universe", "AAPL,orcl"],
            ["--universe (REALTIME_UNIVERSE): 'orcl' is not a ticker", "upper case: ORCL"],
        ),
        (
            ["--universe-file", "nothing.txt"],
            ["--universe-file (REALTIME_UNIVERSE_FILE): no such file: nothing.txt"],
        ),
    ],
)
def test_a_bad_value(args: list[str], says: list[str]) -> None:
    line = _error_line(_serve(*args), 2, *says)
    assert line.startswith("realtime serve: error: ")


def test_a_log_file_that_is_a_directory(tmp_path: Path) -> None:
    _error_line(
        _serve("--log-file", str(tmp_path)),
        2,
        f"--log-file (REALTIME_LOG_FILE): {tmp_path} is a directory; name a file in it",
    )


def test_a_bad_value_in_the_environment_says_the_same() -> None:
    env_result = subprocess.run(
        [*REALTIME, "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"REALTIME_SYMBOLS": "10000000"},
    )
    _error_line(env_result, 2, "--symbols (REALTIME_SYMBOLS) must be between 1 and 100000")


async def test_log_level_is_accepted_in_any_case() -> None:
    with trio.fail_after(TIMEOUT):
        process, _, log = await start_process("--log-level", "INFO", "--feeds", "false")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_log, process, log)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0


# Found at start: status 1, "... ERROR realtime: Cannot start: ...".


def test_a_feed_hook_that_does_not_import() -> None:
    _error_line(
        _serve("--feed", "no_such_module_here:feed"),
        1,
        "ERROR realtime: Cannot start: --feed (REALTIME_FEED): cannot import "
        "no_such_module_here: No module named 'no_such_module_here'",
    )


def test_the_port_is_already_in_use() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        _error_line(
            _serve("--port", str(port)),
            1,
            "ERROR realtime: Cannot start: --port (REALTIME_PORT): ",
            f"127.0.0.1:{port} is already in use",
        )


def test_a_host_that_does_not_resolve() -> None:
    # .invalid never resolves (RFC 2606). Not loopback: it needs a key, or the flag.
    _error_line(
        _serve("--port", "0", "--host", "gateway.invalid", "--insecure-no-auth"),
        1,
        "Cannot start: --host (REALTIME_HOST): cannot resolve 'gateway.invalid'",
    )


#: (flag, how the flag names the file, a file of the right name that does not parse, and
#: what the error says about it).
_FILES = [
    ("--alerts", "{}", "alerts.toml", "rules = [\n", "not valid TOML"),
    ("--portfolio", "{}", "portfolio.toml", "[[positions]]\nsymbol = 'AAPL'\n", "'quantity'"),
    ("--feed", "replay:{}", "quotes.csv", "when,symbol,price\n", "unknown column 'when'"),
]


@pytest.mark.parametrize(("flag", "value", "name", "text", "says"), _FILES)
def test_a_file_that_does_not_load(
    tmp_path: Path, flag: str, value: str, name: str, text: str, says: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    variable = "REALTIME_" + flag.removeprefix("--").upper()
    _error_line(
        _serve("--port", "0", flag, value.format(path)),
        1,
        f"Cannot start: {flag} ({variable}): {path}",
        says,
    )


@pytest.fixture
def unprivileged() -> Iterator[list[str]]:
    """The command, run so that file permissions apply to it: as root, without the
    capabilities that read any file (``setpriv`` drops them from the bounding set)."""
    if os.geteuid() != 0:
        yield REALTIME
    elif shutil.which("setpriv") is None:
        pytest.skip("running as root, and setpriv (util-linux) is not installed")
    else:
        yield ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *REALTIME]


@pytest.mark.parametrize(("flag", "value", "name", "text", "says"), _FILES)
def test_a_file_that_cannot_be_read(
    tmp_path: Path,
    unprivileged: list[str],
    flag: str,
    value: str,
    name: str,
    text: str,
    says: str,
) -> None:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0)
    variable = "REALTIME_" + flag.removeprefix("--").upper()
    _error_line(
        _serve(flag, value.format(path), command=unprivileged),
        2,
        f"{flag} ({variable}): cannot read {path}: Permission denied",
    )


def test_a_log_file_that_cannot_be_written(tmp_path: Path, unprivileged: list[str]) -> None:
    locked = tmp_path / "logs"
    locked.mkdir(mode=0o555)
    _error_line(
        _serve("--log-file", str(locked / "gateway.log"), command=unprivileged),
        1,
        f"--log-file (REALTIME_LOG_FILE): cannot open {locked / 'gateway.log'}: Permission denied",
    )


@pytest.mark.parametrize("flag", ["--alerts", "--portfolio"])
def test_a_directory_instead_of_a_file(tmp_path: Path, flag: str) -> None:
    _error_line(_serve(flag, str(tmp_path)), 2, f"{tmp_path} is a directory, not a file")


# TLS: checked when the config is built, before anything binds.


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    issued, other = ca.issue_cert("127.0.0.1"), ca.issue_cert("other.example")
    files = {name: folder / f"{name}.pem" for name in ("cert", "key", "other_key", "encrypted")}
    issued.cert_chain_pems[0].write_to_path(str(files["cert"]))
    issued.private_key_pem.write_to_path(str(files["key"]))
    other.private_key_pem.write_to_path(str(files["other_key"]))
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), None)
    files["encrypted"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret pass phrase"),
        )
    )
    return files


def test_tls_files_missing(tls_files: dict[str, Path], tmp_path: Path) -> None:
    _error_line(
        _serve("--certfile", str(tls_files["cert"])), 2, "--certfile and --keyfile go together"
    )
    _error_line(
        _serve("--certfile", str(tls_files["cert"]), "--keyfile", str(tmp_path / "key.pem")),
        2,
        f"--keyfile (REALTIME_KEYFILE): no such file: {tmp_path / 'key.pem'}",
    )


def test_tls_files_that_do_not_match(tls_files: dict[str, Path]) -> None:
    cert, other_key = tls_files["cert"], tls_files["other_key"]
    _error_line(
        _serve("--certfile", str(cert), "--keyfile", str(other_key)),
        2,
        f"--keyfile (REALTIME_KEYFILE): {other_key} is not the private key of the "
        f"certificate in {cert}",
    )
    # The two swapped: a key where the certificate goes.
    _error_line(
        _serve("--certfile", str(other_key), "--keyfile", str(cert)),
        2,
        f"--certfile (REALTIME_CERTFILE): {other_key} holds no PEM certificate",
    )


def test_an_encrypted_key_is_refused_without_a_prompt(tls_files: dict[str, Path]) -> None:
    encrypted = tls_files["encrypted"]
    result = _serve("--certfile", str(tls_files["cert"]), "--keyfile", str(encrypted))
    assert "pass phrase:" not in result.stderr + result.stdout  # OpenSSL's prompt
    _error_line(
        result,
        2,
        f"--keyfile (REALTIME_KEYFILE): {encrypted} is encrypted, and the gateway does not "
        "ask for pass phrases",
    )


# Only the startup errors lose their traceback.


def test_a_bug_at_start_keeps_its_traceback() -> None:
    # A ValueError that is not a StartupError: the old handler printed it as one line.
    code = (
        "import realtime._server as server\n"
        "def build_feeds(config, bus):\n"
        "    raise ValueError('a bug, not a setting')\n"
        "server.build_feeds = build_feeds\n"
        "from realtime._cli import main\n"
        "main(['serve', '--port', '0'])\n"
    )
    result = subprocess.run([REALTIME[0], "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "Traceback" in result.stderr, result.stderr
    assert "ValueError: a bug, not a setting" in result.stderr
    assert "Cannot start" not in result.stderr


def test_startup_error_is_found_only_when_alone() -> None:
    error = StartupError("--port (REALTIME_PORT): in use")
    assert startup_error(error) is error
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [error])])
    assert startup_error(nested) is error
    assert startup_error(ExceptionGroup("both", [error, RuntimeError("bug")])) is None
    assert startup_error(ExceptionGroup("bug", [ValueError("bug")])) is None
    assert startup_error(ValueError("bug")) is None
