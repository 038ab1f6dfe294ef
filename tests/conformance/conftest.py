"""The conformance suite's server: ``--server-url ws://host:port``, or our gateway.

Without ``--server-url`` the suite starts the gateway itself, as a subprocess of
the ``realtime serve`` command (once per session), and the tests that need a
server of their own (the 1001 drain) start one more. With ``--server-url`` every
test runs against that server and the ones that need to control it are skipped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Final

import attrs
import pytest

#: The settings the suite starts our gateway with: defaults everywhere (the limits
#: tests rely on them), fast ticks so snapshots and updates come quickly.
GATEWAY_ARGS: Final = ("--tick-rate", "20", "--seed", "7", "--log-level", "warning")
START_TIMEOUT: Final = 15.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--server-url",
        default=None,
        help="run the conformance suite against this server (ws://host:port); "
        "default: start our gateway",
    )


@attrs.frozen
class Target:
    """The server under test: its base URL, and whether the suite started it."""

    url: str
    ours: bool

    def ws(self, client_id: str) -> str:
        return f"{self.url}/ws/{client_id}"


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


def start_gateway_process(port: int) -> subprocess.Popen[bytes]:
    """``realtime serve`` on ``port``, listening when this returns."""
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
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
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


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    url = request.config.getoption("--server-url", default=None)
    if url:
        yield Target(str(url).rstrip("/"), ours=False)
        return
    port = free_port()
    process = start_gateway_process(port)
    try:
        yield Target(f"ws://127.0.0.1:{port}", ours=True)
    finally:
        stop_gateway_process(process)
