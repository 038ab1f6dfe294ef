"""``realtime serve --workers N``: N gateway processes sharing one port, kept running.

Theory of operation
-------------------
The *supervisor* (the process the user started) serves no connection itself. It
binds the port with ``SO_REUSEPORT`` without listening (`bind_shared`): that picks
the port when it is 0, reports a port in use before any worker starts, and keeps
the port while workers come and go, yet takes no connections. Then it starts N
*workers*, each ``python -m realtime serve`` with the supervisor's settings in its
environment (`environment`: flags and secrets stay out of the process list) and
the port fixed. A worker is an ordinary gateway node (``--bus`` is required: the
workers follow one stream through Redis, so a client may reconnect to any of them)
whose listening sockets have ``SO_REUSEPORT`` too; the kernel spreads new
connections over the workers that listen.

Each worker holds one end of a socket pair, its *link* (`WorkerLink`). It writes
one byte on it once it listens, then watches it: end of file means the supervisor
is gone (killed with SIGKILL), and the worker drains as on SIGTERM, so no worker
outlives its supervisor for long. The supervisor reads that byte to know the worker
is ready; end of file before it means the worker exited first.

Workers run in a session of their own, so a Ctrl-C in a terminal reaches the
supervisor alone, and it passes the signal on exactly once (a second signal to a
worker means "stop now", not "drain").

- At start, every worker must report ready. If one exits before, the others are
  stopped and the supervisor returns 1 (the worker has logged why).
- A worker that dies later is logged and started again after a backoff
  (:mod:`._supervisor`'s, as for feeds: 1 s doubling to 30 s, reset after a minute
  of healthy running). Its clients reconnect meanwhile, and the kernel sends them to
  the workers still listening: a socket closed by a dead process drops out.
- SIGTERM or SIGINT: every worker gets SIGTERM, drains (its clients get 1001) and
  exits; the supervisor returns 0 once all have. A second signal is passed on too.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Final

import attrs
import trio

from ._config import Config, environment
from ._server import Server, _listen_error
from ._supervisor import HEALTHY_RUN, INITIAL_BACKOFF, MAX_BACKOFF
from .ws import bind_shared

logger = logging.getLogger("realtime.workers")

#: The hidden ``realtime serve`` option that makes a process a worker: ``INDEX:FD``,
#: its number (from 1) and the file descriptor of its link.
WORKER_OPTION: Final = "--supervised-worker"
#: How a worker is started: the same interpreter, the same package.
WORKER_COMMAND: Final = (sys.executable, "-m", "realtime", "serve")
_READY: Final = b"r"


@attrs.frozen
class WorkerLink:
    """A worker's end of its link to the supervisor (see the module's docstring)."""

    #: The worker's number, from 1: its log lines and log file carry it.
    index: int
    fd: int

    @classmethod
    def parse(cls, text: str) -> WorkerLink:
        """The link that ``WORKER_OPTION``'s value ``INDEX:FD`` names; ``ValueError``
        for anything else."""
        index, separator, fd = text.partition(":")
        if not (separator and index.isdigit() and fd.isdigit()):
            raise ValueError(f"{WORKER_OPTION} takes INDEX:FD, got {text!r}")
        return cls(int(index), int(fd))

    async def serve(self, server: Server) -> None:
        """Tell the supervisor that ``server`` listens, then wait for the supervisor to
        go away and drain ``server`` when it has. Runs until then, or until cancelled
        (when the server has drained for another reason)."""
        with trio.socket.from_stdlib_socket(socket.socket(fileno=self.fd)) as link:
            try:
                await link.send(_READY)
                while await link.recv(1):
                    pass  # the supervisor writes nothing: only its end of file counts
            except OSError:
                pass  # reset: gone as well
        logger.warning("The supervisor is gone: draining")
        server.shutdown()


def worker_log_file(config: Config, index: int) -> Config:
    """``config`` for worker ``index``: its own ``--log-file``, if there is one
    (``websocket.log`` -> ``websocket.worker-1.log``). One rotating file per process:
    processes that rotate one file between them lose lines."""
    path = config.log_file
    if path is None:
        return config
    return attrs.evolve(config, log_file=path.with_name(f"{path.stem}.worker-{index}{path.suffix}"))


def _environment(config: Config) -> dict[str, str]:
    """This process's environment with ``config`` in its ``REALTIME_*`` variables.
    (A worker derives its log file from its index: `worker_log_file`.)"""
    env = dict(os.environ)
    for name, value in environment(config).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _describe(status: int) -> str:
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


class _Workers:
    """The supervisor's state: one task per worker slot keeps its worker running."""

    def __init__(self, config: Config, port: int, command: Sequence[str]) -> None:
        self._config = config
        self._port = port
        self._command = command
        self._env = _environment(attrs.evolve(config, port=port))
        self._running: dict[int, trio.Process] = {}
        self._ready: set[int] = set()
        self._draining = trio.Event()
        #: Set when a worker exited before it ever listened: which, and how.
        self.failed: str | None = None

    def stop(self) -> None:
        """Send SIGTERM to every worker and restart none from now on. Each call sends
        it again (a worker's second SIGTERM stops it without draining)."""
        self._draining.set()
        for process in self._running.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)

    async def keep(self, index: int) -> None:
        """Run worker ``index`` until the drain, starting it again after each death."""
        backoff = INITIAL_BACKOFF
        while True:
            started = trio.current_time()
            ours, theirs = socket.socketpair()
            with theirs:
                process = await trio.lowlevel.open_process(
                    [*self._command, WORKER_OPTION, f"{index}:{theirs.fileno()}"],
                    env=self._env,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
            self._running[index] = process
            if self._draining.is_set():  # stop() ran while it was being started
                process.send_signal(signal.SIGTERM)
            with trio.socket.from_stdlib_socket(ours) as link:
                try:
                    ready = await link.recv(1) == _READY
                except OSError:
                    ready = False
                if ready:
                    logger.info("Worker %d ready (pid %d)", index, process.pid)
                    self._announce(index)
                status = await process.wait()
            del self._running[index]
            if self._draining.is_set():
                log = logger.info if status in (0, -signal.SIGTERM) else logger.warning
                log("Worker %d (pid %d) %s", index, process.pid, _describe(status))
                return
            if index not in self._ready:  # never listened: a setting or Redis at start
                self.failed = (
                    f"worker {index} (pid {process.pid}) {_describe(status)} before it listened"
                )
                self.stop()
                return
            if trio.current_time() - started >= HEALTHY_RUN:
                backoff = INITIAL_BACKOFF
            logger.warning(
                "Worker %d (pid %d) %s; restarting it in %gs",
                index,
                process.pid,
                _describe(status),
                backoff,
            )
            with trio.move_on_after(backoff):
                await self._draining.wait()
            if self._draining.is_set():
                return
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _announce(self, index: int) -> None:
        first = len(self._ready) < self._config.workers
        self._ready.add(index)
        if first and len(self._ready) == self._config.workers:
            logger.info(
                "%d workers serving %s:%d (pid %d supervises them)",
                self._config.workers,
                self._config.host,
                self._port,
                os.getpid(),
            )

    async def watch_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not self._draining.is_set():
                logger.info("Received %s: draining %d workers", name, len(self._running))
            else:
                logger.warning("Received %s again: the workers stop now", name)
            self.stop()


async def run_workers(config: Config, *, command: Sequence[str] = WORKER_COMMAND) -> int:
    """Serve ``config`` with ``config.workers`` worker processes until SIGTERM or
    SIGINT has drained them all; the exit status: 0 then, 1 if the port cannot be
    bound or a worker exited before it listened. ``command`` starts one worker (it
    gets `WORKER_OPTION` and the settings in its environment).
    """
    try:
        reserved = await bind_shared(config.host, config.port)
    except OSError as exc:
        logger.error("Cannot start: %s", _listen_error(config, exc))
        return 1
    try:
        port: int = reserved[0].getsockname()[1]
        workers = _Workers(config, port, command)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(workers.watch_signals, signals)
                async with trio.open_nursery() as slots:
                    for index in range(1, config.workers + 1):
                        slots.start_soon(workers.keep, index)
                nursery.cancel_scope.cancel()  # every worker has exited
    finally:
        for sock in reserved:
            sock.close()
    if workers.failed is not None:
        logger.error("Cannot start: %s (its own error is above)", workers.failed)
        return 1
    logger.info("Every worker has exited")
    return 0
