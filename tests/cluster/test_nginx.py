"""The spec's load-balancing config (deploy/nginx/spec-load-balancing.conf) in real
nginx, in front of three real nodes on a real Redis: clients connect through nginx,
their node is killed, and they resume through nginx on another node."""

from __future__ import annotations

import json
import os
import signal
from functools import partial
from pathlib import Path

import trio

from tests.deploy.nginx import Certificates, adapt, running_nginx
from tests.realtime.helpers import http_get

from .conftest import Cluster, Process
from .subscribers import Subscriber, last_seq, until_past

TIMEOUT = 60.0
CLIENTS = 6


async def connections(node: Process) -> int:
    status, body = await http_get(node.port, "/ws/stats")
    assert status == 200
    count: int = json.loads(body)["total_connections"]
    return count


async def test_clients_of_a_killed_node_resume_through_nginx_on_another(
    cluster: Cluster, tmp_path: Path
) -> None:
    certificates = Certificates(tmp_path / "tls")
    with trio.fail_after(TIMEOUT):
        await cluster.start_feed()
        nodes = [await cluster.start_node("--forwarded-allow-ips", "127.0.0.1") for _ in range(3)]

        def site(ports: list[int]) -> str:
            return adapt(
                "spec-load-balancing.conf",
                {
                    "listen 443 ssl;": f"listen 127.0.0.1:{ports[0]} ssl;",
                    **{f"backend{i + 1}:8000": f"127.0.0.1:{n.port}" for i, n in enumerate(nodes)},
                    **certificates.replacements(
                        "/etc/ssl/certs/api.yourdomain.com.pem",
                        "/etc/ssl/private/api.yourdomain.com.key",
                    ),
                },
            )

        with running_nginx(tmp_path / "nginx", site) as nginx:
            url = f"wss://127.0.0.1:{nginx.ports[0]}"
            subscribers = [Subscriber(f"sub-{index}") for index in range(CLIENTS)]
            async with trio.open_nursery() as nursery:
                for subscriber in subscribers:
                    await nursery.start(
                        partial(subscriber.run, url, ssl_context=certificates.client_context())
                    )
                await until_past(subscribers, 0)
                # ip_hash: one client address, one node.
                counts = [await connections(node) for node in nodes]
                assert sorted(counts) == [0, 0, CLIENTS], counts
                victim = nodes[counts.index(CLIENTS)]
                os.kill(victim.process.pid, signal.SIGKILL)
                killed_at = last_seq(subscribers)
                await until_past(subscribers, killed_at + 20)
                # nginx found the node gone and tried another.
                assert "connect() failed (111: Connection refused)" in nginx.error_log
                survivors = [node for node in nodes if node is not victim]
                counts = [await connections(node) for node in survivors]
                nursery.cancel_scope.cancel()
    assert sorted(counts) == [0, CLIENTS], counts  # all moved, together
    for subscriber in subscribers:
        assert subscriber.closes == [1006], subscriber  # cut, not closed
        assert subscriber.reconnects >= 1
        subscriber.check_exactly_once()  # nothing missed, nothing twice, in order
