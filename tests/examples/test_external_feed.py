"""examples/external_feed.py, run as its docs say: a gateway started with
``--feeds false --universe ...``, and the example publishing its prices over HTTP."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import trio

from ..realtime.helpers import TIMEOUT, gateway_process, open_ws

EXAMPLE = Path(__file__).parents[2] / "examples" / "external_feed.py"
KEY = "example-key-0123456789abcdef"
SYMBOLS = ("ORCL", "SAP", "SHOP")


async def test_the_external_feed_replaces_the_simulator() -> None:
    env = {"REALTIME_API_KEY": KEY}
    universe = ",".join(SYMBOLS)
    with trio.fail_after(TIMEOUT * 3):  # two Python processes start first
        async with (
            gateway_process("--feeds", "false", "--universe", universe, env=env) as (_, port, _),
            open_ws(f"ws://127.0.0.1:{port}/ws/watcher") as ws,
        ):
            welcome = json.loads(await ws.get_message())
            assert welcome["symbols"] == list(SYMBOLS)
            await ws.send_message(json.dumps({"type": "subscribe", "channel": "prices"}))
            assert json.loads(await ws.get_message())["type"] == "subscribed"
            feed = await trio.run_process(
                [
                    sys.executable,
                    str(EXAMPLE),
                    "--ticks",
                    "3",
                    "--interval",
                    "0.01",
                    "--symbols",
                    universe,
                ],
                env={**os.environ, **env, "REALTIME_PORT": str(port)},
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert feed.returncode == 0, feed.stderr.decode()
            assert feed.stdout.decode().strip() == "external_feed: published 3 ticks of 3 symbols"
            seen: dict[str, int] = {}
            while len(seen) < len(SYMBOLS):
                message = json.loads(await ws.get_message())
                assert message["type"] == "price_update"
                seen[message["symbol"]] = message["seq"]
            assert set(seen) == set(SYMBOLS)


async def test_a_symbol_outside_the_universe_ends_it_with_the_gateways_reason() -> None:
    env = {"REALTIME_API_KEY": KEY}
    with trio.fail_after(TIMEOUT * 3):
        async with gateway_process("--feeds", "false", "--universe", "ORCL", env=env) as (
            _,
            port,
            _,
        ):
            feed = await trio.run_process(
                [
                    sys.executable,
                    str(EXAMPLE),
                    "--ticks",
                    "1",
                    "--symbols",
                    "ORCL,SAP",
                    "--url",
                    f"http://127.0.0.1:{port}",
                ],
                env={**os.environ, **env},
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert feed.returncode == 1
    assert feed.stderr.decode().startswith(
        "external_feed: not published: HTTP 400 unknown_symbol: events[1]: Unknown symbol: SAP"
    )
