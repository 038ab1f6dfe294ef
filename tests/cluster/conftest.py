"""Fixtures of the multi-node tests: a real redis-server per test, and real gateway
processes (``realtime feed`` and ``realtime serve --bus``) around it."""

from __future__ import annotations

import re
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

    async def start_feed(self, *args: str) -> Process:
        """``realtime feed --bus``: fast signals and ticks unless told otherwise; returns
        once its feeds run."""
        defaults = ["--tick-rate", "20", "--signal-interval", "0.05", "--seed", "7"]
        process = await trio.lowlevel.open_process(
            [*REALTIME, "feed", "--bus", self.redis.url, *defaults, *args],
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        feed = Process(process, [])
        with trio.fail_after(PROCESS_TIMEOUT):
            while not re.search("Feed prices started", feed.text):
                chunk = await process.stderr.receive_some()
                assert chunk, feed.text
                feed.log.append(bytes(chunk))
        self._keep(feed)
        return feed

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
