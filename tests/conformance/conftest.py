"""The conformance suite's server: ``--server-url ws://host:port``, or our gateway.

Without ``--server-url`` the suite starts the gateway itself, as a subprocess of
the ``realtime serve`` command (once per session), and the tests that need a
server of their own (the 1001 drain) start one more. With ``--server-url`` every
test runs against that server and the ones that need to control it are skipped.

Authentication (docs/conformance.md, "Authentication"): the suite asks the server
whether it wants a token (a connection that sends a ``ping`` first gets ``welcome``
from a server with authentication off, ``unauthorized`` and 4401 from one with it
on). Tokens come from ``--token-command`` (or ``CONFORMANCE_TOKEN_COMMAND``): a
command run with ``--sub SUB --ttl SECONDS [--channels a,b] [--symbols A,B]``
appended that prints one token, as ``realtime token`` does. Without
``--server-url`` the authentication rules run against a second gateway of ours,
started with a secret, whose tokens come from ``realtime token``; the rest against
one with authentication off.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .wire import TIMEOUT, Peer, peer, raw

#: The settings the suite starts our gateway with: defaults everywhere (the limits
#: tests rely on them), fast ticks so snapshots and updates come quickly.
GATEWAY_ARGS: Final = ("--tick-rate", "20", "--seed", "7", "--log-level", "warning")
START_TIMEOUT: Final = 15.0
#: The variable naming the token command when ``--token-command`` is not given.
TOKEN_COMMAND_VARIABLE: Final = "CONFORMANCE_TOKEN_COMMAND"
#: Settings that turn authentication on: kept from our gateway with authentication off.
_KEY_VARIABLES: Final = ("REALTIME_JWT_SECRET", "REALTIME_JWT_PUBLIC_KEY", "REALTIME_JWKS")
#: The user the suite's ordinary connections are.
SUB: Final = "conformance"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--server-url",
        default=None,
        help="run the conformance suite against this server (ws://host:port); "
        "default: start our gateway",
    )
    parser.addoption(
        "--token-command",
        default=None,
        metavar="CMD",
        help="a command that prints a token for the server under test, run with --sub SUB "
        "--ttl SECONDS [--channels a,b] [--symbols A,B] appended, e.g. 'realtime token' "
        f"with REALTIME_JWT_SECRET set (default: ${TOKEN_COMMAND_VARIABLE})",
    )


@attrs.frozen
class TokenMinter:
    """Runs the token command: ``argv`` plus the claims' flags, in ``env``."""

    argv: tuple[str, ...]
    env: Mapping[str, str] | None = None

    def command(
        self,
        sub: str,
        ttl: int,
        channels: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
    ) -> list[str]:
        argv = [*self.argv, "--sub", sub, "--ttl", str(ttl)]
        if channels is not None:
            argv += ["--channels", ",".join(channels)]
        if symbols is not None:
            argv += ["--symbols", ",".join(symbols)]
        return argv

    def _environ(self) -> dict[str, str] | None:
        return None if self.env is None else {**os.environ, **self.env}

    def mint_now(self, sub: str = SUB, ttl: int = 3600) -> str:
        """A token, blocking: for session fixtures, outside Trio."""
        result = subprocess.run(
            self.command(sub, ttl), capture_output=True, env=self._environ(), check=False
        )
        return _token_of(self.command(sub, ttl), result.returncode, result.stdout, result.stderr)

    async def mint(
        self,
        sub: str = SUB,
        ttl: int = 3600,
        channels: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
    ) -> str:
        argv = self.command(sub, ttl, channels, symbols)
        result = await trio.run_process(
            argv, capture_stdout=True, capture_stderr=True, env=self._environ(), check=False
        )
        return _token_of(argv, result.returncode, result.stdout, result.stderr)


def _token_of(argv: list[str], status: int, stdout: bytes, stderr: bytes) -> str:
    token = stdout.decode(errors="replace").strip()
    if status != 0 or not token or any(c.isspace() for c in token):
        pytest.fail(
            f"the token command {shlex.join(argv)!r} exited with {status} and printed "
            f"{len(token)} characters: {stderr.decode(errors='replace').strip()[-500:]}",
            pytrace=False,
        )
    return token


