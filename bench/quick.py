"""Quick figures for the gateway alone: server CPU per sent message, memory per connection.

    python -m bench.quick [--clients 1000] [--seconds 10]

The server runs pinned to CPU 0 and the load generator (``bench.loadgen``) to CPU 1
(``taskset``), each in its own process. Figures:

* µs of server CPU per message written to a socket, from /proc (utime + stime) and
  the server's own ``realtime_messages_sent_total`` over the same window;
* RSS per connection: (RSS with every client connected and subscribed, feeds
  quiet) minus (RSS before any client), divided by the clients.

The full comparison against other servers is ``make bench``; this is the smoke figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def start_server(port: int, *flags: str) -> subprocess.Popen[bytes]:
    command = ["taskset", "-c", "0", sys.executable, "-c", "from realtime._cli import main; main()"]
    server = subprocess.Popen(
        [*command, "serve", "--port", str(port), "--log-level", "warning", *flags],
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the server did not start")


def loadgen(port: int, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "taskset",
            "-c",
            "1",
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            f"ws://127.0.0.1:{port}",
            *flags,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def cpu_per_message(args: argparse.Namespace) -> dict[str, object]:
    port = free_port()
    server = start_server(
        port,
        "--symbols",
        "100",
        "--tick-rate",
        str(args.tick_rate),
        "--updates-per-tick",
        "100",
        "--max-symbols",
        "100",
    )
    try:
        load = loadgen(
            port,
            "--clients",
            str(args.clients),
            "--symbols-per-client",
            "10",
            "--seconds",
            str(args.seconds),
        )
        assert load.stdout is not None
        ready = load.stdout.readline()
        time.sleep(1.0)  # the generator's warm-up
        cpu0, sent0, t0 = (
            cpu_seconds(server.pid),
            metric(port, "realtime_messages_sent_total"),
            time.monotonic(),
        )
        time.sleep(args.seconds - 0.5)
        cpu1, sent1, t1 = (
            cpu_seconds(server.pid),
            metric(port, "realtime_messages_sent_total"),
            time.monotonic(),
        )
        result = json.loads(load.stdout.readline())
        load.wait(timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=30)
    sent = sent1 - sent0
    return {
        "ready": ready.strip(),
        "offered_per_s": 100 * args.tick_rate * 10 * args.clients / 100,
        "sent_per_s": sent / (t1 - t0),
        "server_cpu": (cpu1 - cpu0) / (t1 - t0),
        "server_us_per_message": (cpu1 - cpu0) / sent * 1e6 if sent else None,
        "loadgen": result,
    }


def memory_per_connection(args: argparse.Namespace) -> dict[str, object]:
    port = free_port()
    server = start_server(port, "--feeds", "false", "--max-symbols", "100", "--symbols", "100")
    try:
        time.sleep(1.0)
        before = rss_bytes(server.pid)
        load = loadgen(
            port,
            "--clients",
            str(args.clients),
            "--symbols-per-client",
            "10",
            "--seconds",
            "3",
            "--warmup",
            "0",
        )
        assert load.stdout is not None
        ready = load.stdout.readline()
        time.sleep(2.0)
        after = rss_bytes(server.pid)
        load.wait(timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "ready": ready.strip(),
        "rss_before_mib": before / 2**20,
        "rss_after_mib": after / 2**20,
        "bytes_per_connection": (after - before) / args.clients,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tick-rate", type=float, default=10.0, help="ticks/s of 100 symbols")
    args = parser.parse_args()
    print(
        json.dumps({"cpu": cpu_per_message(args), "memory": memory_per_connection(args)}, indent=2)
    )


if __name__ == "__main__":
    main()
