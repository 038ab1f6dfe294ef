"""A real ``redis-server`` for the tests: its own config, data folder and free port.

No fake Redis: what the gateway's Redis bus does (Lua, pub/sub, TLS, passwords) is
checked against the server it will meet in production. ``make pytest`` installs
Debian's ``redis-server`` when it is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Final

#: Where ``make redis-deps`` puts it; ``REDIS_SERVER`` names another binary.
REDIS_SERVER: Final = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")
#: Seconds a server may take to start or to stop.
START_TIMEOUT: Final = 20.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process in ``folder``: no persistence, no eviction.

    ``start`` returns once the server accepts connections; ``stop`` ends it (SIGTERM,
    then SIGKILL). ``password`` turns on ``requirepass``; ``tls`` is a
    ``(certfile, keyfile)`` pair that makes the port a TLS one.
    """

    def __init__(
        self,
        folder: Path,
        *,
        password: str | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.folder = folder
        self.password = password
        self.tls = tls
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0`` (``rediss://`` with TLS)."""
        scheme = "rediss" if self.tls else "redis"
        auth = f":{self.password}@" if self.password else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    @property
    def log(self) -> str:
        """What the server wrote: its log file, and before that its own output (a
        config error it reports before it opens the file)."""
        text = ""
        for name in ("redis.out", "redis.log"):
            path = self.folder / name
            text += path.read_text(errors="replace") if path.exists() else ""
        return text

    def _config(self) -> str:
        lines = [
            "bind 127.0.0.1",
            f"dir {self.folder}",
            "logfile redis.log",
            "daemonize no",
            # Lost on restart, like the in-memory bus: the tests flush and restart it.
            'save ""',
            "appendonly no",
            # An evicted key would be a silent hole in the history (docs/cluster.md).
            "maxmemory-policy noeviction",
        ]
        if self.tls is None:
            lines.append(f"port {self.port}")
        else:
            certfile, keyfile = self.tls
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {certfile}",
                f"tls-key-file {keyfile}",
                "tls-auth-clients no",
            ]
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        return "\n".join(lines) + "\n"

    def start(self, *, port: int | None = None) -> None:
        """Start on ``port`` (default: a free one; a restart passes the old one);
        returns once it accepts connections. Raises ``RuntimeError`` with its log if it
        does not within ``START_TIMEOUT``."""
        if shutil.which(REDIS_SERVER) is None:
            raise RuntimeError(f"{REDIS_SERVER} is missing: run `make redis-deps` (Debian's)")
        self.folder.mkdir(parents=True, exist_ok=True)
        # Another process may take a free port before the server does: try others.
        for _ in range(1 if port is not None else 5):
            self.port = _free_port() if port is None else port
            config = self.folder / "redis.conf"
            config.write_text(self._config())
            (self.folder / "redis.log").unlink(missing_ok=True)
            with (self.folder / "redis.out").open("wb") as output:
                self.process = subprocess.Popen(
                    [REDIS_SERVER, str(config)], stdout=output, stderr=subprocess.STDOUT
                )
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError(f"redis-server did not start:\n{self.log}")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if "Ready to accept connections" in self.log:
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """End the server, if it runs; its data is lost (no persistence)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            process.terminate()
            try:
                process.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
