"""A resume that outruns its node, on real nodes and a real Redis: the client names
a ``since`` the node has not received yet (as a client cut from a node that was
ahead would), and the node waits for it, within ``--resume-wait``."""

from __future__ import annotations

import trio

from protocol import Channel
from tests.realtime.helpers import Client

from .conftest import Cluster, Process
from .test_cluster import connect
from .test_cluster_faults import alert
from .test_redis_bus import publisher

TIMEOUT = 30.0  # a hang guard for processes on a busy machine; nothing is timed


async def position(node: Process, client_id: str) -> tuple[int, str]:
    """The node's position on alerts (a plain subscribe's ack) and its epoch."""
    async with connect(node, client_id) as client:
        ack = await client.request({"type": "subscribe", "channel": "alerts"}, "subscribed")
        return ack["seq"], client.welcome["epoch"]


async def resume(client: Client, since: int, epoch: str) -> None:
    await client.send({"type": "subscribe", "channel": "alerts", "since": since, "epoch": epoch})


async def test_a_resume_ahead_of_the_node_is_answered_once_the_node_gets_there(
    cluster: Cluster,
) -> None:
    redis = cluster.redis
    with trio.fail_after(TIMEOUT):
        # A bound far above any delay of this machine: what is tested is the wait, not
        # how long it may last (tests/realtime/test_resume_wait.py tests the bound).
        node = await cluster.start_node("--resume-wait", "60")
        async with publisher(redis.url) as (feed, _):
            for number in (1, 2, 3):
                await feed.publish(Channel.ALERTS, alert(number))
            while (await position(node, "probe"))[0] < 3:
                await trio.sleep(0.02)
            _, epoch = await position(node, "probe")
            async with connect(node, "resumer") as client:
                await resume(client, 4, epoch)  # as if another node had delivered 4
                await node.logged(r"Client resumer resumes alerts after seq 4, which this node")
                for number in (4, 5):
                    await feed.publish(Channel.ALERTS, alert(number))
                messages = await client.collect_until(
                    lambda kept: bool(kept) and kept[-1]["type"] == "alert_triggered",
                    lambda message: message["type"] != "notification",
                )
    assert [(m["type"], m["seq"]) for m in messages] == [
        ("subscribed", 4),
        ("alert_triggered", 5),
    ]


async def test_a_resume_the_node_does_not_reach_within_the_bound_is_refused(
    cluster: Cluster,
) -> None:
    with trio.fail_after(TIMEOUT):
        node = await cluster.start_node("--resume-wait", "0.2")
        since, epoch = await position(node, "probe")
        async with connect(node, "resumer") as client:
            await resume(client, since + 1, epoch)  # nothing is published: never reached
            reply = await client.next("subscribed", "error")
    assert reply["code"] == "history_unavailable"
    assert reply["error"].startswith(
        f"This server has not received seq {since + 1} of 'alerts' yet (it is at {since}; "
        "resumes wait at most 0.2 s for it)"
    )
