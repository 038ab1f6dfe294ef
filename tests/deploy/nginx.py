"""A real nginx for the tests, in front of real gateways: its own prefix, config, logs
and free ports in a folder, in the foreground; never the system's instance.

The configs under test are the files of ``deploy/nginx/``, included in an ``http {}``
block as a site is. `adapt` makes exactly the changes their header comments tell a
reader to make (ports, names, certificate paths, backends), and fails when one of them
no longer matches the file, so the test and the comment cannot drift apart. ``make
pytest`` installs Debian's nginx when it is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import trustme

#: Where ``make nginx-deps`` puts it; ``NGINX`` names another binary.
NGINX: Final = os.environ.get("NGINX", "/usr/sbin/nginx")
#: The repository's deployment kit.
DEPLOY: Final = Path(__file__).resolve().parents[2] / "deploy"
#: Seconds nginx may take to start or to stop.
START_TIMEOUT: Final = 20.0
#: The names the configs' certificates are for, and what the tests connect to.
HOSTS: Final = ("127.0.0.1", "localhost", "api.yourdomain.com", "realtime.example.com")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def adapt(name: str, replacements: Mapping[str, str]) -> str:
    """The text of ``deploy/nginx/NAME`` with each key replaced by its value. Each key
    must occur in the file (a changed file must change its test too)."""
    text = (DEPLOY / "nginx" / name).read_text()
    for old, new in replacements.items():
        assert old in text, f"{name} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


class Certificates:
    """A test CA and a certificate for `HOSTS`, in PEM files; ``client_context()`` trusts
    the CA."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        issued = self.ca.issue_cert(*HOSTS)
        self.certfile = folder / "chain.pem"
        self.keyfile = folder / "key.pem"
        self.certfile.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(self.keyfile))

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def replacements(self, certfile: str, keyfile: str) -> dict[str, str]:
        """What to write for a config's example certificate and key paths."""
        return {certfile: str(self.certfile), keyfile: str(self.keyfile)}


class Nginx:
    """One nginx master (and one worker) serving a site, a config that goes inside
    ``http {}``. ``start`` returns once it listens; ``stop`` ends it (SIGTERM, then
    SIGKILL). ``error_log`` is what it logged."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        #: The free ports the site was given.
        self.ports: list[int] = []

    @property
    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _main_config(self) -> str:
        folder = self.folder
        temp = "\n".join(
            f"    {kind}_temp_path {folder / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""\
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} notice;
events {{
    worker_connections 1024;
}}
http {{
    access_log {folder / "access.log"};
{temp}
    include {folder / "site.conf"};
}}
"""

    def start(self, site: Callable[[list[int]], str], ports: int = 1) -> None:
        """Serve the config ``site(ports)`` makes for ``ports`` free ports (in
        `ports`); raises ``RuntimeError`` with nginx's log if it does not start within
        `START_TIMEOUT`."""
        if shutil.which(NGINX) is None:
            raise RuntimeError(f"{NGINX} is missing: run `make nginx-deps` (Debian's)")
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # another process may take a free port before nginx does
            self.ports = [free_port() for _ in range(ports)]
            try:
                self._start(site(self.ports))
            except RuntimeError:
                if "Address already in use" not in self.error_log:
                    raise
            else:
                return
        raise RuntimeError(f"nginx found no free port:\n{self.error_log}")

    def _start(self, site: str) -> None:
        (self.folder / "site.conf").write_text(site)
        config = self.folder / "nginx.conf"
        config.write_text(self._main_config())
        (self.folder / "error.log").unlink(missing_ok=True)
        error_log = str(self.folder / "error.log")
        self.process = subprocess.Popen(
            # -e: the log nginx writes before it has read the config's error_log.
            [
                NGINX,
                "-p",
                str(self.folder),
                "-c",
                str(config),
                "-e",
                error_log,
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        # The master binds every port, then starts its worker: the worker's start says
        # that the config loaded and every port listens.
        while "start worker process" not in self.error_log:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not start:\n{self.error_log}")
            time.sleep(0.02)

    def stop(self) -> None:
        """End nginx, if it runs."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def running_nginx(
    folder: Path, site: Callable[[list[int]], str], ports: int = 1
) -> Iterator[Nginx]:
    """`Nginx.start` in ``folder``, stopped on exit."""
    nginx = Nginx(folder)
    nginx.start(site, ports)
    try:
        yield nginx
    finally:
        nginx.stop()
