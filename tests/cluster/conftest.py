"""Fixtures of the multi-node tests: a real redis-server per test, and real gateway
processes (``realtime feed`` and ``realtime serve --bus``) around it."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import pytest
import trio

from tests.realtime.helpers import REALTIME, drain_log, start_process

from .redis_server import RedisServer

#: Seconds a process may take to start, or to stop once told.
PROCESS_TIMEOUT = 30.0

#: For tests whose Redis goes away under a client in the test's own process. coredis
#: 6.9 creates a connection's memory streams before it connects, and closes them only
#: once connected: each refused connection leaves six unclosed streams that warn when
#: collected (a ResourceWarning; nothing else is held, and Python ignores it outside
#: tests). With ``collected``, they are collected within the test that made them.
REFUSED_CONNECTIONS = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function MemoryObject:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture
def collected() -> Iterator[None]:
    """Collect garbage at the end of the test, so that what its own refused
    connections left behind warns there (see :data:`REFUSED_CONNECTIONS`)."""
    yield
    gc.collect()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh ``redis-server`` on a free port of 127.0.0.1, stopped after the test."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@attrs.define
class Process:
    """A gateway process: its port (nodes only) and its log so far."""

    process: trio.Process
    log: list[bytes]
    port: int = 0

    @property
    def text(self) -> str:
        return b"".join(self.log).decode(errors="replace")

    async def logged(self, pattern: str) -> None:
        """Wait until the log says ``pattern`` (a regular expression); the caller's
        ``fail_after`` bounds it."""
        while not re.search(pattern, self.text):
            await trio.sleep(0.02)


@attrs.define
class Cluster:
    """Starts feed and node processes on one Redis; the fixture ends them all."""

    redis: RedisServer
    nursery: trio.Nursery
    processes: list[Process] = attrs.Factory(list)

    async def start_node(self, *args: str) -> Process:
        """``realtime serve --bus`` on a free port; returns once it listens."""
        with trio.fail_after(PROCESS_TIMEOUT):
            process, port, log = await start_process("--bus", self.redis.url, *args)
        node = Process(process, log, port)
        self._keep(node)
        return node

    async def start_feed(self, *args: str, until: str = "Feed prices started") -> Process:
        """``realtime feed --bus``: fast signals and ticks unless told otherwise; returns
        once its log says ``until`` (a regular expression): by default, once its feeds
        run."""
        defaults = ["--tick-rate", "20", "--signal-interval", "0.05", "--seed", "7"]
        process = await trio.lowlevel.open_process(
            [*REALTIME, "feed", "--bus", self.redis.url, *defaults, *args],
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        feed = Process(process, [])
        with trio.fail_after(PROCESS_TIMEOUT):
            while not re.search(until, feed.text):
                chunk = await process.stderr.receive_some()
                assert chunk, feed.text
                feed.log.append(bytes(chunk))
        self._keep(feed)
        return feed

    async def start_workers(self, count: int, *args: str) -> Process:
        """``realtime serve --bus --workers COUNT`` on a free port; returns once every
        worker listens. ``worker_pids`` reads the log for the pids."""
        process = await trio.lowlevel.open_process(
            [
                *REALTIME,
                "serve",
                "--port",
                "0",
                "--bus",
                self.redis.url,
                "--workers",
                str(count),
                *args,
            ],
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        supervisor = Process(process, [])
        with trio.fail_after(PROCESS_TIMEOUT):
            pattern = rf"{count} workers serving 127\.0\.0\.1:(\d+)"
            while (match := re.search(pattern, supervisor.text)) is None:
                chunk = await process.stderr.receive_some()
                assert chunk, supervisor.text
                supervisor.log.append(bytes(chunk))
        supervisor.port = int(match[1])
        self._keep(supervisor)
        return supervisor

    def _keep(self, process: Process) -> None:
        self.processes.append(process)
        self.nursery.start_soon(drain_log, process.process, process.log)

    async def stop(self) -> None:
        """SIGTERM every process still running, and wait (SIGKILL past the timeout)."""
        for each in self.processes:
            if each.process.returncode is None:
                each.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(PROCESS_TIMEOUT, shield=True):
            for each in self.processes:
                await each.process.wait()
        for each in self.processes:
            if each.process.returncode is None:
                each.process.kill()


@pytest.fixture
async def cluster(redis_server: RedisServer, nursery: trio.Nursery) -> AsyncIterator[Cluster]:
    """Processes on ``redis_server``: ``await cluster.start_feed()``, ``start_node()``."""
    cluster = Cluster(redis_server, nursery)
    try:
        yield cluster
    finally:
        await cluster.stop()


def worker_pids(supervisor: Process) -> dict[int, int]:
    """Each worker's number and its latest pid, from the supervisor's log."""
    return {
        int(index): int(pid)
        for index, pid in re.findall(r"Worker (\d+) ready \(pid (\d+)\)", supervisor.text)
    }


def accepted_by(pid: int, port: int) -> int:
    """How many TCP connections process ``pid`` holds, accepted on ``port``: the
    established sockets of that local port, matched by inode against the process's
    file descriptors."""
    sockets = {f"socket:[{inode}]" for inode in _established_inodes(port)}
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/{pid}/fd/{fd}") in sockets
    return count


def _established_inodes(port: int) -> set[str]:
    """The inodes of the established TCP sockets whose local port is ``port``: from
    ``ss`` (iproute2), filtered in the kernel, where it is installed; else from
    /proc/net/tcp, which takes seconds to read while thousands of sockets linger
    from earlier tests."""
    if shutil.which("ss") is not None:
        listing = subprocess.run(
            ["ss", "-Htne", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return set(re.findall(r"\bino:(\d+)", listing))
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)  # the header
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    return inodes


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts: its parent has not waited)."""
    return os.path.exists(f"/proc/{pid}")
