"""The spec's acceptance script (``python tests/acceptance/test_websocket.py``) run as
the spec runs it: a separate ``python`` process, against the gateway as a process."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import trio

from ..realtime.helpers import TIMEOUT, drain_log, start_process

SCRIPT = Path(__file__).with_name("test_websocket.py")
PASSED = [
    "✅ PASS - Connection",
    "✅ PASS - Subscription",
    "✅ PASS - Price Updates",
    "✅ PASS - Ping/Pong",
    "✅ PASS - Multiple Clients",
]


async def run_script(
    gateway_args: list[str], script_args: list[str], *, port_in_environment: bool = False
) -> tuple[int, str, str]:
    """Start ``realtime serve`` (a free port), run the script against it; the script's
    exit code, stdout and stderr. The gateway is stopped with SIGTERM afterwards."""
    process, port, log = await start_process(*gateway_args)
    env = {k: v for k, v in os.environ.items() if k not in ("REALTIME_PORT", "PORT")}
    args = [sys.executable, str(SCRIPT), *script_args]
    if port_in_environment:
        env["REALTIME_PORT"] = str(port)
    else:
        args.insert(2, str(port))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_log, process, log)
            result = await trio.run_process(
                args, capture_stdout=True, capture_stderr=True, check=False, env=env
            )
            process.send_signal(signal.SIGTERM)
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_the_five_checks_pass_against_the_gateway() -> None:
    with trio.fail_after(TIMEOUT * 6):
        code, out, err = await run_script(["--tick-rate", "5"], [], port_in_environment=True)
    assert out.splitlines() == PASSED, out + err
    assert code == 0


async def test_a_failed_check_says_why_and_exits_1() -> None:
    # No feeds: no price is ever published, so no price update can arrive.
    with trio.fail_after(TIMEOUT * 6):
        code, out, err = await run_script(["--feeds", "false"], ["--timeout", "2"])
    assert code == 1, out + err
    assert "❌ FAIL - Price Updates: nothing conclusive within 2 s" in out.splitlines(), out


def test_bad_arguments_are_refused() -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, str(SCRIPT), "eighty"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "a port is a number from 1 to 65535, got 'eighty'" in result.stderr
    result = subprocess.run(
        [sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "REALTIME_PORT": "0"},
    )
    assert result.returncode == 2
    assert "$REALTIME_PORT: a port is a number from 1 to 65535, got '0'" in result.stderr
