"""The deployment kit (deploy/): nginx terminating TLS in front of a real gateway
process, with the configs as docs/deploy.md installs them; the systemd unit, its
environment file and the kernel settings, checked against what they claim."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from realtime import Config
from realtime._open_files import RESERVED_FILES
from tests.realtime.helpers import close_of, drain_log, open_ws, start_process

from .nginx import DEPLOY, Certificates, adapt, running_nginx

TIMEOUT = 30.0
#: New connections a source may open at once: the gateway below counts them per
#: client address, as it reads them from X-Forwarded-For.
BURST = 5
LETSENCRYPT = "/etc/letsencrypt/live/realtime.example.com"
SPEC_CERTIFICATE = (
    "/etc/ssl/certs/api.yourdomain.com.pem",
    "/etc/ssl/private/api.yourdomain.com.key",
)


async def close_code(ws: WebSocketConnection) -> int:
    """Read until the close; its code."""
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed as closed:
        return close_of(closed)[0]


def kill_if_running(process: trio.Process) -> None:
    """A gateway is not left running by an assertion that failed before its drain."""
    if process.returncode is None:
        process.kill()


def only(pattern: str, text: str) -> str:
    """The group of the one line of ``text`` that ``pattern`` matches."""
    (match,) = re.findall(pattern, text, re.MULTILINE)
    assert isinstance(match, str)
    return match


async def upgrade_status(port: int, source: str, certificates: Certificates, name: str) -> int:
    """The HTTP status that nginx at ``port`` answers a WebSocket upgrade with, for a
    client connecting from the local address ``source`` (127.0.0.0/8 is all this
    machine's: each address is another client to nginx)."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    async with trio.SSLStream(
        tcp, certificates.client_context(), server_hostname="127.0.0.1"
    ) as tls:
        await tls.send_all(
            f"GET /ws/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n" not in head:
            chunk = await tls.receive_some()
            assert chunk, head
            head += chunk
    return int(head.split()[1])


async def https_get(port: int, path: str, certificates: Certificates) -> tuple[int, bytes]:
    """Status and body of ``GET path`` through nginx's TLS port."""
    async with await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", port, ssl_context=certificates.client_context()
    ) as tls:
        await tls.send_all(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := await tls.receive_some():
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_a_wss_client_through_nginx_gets_its_prices_its_address_and_the_drain(
    tmp_path: Path, nursery: trio.Nursery, request: pytest.FixtureRequest
) -> None:
    certificates = Certificates(tmp_path / "tls")
    with trio.fail_after(TIMEOUT):
        process, port, log = await start_process(
            # As docs/deploy.md runs it, with a small connect burst that shows which
            # client address the gateway counts (loopback included, for the test).
            *("--forwarded-allow-ips", "127.0.0.1", "--limit-loopback", "true"),
            *("--connect-burst", str(BURST), "--connect-rate", "0.01"),
            *("--tick-rate", "20", "--shutdown-grace", "5"),
        )
        nursery.start_soon(drain_log, process, log)
        request.addfinalizer(partial(kill_if_running, process))

        def deploy_site(ports: list[int]) -> str:
            https, http = ports
            return adapt(
                "realtime.conf",
                {
                    "listen 443 ssl;": f"listen 127.0.0.1:{https} ssl;",
                    "listen 80;": f"listen 127.0.0.1:{http};",
                    "server 127.0.0.1:8000;": f"server 127.0.0.1:{port};",
                    **certificates.replacements(
                        f"{LETSENCRYPT}/fullchain.pem", f"{LETSENCRYPT}/privkey.pem"
                    ),
                },
            )

        def spec_site(ports: list[int]) -> str:
            return adapt(
                "spec-proxy.conf",
                {
                    "listen 443 ssl;": f"listen 127.0.0.1:{ports[0]} ssl;",
                    "localhost:8000": f"localhost:{port}",  # "localhost" as the spec wrote
                    **certificates.replacements(*SPEC_CERTIFICATE),
                },
            )

        with (
            running_nginx(tmp_path / "nginx", deploy_site, ports=2) as nginx,
            running_nginx(tmp_path / "spec-nginx", spec_site) as spec,
        ):
            https, http = nginx.ports
            context = certificates.client_context()
            # The spec's config, as written: a wss:// client gets its welcome and prices.
            async with open_ws(
                f"wss://127.0.0.1:{spec.ports[0]}/ws/spec", ssl_context=context
            ) as ws:
                assert json.loads(await ws.get_message())["type"] == "welcome"
                await ws.send_message(json.dumps({"type": "subscribe", "channel": "prices"}))
                while json.loads(await ws.get_message())["type"] != "price_update":
                    pass

            # The deployment config: the same, and it stays for the drain.
            async with open_ws(f"wss://127.0.0.1:{https}/ws/deployed", ssl_context=context) as ws:
                welcome = json.loads(await ws.get_message())
                assert welcome["type"] == "welcome"
                await ws.send_message(json.dumps({"type": "subscribe", "channel": "prices"}))
                prices = 0
                while prices < 10:
                    prices += json.loads(await ws.get_message())["type"] == "price_update"

                # The HTTP side behind it, and plain http:// sent to https://.
                status, body = await https_get(https, "/health", certificates)
                assert (status, json.loads(body)["status"]) == (200, "ok")
                status, _ = await https_get(https, "/ws/stats", certificates)
                assert status == 200
                async with await trio.open_tcp_stream("127.0.0.1", http) as plain:
                    await plain.send_all(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    head = await plain.receive_some()
                assert head.startswith(b"HTTP/1.1 301"), head
                assert b"\r\nLocation: https://127.0.0.1/x\r\n" in head, head

                # Each client's own address reaches the gateway (X-Forwarded-For, trusted
                # from nginx): 127.0.0.2 spends its burst and is refused with 429, while
                # 127.0.0.3, behind the same nginx, still connects. Were the gateway
                # counting nginx's address, both would be one source.
                statuses = [
                    await upgrade_status(https, "127.0.0.2", certificates, f"burst-{index}")
                    for index in range(BURST + 1)
                ]
                assert statuses == [101] * BURST + [429], statuses
                assert await upgrade_status(https, "127.0.0.3", certificates, "other") == 101
                assert await upgrade_status(https, "127.0.0.2", certificates, "again") == 429

                # The drain reaches the client through nginx: 1001, go elsewhere.
                process.send_signal(signal.SIGTERM)
                assert await close_code(ws) == 1001
            assert await process.wait() == 0
    text = b"".join(log).decode()
    # The log names each client by its own address, and nginx as the peer it came by.
    assert re.search(r"\[WebSocket\] Connected: other from 127\.0\.0\.3 via 127\.0\.0\.1:\d+", text)
    assert re.search(r"\[WebSocket\] Connected: deployed from 127\.0\.0\.1:\d+", text), text
    assert "carries X-Forwarded-For, but no proxy is trusted" not in text, text


def test_proxy_read_timeout_outlasts_the_heartbeat() -> None:
    """nginx must not close a healthy quiet WebSocket: the gateway pings one it has not
    heard from for an interval, at its next check, so the gateway may be silent on a
    connection for up to two intervals."""
    text = (DEPLOY / "nginx" / "realtime.conf").read_text()
    location = text[text.index("location /ws/ {") :]
    location = location[: location.index("}")]
    seconds = int(only(r"^\s*proxy_read_timeout (\d+)s;", location))
    assert seconds > 2 * Config().heartbeat_interval


def test_the_environment_file_holds_settings_of_the_gateway() -> None:
    """Every variable in realtime.env, commented out or not, is a setting (a typo would
    be ignored silently), and the active ones make a valid config."""
    text = (DEPLOY / "systemd" / "realtime.env").read_text()
    active = dict(re.findall(r"^(REALTIME_\w+)=(.*)$", text, re.MULTILINE))
    every = re.findall(r"^#?(REALTIME_\w+)=", text, re.MULTILINE)
    settings = {f"REALTIME_{field.name.upper()}" for field in attrs.fields(Config)}
    assert set(every) <= settings, set(every) - settings
    config = Config.from_env(active)
    assert (config.host, config.port) == ("127.0.0.1", 8000)
    assert [str(network) for network in config.trusted_networks] == ["127.0.0.1/32"]


def test_the_systemd_unit_verifies_and_leaves_room_for_50000_connections(
    tmp_path: Path,
) -> None:
    unit = (DEPLOY / "systemd" / "realtime.service").read_text()
    limit = int(only(r"^LimitNOFILE=(\d+)$", unit))
    assert limit >= Config().max_connections + RESERVED_FILES
    assert re.search(r"^KillMode=mixed$", unit, re.MULTILINE)  # --workers: SIGTERM once
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # Where this checkout's gateway and settings are (the unit's own paths are the
    # machine's of docs/deploy.md).
    realtime = Path(sys.executable).parent / "realtime"
    copy = tmp_path / "realtime.service"
    copy.write_text(
        unit.replace("/opt/realtime/venv/bin/realtime", str(realtime)).replace(
            "/etc/realtime/realtime.env", str(DEPLOY / "systemd" / "realtime.env")
        )
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_the_kernel_settings_exist_and_leave_ports_for_50000_upstream_connections() -> None:
    text = (DEPLOY / "sysctl" / "60-realtime.conf").read_text()
    settings = dict(re.findall(r"^([a-z0-9_.]+) = (.+)$", text, re.MULTILINE))
    for key in settings:
        assert Path("/proc/sys", *key.split(".")).exists(), key
    low, high = map(int, settings["net.ipv4.ip_local_port_range"].split())
    assert high - low + 1 >= Config().max_connections
