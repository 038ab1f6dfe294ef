"""What an idle authenticated connection costs the gateway, next to an anonymous one.

    python -m bench.auth_memory [--clients 5000] [--repeat 3]

Starts ``realtime serve`` (no feeds) as a process, measures its resident memory,
opens ``--clients`` idle connections that each read their ``welcome``, measures again,
and prints the difference per connection; once anonymous (no key), once with the
token in the upgrade's ``Authorization`` header, once with the token as the first
message. Tokens are minted as an identity provider would hand them out: 100 users,
each granted two channels and ten symbols. The median of ``--repeat`` runs is printed,
with the ratio to the anonymous connection (the target is at most 1.10).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.loadgen import first_message, masked_frame, raw_connect
from protocol import Channel
from realtime._auth import mint_token

SECRET = "bench-secret-" + "x" * 32
PAGE = os.sysconf("SC_PAGE_SIZE")
MODES = ("anonymous", "header", "message")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def start(mode: str, port: int, clients: int) -> subprocess.Popen[bytes]:
    environ = dict(os.environ)
    environ.pop("REALTIME_JWT_SECRET", None)
    if mode != "anonymous":
        environ["REALTIME_JWT_SECRET"] = SECRET
    command = [sys.executable, "-c", "from realtime._cli import main; main()", "serve"]
    command += ["--port", str(port), "--feeds", "false", "--log-level", "warning"]
    command += ["--max-connections", str(clients + 100)]
    process = subprocess.Popen(command, env=environ, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("the gateway did not start") from None
            time.sleep(0.05)


def connect(mode: str, port: int, index: int) -> socket.socket:
    """An idle connection that has read its welcome."""
    symbols = [f"SYM{(index + k) % 16:02d}" for k in range(10)]
    token = mint_token(
        SECRET,
        sub=f"user-{index % 100}",
        now=time.time(),
        ttl=3600,
        channels=[Channel.PRICES, Channel.ALERTS],
        symbols=symbols,
    )
    header = f"Authorization: Bearer {token}\r\n" if mode == "header" else ""
    sock, rest = raw_connect("127.0.0.1", port, f"/ws/c{index}", headers=header)
    if mode == "message":
        sock.sendall(masked_frame(0x1, json.dumps({"type": "auth", "token": token}).encode()))
    welcome = json.loads(first_message(sock, rest))
    assert welcome["type"] == "welcome", welcome
    return sock


def measure(mode: str, clients: int) -> float:
    """Bytes of resident memory per idle connection of ``mode``."""
    port = free_port()
    process = start(mode, port, clients)
    sockets: list[socket.socket] = []
    try:
        time.sleep(0.5)
        before = rss(process.pid)
        sockets = [connect(mode, port, index) for index in range(clients)]
        time.sleep(1.0)
        return (rss(process.pid) - before) / clients
    finally:
        for sock in sockets:
            sock.close()
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, float] = {}
    for mode in MODES:
        runs = [measure(mode, args.clients) for _ in range(args.repeat)]
        results[mode] = statistics.median(runs)
        spread = ", ".join(f"{run / 1024:.2f}" for run in runs)
        print(f"{mode:10} {results[mode] / 1024:6.2f} KiB per idle connection (runs: {spread})")
    for mode in MODES[1:]:
        print(f"{mode} / anonymous: {results[mode] / results['anonymous']:.3f}")


if __name__ == "__main__":
    main()
