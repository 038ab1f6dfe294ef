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
    """One ``redis-server`` process in ``folder``: no eviction, and no persistence
    unless ``persistent`` (an append-only file synced at every write).

    ``start`` returns once the server accepts connections; ``stop`` ends it (SIGTERM,
    then SIGKILL); ``restart`` starts it again on the same port, with its data only if
    it is persistent; ``pause`` and ``resume`` stop and continue the process (SIGSTOP,
    SIGCONT): it keeps its connections and answers nothing meanwhile. ``password``
    turns on ``requirepass``; ``tls`` is a ``(certfile, keyfile)`` pair that makes the
    port a TLS one.
    """

    def __init__(
        self,
        folder: Path,
        *,
        password: str | None = None,
        tls: tuple[Path, Path] | None = None,
        persistent: bool = False,
    ) -> None:
        self.folder = folder
        self.password = password
        self.tls = tls
        self.persistent = persistent
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
            # Lost on restart, like the in-memory bus, unless persistent.
            'save ""',
            "appendonly yes" if self.persistent else "appendonly no",
            "appendfsync always",
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
            if self._launch():
                return
            self.stop()
        raise RuntimeError(f"redis-server did not start:\n{self.log}")

    def restart(self) -> None:
        """Stop the server and start it again on the same port: its data is lost
        unless it is persistent. Raises ``RuntimeError`` if it does not start."""
        self.stop()
        self.start(port=self.port)

    def pause(self) -> None:
        """Stop the process where it is (SIGSTOP): connections stay open, nothing is
        answered until :meth:`resume`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Continue a paused process (SIGCONT)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def _launch(self) -> bool:
        config = self.folder / "redis.conf"
        config.write_text(self._config())
        (self.folder / "redis.log").unlink(missing_ok=True)
        with (self.folder / "redis.out").open("wb") as output:
            self.process = subprocess.Popen(
                [REDIS_SERVER, str(config)], stdout=output, stderr=subprocess.STDOUT
            )
        return self._wait_ready()

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
