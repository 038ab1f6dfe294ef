"""``realtime serve --workers N --bus``: real worker processes on one port, a real
redis-server and a real feed; a worker killed and restarted, all of them drained."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed

from tests.realtime.helpers import REALTIME, close_of, open_ws

from .conftest import Cluster, accepted_by, alive, worker_pids
from .subscribers import Subscriber, last_seq, until_past

TIMEOUT = 60.0
CLIENTS = 12


async def test_workers_share_the_port_and_a_killed_one_comes_back_while_its_clients_resume(
    cluster: Cluster,
) -> None:
    with trio.fail_after(TIMEOUT):
        await cluster.start_feed()
        supervisor = await cluster.start_workers(2)
        port = supervisor.port
        pids = worker_pids(supervisor)
        assert sorted(pids) == [1, 2]
        subscribers = [Subscriber(f"sub-{index}") for index in range(CLIENTS)]
        async with trio.open_nursery() as nursery:
            for subscriber in subscribers:
                await nursery.start(subscriber.run, f"ws://127.0.0.1:{port}")
            await until_past(subscribers, 0)
            # The kernel spread them: every worker holds some (all on one: 2 in 2**12).
            held = {index: accepted_by(pid, port) for index, pid in pids.items()}
            assert all(held.values()), held
            assert sum(held.values()) == CLIENTS, held

            os.kill(pids[1], signal.SIGKILL)
            killed_at = last_seq(subscribers)
            # Its clients come back (on worker 2, or on worker 1 once restarted)...
            await until_past(subscribers, killed_at + 20)
            # ...and worker 1 came back, under a new pid, logged with its backoff.
            while worker_pids(supervisor)[1] == pids[1]:
                await trio.sleep(0.05)
            restarted = worker_pids(supervisor)[1]
            nursery.cancel_scope.cancel()
        # The restarted worker takes its share of new connections.
        while not accepted_by(restarted, port):
            async with open_ws(f"ws://127.0.0.1:{port}/ws/probe") as ws:
                assert json.loads(await ws.get_message())["type"] == "welcome"
                if accepted_by(restarted, port):
                    break
    moved = [each for each in subscribers if each.reconnects]
    assert len(moved) == held[1], [each.closes for each in subscribers]
    assert all(each.closes == [1006] for each in moved)  # cut, not closed
    for subscriber in subscribers:
        subscriber.check_exactly_once()  # nothing missed, nothing twice, in order
    assert re.search(
        rf"Worker 1 \(pid {pids[1]}\) was killed by SIGKILL; restarting it in 1s", supervisor.text
    ), supervisor.text


async def test_sigterm_drains_every_worker_with_1001_and_the_supervisor_exits_0(
    cluster: Cluster, tmp_path: Path
) -> None:
    log_file = tmp_path / "logs" / "websocket.log"
    with trio.fail_after(TIMEOUT):
        supervisor = await cluster.start_workers(2, "--log-file", str(log_file))
        port = supervisor.port
        pids = worker_pids(supervisor)
        codes: list[int] = []

        async def client(name: str, task_status: trio.TaskStatus[None]) -> None:
            async with open_ws(f"ws://127.0.0.1:{port}/ws/{name}") as ws:
                assert json.loads(await ws.get_message())["type"] == "welcome"
                task_status.started()
                try:
                    while True:
                        await ws.get_message()
                except ConnectionClosed as closed:
                    codes.append(close_of(closed)[0])

        async with trio.open_nursery() as clients:
            count = 0
            # Until both workers hold some (each new connection: one chance in two).
            while not all(accepted_by(pid, port) for pid in pids.values()):
                await clients.start(client, f"client-{count}")
                count += 1
            supervisor.process.send_signal(signal.SIGTERM)
            assert await supervisor.process.wait() == 0
    assert codes == [1001] * count
    for pid in pids.values():  # gone, not left behind
        assert not alive(pid)
    text = supervisor.text
    assert "Received SIGTERM: draining 2 workers" in text, text
    for index, pid in pids.items():
        assert f"Worker {index} (pid {pid}) exited with status 0" in text, text
    assert "Every worker has exited" in text, text
    # One writer per rotating file: the supervisor's, and one of each worker's.
    assert "Every worker has exited" in log_file.read_text()
    for index in (1, 2):
        worker_log = (tmp_path / "logs" / f"websocket.worker-{index}.log").read_text()
        assert f"INFO realtime [worker {index}]: Received SIGTERM: draining" in worker_log


def test_workers_that_cannot_start_stop_the_supervisor_with_one_line() -> None:
    # Port 1 is never a Redis here: every worker exits before it listens.
    result = subprocess.run(
        [*REALTIME, "serve", "--port", "0", "--workers", "2", "--bus", "redis://127.0.0.1:1/0"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 1, result.stderr
    assert re.search(
        r"ERROR realtime.workers: Cannot start: worker \d \(pid \d+\) exited with status 1 "
        r"before it listened \(its own error is above\)",
        result.stderr,
    ), result.stderr
    assert re.search(
        r"\[worker \d\]: Cannot start: --bus \(REALTIME_BUS\): Cannot use Redis", result.stderr
    )
