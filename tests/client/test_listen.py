"""``realtime listen`` against the real gateway: NDJSON, the prices table, the log."""

from __future__ import annotations

import io
import json
import os
import sys

import pytest
import trio

from protocol import Channel, NotificationData, NotificationType
from realtime._cli import _parser
from realtime.client import AuthenticationError
from realtime.client._viewer import listen, run
from realtime.client._viewer_options import ListenOptions, listen_options

from ..realtime.helpers import start_gateway

TIMEOUT = 10.0


async def test_json_prints_one_message_per_line(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    out, err = io.StringIO(), io.StringIO()
    options = ListenOptions(
        url=f"ws://127.0.0.1:{server.port}", symbols=("AAPL", "MSFT"), json=True, count=5
    )
    with trio.fail_after(TIMEOUT):
        await listen(options, out, err)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 5
    assert {line["type"] for line in lines} == {"price_update"}
    assert {line["symbol"] for line in lines} <= {"AAPL", "MSFT"}
    assert "subscribed to prices" in err.getvalue()


async def test_prices_table_and_notifications_log(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    url = f"ws://127.0.0.1:{server.port}"
    out = io.StringIO()
    with trio.fail_after(TIMEOUT):
        await listen(ListenOptions(url=url, symbols=("NVDA",), count=3), out, io.StringIO())
    assert "NVDA" in out.getvalue()
    assert "chg %" in out.getvalue()

    out = io.StringIO()
    options = ListenOptions(url=url, channel=Channel.NOTIFICATIONS, count=1)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as inner:
            inner.start_soon(listen, options, out, io.StringIO())
            while server.hub.statistics().channel_subscriptions["notifications"] == 0:
                await trio.sleep(0.01)
            await server.bus.publish(
                Channel.NOTIFICATIONS,
                NotificationData(id="x", message="Market opens", type=NotificationType.INFO),
            )
    assert "Market opens" in out.getvalue()


def test_cli_flags() -> None:
    args = _parser().parse_args(
        ["listen", "--channel", "prices", "--symbols", "AAPL, MSFT", "--json", "--count", "2"]
    )
    options = listen_options(args)
    assert (options.channel, options.symbols, options.json, options.count) == (
        Channel.PRICES,
        ("AAPL", "MSFT"),
        True,
        2,
    )
    assert options.url == "ws://127.0.0.1:8000"
    assert options.client_id.startswith("listen-")


SECRET = "listen-test-secret-0123456789abcdef"


async def test_token_command_mints_the_token_to_connect_with(nursery: trio.Nursery) -> None:
    """`--token-command` as docs/client.md shows it: `realtime token`, with the secret."""
    server = await start_gateway(nursery, jwt_secret=SECRET)
    command = (sys.executable, "-m", "realtime", "token", "--sub", "alice", "--jwt-secret", SECRET)
    options = ListenOptions(
        url=f"ws://127.0.0.1:{server.port}", json=True, count=2, token_command=command
    )
    out = io.StringIO()
    with trio.fail_after(TIMEOUT * 3):  # a Python process starts first
        await listen(options, out, io.StringIO())
    assert len(out.getvalue().splitlines()) == 2


async def test_a_refused_token_ends_listen_with_the_reason(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, jwt_secret=SECRET)
    options = ListenOptions(url=f"ws://127.0.0.1:{server.port}", token="not.a.jwt")
    with trio.fail_after(TIMEOUT), pytest.raises(AuthenticationError, match="refused the token"):
        await listen(options, io.StringIO(), io.StringIO())


def test_a_failing_token_command_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    command = (sys.executable, "-c", "import sys; sys.exit('no such user')")
    status = run(ListenOptions(url="ws://127.0.0.1:9", token_command=command))
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("realtime listen: get_token failed")
    assert "--token-command exited with status 1: no such user" in err


def test_token_flags_and_variable() -> None:
    args = _parser().parse_args(["listen", "--token-command", "realtime token --sub 'a b'"])
    options = listen_options(args, environ={"REALTIME_TOKEN": "x.y.z"})
    assert options.token_command == ("realtime", "token", "--sub", "a b")
    assert options.token == "x.y.z"
    assert "x.y.z" not in repr(options)
    assert listen_options(args, environ={}).token is None


def test_the_gateway_from_the_environment() -> None:
    """`realtime listen` finds the gateway as `realtime serve` was told: REALTIME_URL,
    else REALTIME_PORT on this machine; --url wins."""
    bare = _parser().parse_args(["listen"])
    assert listen_options(bare, environ={}).url == "ws://127.0.0.1:8000"
    assert listen_options(bare, environ={"REALTIME_PORT": "9001"}).url == "ws://127.0.0.1:9001"
    environ = {"REALTIME_PORT": "9001", "REALTIME_URL": "wss://gw.example.com"}
    assert listen_options(bare, environ=environ).url == "wss://gw.example.com"
    # The publish client's URL serves both.
    assert listen_options(bare, environ={"REALTIME_URL": "http://gw:81"}).url == "ws://gw:81"
    flagged = _parser().parse_args(["listen", "--url", "ws://elsewhere:1"])
    assert listen_options(flagged, environ=environ).url == "ws://elsewhere:1"
    with pytest.raises(ValueError, match="REALTIME_PORT must be a port, 1-65535, got 'http'"):
        listen_options(bare, environ={"REALTIME_PORT": "http"})


async def test_listen_connects_where_realtime_port_says(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery)
    command = [sys.executable, "-m", "realtime", "listen", "--json", "--count", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_")}
    with trio.fail_after(TIMEOUT * 3):  # a Python process starts first
        result = await trio.run_process(
            command,
            env={**env, "REALTIME_PORT": str(server.port)},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["type"] == "price_update"
    with trio.fail_after(TIMEOUT * 3):
        bad = await trio.run_process(
            command,
            env={**env, "REALTIME_PORT": "x"},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert (bad.returncode, bad.stderr.decode()) == (
        2,
        "realtime listen: error: REALTIME_PORT must be a port, 1-65535, got 'x'\n",
    )