@attrs.frozen
class Target:
    """The server under test: its base URL, whether the suite started it, whether it
    wants tokens, and how to mint them (``None``: no way was given)."""

    url: str
    ours: bool
    authentication: bool = False
    minter: TokenMinter | None = None
    #: A token for the suite's ordinary connections, when ``authentication``.
    token: str | None = attrs.field(default=None, repr=False)

    def ws(self, client_id: str) -> str:
        return f"{self.url}/ws/{client_id}"

    def headers(self, token: str | None) -> list[tuple[bytes, bytes]]:
        return [] if token is None else [(b"Authorization", f"Bearer {token}".encode())]

    @asynccontextmanager
    async def raw(
        self, client_id: str, *, token: str | None = None, anonymous: bool = False, **kwargs: Any
    ) -> AsyncIterator[WebSocketConnection]:
        """A WebSocket to ``client_id``, with ``Authorization: Bearer`` (``token``, or
        the suite's when the server wants one) unless ``anonymous``."""
        if token is None and not anonymous:
            token = self.token
        async with raw(self.ws(client_id), extra_headers=self.headers(token), **kwargs) as ws:
            yield ws

    @asynccontextmanager
    async def peer(
        self, client_id: str, *, packed: bool = False, token: str | None = None, **kwargs: Any
    ) -> AsyncIterator[Peer]:
        """A connection whose ``welcome`` was received; authenticated like :meth:`raw`."""
        token = token if token is not None else self.token
        async with peer(
            self.ws(client_id), packed=packed, extra_headers=self.headers(token), **kwargs
        ) as connection:
            yield connection

    async def mint(self, **claims: Any) -> str:
        """A token with these claims (``sub``, ``ttl``, ``channels``, ``symbols``)."""
        assert self.minter is not None, "only for targets with authentication"
        return await self.minter.mint(**claims)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the gateway did not listen on {port} within {START_TIMEOUT}s")


def start_gateway_process(
    port: int, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``realtime serve`` on ``port``, listening when this returns. Authentication is
    off unless ``env`` (added to the environment) turns it on: keys set in the
    suite's own environment are not passed on."""
    environ = {k: v for k, v in os.environ.items() if k not in _KEY_VARIABLES}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from realtime._cli import main; main()",
            "serve",
            "--port",
            str(port),
            *GATEWAY_ARGS,
        ],
        env={**environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(port, process)
    except BaseException:
        stop_gateway_process(process)
        raise
    return process


def stop_gateway_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr is not None:
        process.stderr.close()


async def _wants_a_token(url: str) -> bool:
    """Whether the server at ``url`` wants a token: a connection that sends a ``ping``
    first gets ``welcome`` when it does not, ``unauthorized`` and 4401 when it does."""
    with trio.fail_after(TIMEOUT):
        async with raw(f"{url}/ws/conf-probe-{os.getpid()}") as ws:
            await ws.send_message(json.dumps({"type": "ping", "id": "probe"}))
            try:
                first = json.loads(await ws.get_message())
            except ConnectionClosed as closed:
                code = closed.reason.code if closed.reason is not None else None
                if code == 4401:
                    return True
                raise AssertionError(f"{url} closed a new connection with {code}") from None
    if first.get("type") == "welcome":
        return False
    if first.get("type") == "error" and first.get("code") == "unauthorized":
        return True
    raise AssertionError(f"{url} answered a new connection's ping with {first}")


def _minter_option(config: pytest.Config) -> TokenMinter | None:
    command = config.getoption("--token-command", default=None) or os.environ.get(
        TOKEN_COMMAND_VARIABLE
    )
    return TokenMinter(tuple(shlex.split(command))) if command else None


def _described(url: str, ours: bool, minter: TokenMinter | None) -> Target:
    """The target at ``url``, asked whether it wants tokens (see the module docstring)."""
    authentication = trio.run(_wants_a_token, url)
    if authentication and minter is None:
        pytest.fail(
            f"{url} wants a token (authentication is on): give --token-command CMD (or "
            f"{TOKEN_COMMAND_VARIABLE}), a command that prints one, e.g. 'realtime token' "
            "with the gateway's REALTIME_JWT_SECRET set",
            pytrace=False,
        )
    token = minter.mint_now() if authentication and minter is not None else None
    return Target(url, ours=ours, authentication=authentication, minter=minter, token=token)


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    url = request.config.getoption("--server-url", default=None)
    if url:
        yield _described(str(url).rstrip("/"), False, _minter_option(request.config))
        return
    port = free_port()
    process = start_gateway_process(port)
    try:
        yield _described(f"ws://127.0.0.1:{port}", True, None)
    finally:
        stop_gateway_process(process)


@pytest.fixture(scope="session")
def auth_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The server the authentication rules run against: ``--server-url``, or a gateway
    of ours started with a secret, whose tokens ``realtime token`` mints."""
    url = request.config.getoption("--server-url", default=None)
    if url:
        yield _described(str(url).rstrip("/"), False, _minter_option(request.config))
        return
    secret = secrets.token_urlsafe(48)
    port = free_port()
    process = start_gateway_process(port, env={"REALTIME_JWT_SECRET": secret})
    minter = TokenMinter(
        (sys.executable, "-c", "from realtime._cli import main; main()", "token"),
        env={"REALTIME_JWT_SECRET": secret},
    )
    try:
        yield _described(f"ws://127.0.0.1:{port}", True, minter)
    finally:
        stop_gateway_process(process)


@pytest.fixture
def auth(auth_target: Target) -> Target:
    """The authentication target, for a test of the authentication rules: skipped only
    when the server has authentication off and no token command was given."""
    if not auth_target.authentication:
        if auth_target.minter is None:
            pytest.skip(
                "authentication rules: the server has authentication off and no "
                f"--token-command (or {TOKEN_COMMAND_VARIABLE}) was given"
            )
        pytest.fail(
            "a token command was given, but the server welcomes connections without a "
            "token: its authentication is off",
            pytrace=False,
        )
    return auth_target
