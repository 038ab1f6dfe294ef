"""The servers under test and the processes of a benchmark run.

Each server runs in its own process group pinned to ``SERVER_CPU`` with ``taskset``;
load generators run pinned to ``LOADGEN_CPU``. :class:`RunningServer` and
:class:`Loadgen` are context managers that always kill their process group on exit,
so an interrupted run leaves no server behind.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "bench" / "peers" / "node"
SERVER_CPU = 0
LOADGEN_CPU = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

#: name -> what the report calls it.
SERVERS = {
    "gateway": "realtime gateway (Trio + wsproto)",
    "websockets": "python websockets + broadcast()",
    "node-ws": "Node ws",
    "fastapi": "FastAPI + uvicorn ConnectionManager",
}


@dataclass(frozen=True)
class Load:
    """The simulated feed every server runs: the same for all of them."""

    symbols: int = 100
    tick_rate: float = 10.0
    updates_per_tick: int = 100
    feeds: bool = True

    @property
    def updates_per_second(self) -> float:
        return self.tick_rate * self.updates_per_tick


def universe(n: int) -> list[str]:
    """The gateway's universe of ``n`` symbols; the peers are given the same tickers."""
    from feeds._market import universe as gateway_universe

    return list(gateway_universe(n))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_fd_limit(wanted: int = 200_000) -> int:
    """Raise RLIMIT_NOFILE for this process and its children; returns the soft limit."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):  # no CAP_SYS_RESOURCE: the hard limit is the ceiling
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def command(
    name: str, port: int, load: Load, extra: tuple[str, ...] = (), cpus: str | None = None
) -> list[str]:
    """The command line of server ``name``, pinned to ``cpus`` (default ``SERVER_CPU``;
    an empty string: not pinned)."""
    cpus = str(SERVER_CPU) if cpus is None else cpus
    pin = ["taskset", "-c", cpus] if cpus else []
    feeds = "true" if load.feeds else "false"
    if name == "gateway":
        return [
            *pin,
            sys.executable,
            "-c",
            "from realtime._cli import main; main()",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--symbols",
            str(load.symbols),
            "--max-symbols",
            str(max(500, load.symbols)),
            "--tick-rate",
            str(load.tick_rate),
            "--updates-per-tick",
            str(load.updates_per_tick),
            "--feeds",
            feeds,
            # Prices only, as the peers: no alert, signal or portfolio feed on the side.
            "--derived-feeds",
            "false",
            # Nor the demo's system notifications.
            "--demo-events",
            "false",
            *extra,
        ]
    flags = [
        "--port",
        str(port),
        "--symbols",
        ",".join(universe(load.symbols)),
        "--tick-rate",
        str(load.tick_rate),
        "--updates-per-tick",
        str(load.updates_per_tick),
        "--feeds",
        feeds,
    ]
    if name == "node-ws":
        return [*pin, "node", str(NODE_DIR / "server.js"), *flags]
    module = {"websockets": "websockets_server", "fastapi": "fastapi_server"}[name]
    return [*pin, sys.executable, "-m", f"bench.peers.{module}", *flags]


def kill_group(process: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``grace``."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``realtime serve --workers``: the supervisor and
    its workers), from /proc; a process gone meanwhile is left out."""
    found = [pid]
    for each in found:
        for task in Path(f"/proc/{each}/task").glob("*/children"):
            with suppress(OSError):
                found += [int(child) for child in task.read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss(pid: int) -> int:
    """Resident bytes of process ``pid``."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


class RunningServer:
    """A server process pinned to ``SERVER_CPU`` (or ``cpus``); readings come from /proc,
    summed over the process and its children (a ``--workers`` supervisor's workers)."""

    def __init__(
        self,
        name: str,
        load: Load,
        *,
        port: int = 0,
        extra: tuple[str, ...] = (),
        cpus: str | None = None,
    ):
        self.name = name
        self.load = load
        self.port = port or free_port()
        self.extra = extra
        self.cpus = cpus
        self.process: subprocess.Popen[bytes] | None = None
        self.log = ROOT / "bench" / "results" / ".server.log"

    def start(self, timeout: float = 30.0) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command(self.name, self.port, self.load, self.extra, self.cpus),
                cwd=ROOT,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start; see {self.log}")
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on port {self.port} in {timeout} s")

    def stop(self, *, hard: bool = False) -> None:
        if self.process is None:
            return
        if hard:  # a crash: no close frames, no drain
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        kill_group(self.process)
        self.process = None

    def __enter__(self) -> RunningServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in process_tree(self.pid))

    def rss(self) -> int:
        return sum(rss(pid) for pid in process_tree(self.pid))

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stats(self) -> dict[str, Any]:
        """Connections and summed symbol subscriptions, for every server.

        The peers answer both in ``/ws/stats``. The gateway's ``/ws/stats`` lists clients
        a page at a time, in the spec's per-client shape, so its totals come from
        ``/ws/stats?limit=0`` (no clients listed) and ``/metrics``.
        """
        query = "?limit=0" if self.name == "gateway" else ""
        url = f"http://127.0.0.1:{self.port}/ws/stats{query}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        if self.name == "gateway":
            subscriptions = self.metric("realtime_symbol_subscriptions")
            if subscriptions is None:
                raise OSError("the gateway's /metrics has no realtime_symbol_subscriptions")
        else:
            subscriptions = body.get("symbol_subscriptions", 0)
        return {"connections": body["total_connections"], "subscriptions": int(subscriptions)}

    def connections_or_none(self, timeout: float = 0.5) -> int | None:
        """Open connections per ``/ws/stats``, or None if the server is too busy to say."""
        query = "?limit=0" if self.name == "gateway" else ""  # the total alone
        url = f"http://127.0.0.1:{self.port}/ws/stats{query}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(json.loads(response.read())["total_connections"])
        except (OSError, ValueError, KeyError):
            return None

    def metric(self, name: str) -> float | None:
        """A Prometheus sample of the gateway's ``/metrics`` (``name`` with its labels
        as written there, in name order); None for the peers."""
        if self.name != "gateway":
            return None
        url = f"http://127.0.0.1:{self.port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:  # too busy to answer: the figure is missing, not the run
            return None
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else None


class Loadgen:
    """``bench.loadgen`` processes pinned to ``LOADGEN_CPU`` (or ``cpus``; an empty
    string: not pinned); their JSON lines merged. ``process_flags[i]`` are added to
    process ``i``'s flags (later flags win: a ``--url`` there sends it elsewhere)."""

    def __init__(
        self,
        url: str,
        processes: int,
        clients: int,
        *flags: str,
        cpus: str | None = None,
        process_flags: Sequence[Sequence[str]] = (),
    ) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        self.readers: list[threading.Thread] = []
        self.lines: queue.Queue[tuple[int, dict[str, Any] | None]] = queue.Queue()
        cpus = str(LOADGEN_CPU) if cpus is None else cpus
        pin = ["taskset", "-c", cpus] if cpus else []
        per = [clients // processes + (i < clients % processes) for i in range(processes)]
        first = 0
        for index, count in enumerate(per):
            process = subprocess.Popen(
                [
                    *pin,
                    sys.executable,
                    "-m",
                    "bench.loadgen",
                    "--url",
                    url,
                    "--clients",
                    str(count),
                    "--first-index",
                    str(first),
                    *flags,
                    *(process_flags[index] if index < len(process_flags) else ()),
                ],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            first += count
            self.processes.append(process)
            reader = threading.Thread(target=self._read, args=(index, process), daemon=True)
            reader.start()
            self.readers.append(reader)

    def _read(self, index: int, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                self.lines.put((index, json.loads(line)))
            except json.JSONDecodeError:
                sys.stderr.write(line)
        self.lines.put((index, None))

    def wait_all(self, event: str, timeout: float) -> list[dict[str, Any]]:
        """The ``event`` record of every process (others are collected meanwhile)."""
        found: dict[int, dict[str, Any]] = {}
        self.seconds: list[tuple[int, dict[str, Any]]] = getattr(self, "seconds", [])
        deadline = time.monotonic() + timeout
        while len(found) < len(self.processes):
            try:
                index, record = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(
                    f"loadgen: no {event!r} from every process in {timeout} s"
                ) from None
            if record is None:
                if index not in found:
                    raise RuntimeError(f"loadgen process {index} exited before {event!r}")
                continue
            if record["event"] == "second":
                self.seconds.append((index, record))
            if record["event"] == "result" and event != "result":
                raise RuntimeError(f"loadgen process {index} ended early: {record}")
            if record["event"] == event:
                found[index] = record
        return [found[i] for i in sorted(found)]

    def send(self, line: str) -> None:
        for process in self.processes:
            assert process.stdin is not None
            try:
                process.stdin.write(line + "\n")
                process.stdin.flush()
            except BrokenPipeError:
                pass

    def close(self) -> None:
        for process in self.processes:
            kill_group(process, grace=2.0)
        for process, reader in zip(self.processes, self.readers, strict=True):
            reader.join(timeout=5)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    with suppress(OSError):
                        pipe.close()

    def __enter__(self) -> Loadgen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def running(name: str, load: Load, **kwargs: Any) -> Iterator[RunningServer]:
    server = RunningServer(name, load, **kwargs)
    with server:
        yield server


def versions() -> dict[str, str]:
    """Versions of everything measured, and of the machine."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {"python": sys.version.split()[0]}
    for package in (
        "realtime-gateway",
        "trio",
        "wsproto",
        "hypercorn",
        "trio-websocket",
        "websockets",
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "orjson",
    ):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    try:
        found["node"] = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        lock = json.loads((NODE_DIR / "package-lock.json").read_text())
        found["ws"] = lock["packages"]["node_modules/ws"]["version"]
    except (OSError, subprocess.CalledProcessError, KeyError):
        found["node"] = "not available"
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    found["machine"] = (
        f"{os.cpu_count()} CPUs ({cpu}), "
        f"{os.sysconf('SC_PHYS_PAGES') * PAGE / 2**30:.0f} GiB, {os.uname().release}"
    )
    return found
