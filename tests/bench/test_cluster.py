"""Smoke test of the cluster benchmark (bench/cluster.py): every scenario at a tiny
size against a real redis-server, then the report and its projection.

Checks that the processes start, that the figures come out of the scenarios in the
shape the report reads, and that every idle connection answered; never how fast
anything is. About a minute.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import cluster, cluster_report
from tests.cluster.redis_server import REDIS_SERVER

TINY = cluster.ClusterProfile(
    name="quick",
    seconds=1,
    cpu_levels=[1_000],
    redis_events_per_s=200,
    redis_extra_subscribers=2,
    latency_offered=1_000,
    latency_clients=4,
    idle_connections=40,
    idle_workers=2,
    idle_loadgens=2,
    worker_levels=[1_000],
    worker_clients=20,
)


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    if shutil.which("taskset") is None or shutil.which(REDIS_SERVER) is None:
        pytest.fail("taskset and redis-server are needed: run make redis-deps (make test does)")
    return {
        "profile": "quick",
        "command": "pytest",
        "started": "now",
        "seconds": 1.0,
        "versions": {"python": "3"},
        "scenarios": {
            "cpu": cluster.cpu_scenario(TINY),
            "redis": cluster.redis_scenario(TINY),
            "latency": cluster.latency_scenario(TINY),
            "idle": cluster.idle_scenario(TINY),
            "workers": cluster.workers_scenario(TINY),
        },
    }


def test_cpu_counts_every_process(results: dict[str, Any]) -> None:
    (level,) = results["scenarios"]["cpu"]["levels"]
    assert level["inprocess"]["delivered_per_s"] > 0
    redis = level["redis"]
    assert redis["delivered_per_s"] > 0
    assert set(redis["us_per_delivered"]) == {"node0", "feed", "redis", "together"}
    event = redis["per_event"]
    assert event["events_per_s"] > 0
    # One PUBLISH script call per batch, and its seq for every event (the two counts
    # are read a moment apart: not exactly equal).
    assert 0 < event["by_command"]["evalsha"] <= 1
    assert event["by_command"]["hincrby"] == pytest.approx(1, rel=0.2)


def test_redis_phases(results: dict[str, Any]) -> None:
    one, many = results["scenarios"]["redis"]["phases"]
    assert (one["subscribers"], many["subscribers"]) == (1, 3)
    assert one["events_per_s"] > 0
    # Per price: HINCRBY and HSET, and a share of its batch's call.
    assert one["commands"] > 2
    # Redis sends each event to every subscriber.
    assert many["net_output_bytes"] > one["net_output_bytes"]


def test_latency_on_both_nodes(results: dict[str, Any]) -> None:
    nodes = results["scenarios"]["latency"]["by_node"]
    assert len(nodes) == 2
    for node in nodes:
        assert node["delivered_per_s"] > 0
        assert node["p99_ms"] is not None


def test_idle_connections_all_answer(results: dict[str, Any]) -> None:
    idle = results["scenarios"]["idle"]
    assert idle["answered"] == idle["subscribed"] == TINY.idle_connections
    assert sum(worker["held"] for worker in idle["per_worker"]) == TINY.idle_connections
    assert len(idle["per_worker"]) == TINY.idle_workers


def test_workers(results: dict[str, Any]) -> None:
    by = results["scenarios"]["workers"]["by_workers"]
    assert set(by) == {"1", "2"}
    for entry in by.values():
        assert entry["levels"][0]["delivered_per_s"] > 0


def test_report_and_projection(results: dict[str, Any], tmp_path: Path) -> None:
    results["projection"] = cluster_report.project(results)
    projection = results["projection"]
    assert "missing" not in projection
    assert projection["first_limit"] in projection["limits_events_per_s"]
    assert projection["rows"]
    cluster_report.write(results, tmp_path)
    text = (tmp_path / "report.md").read_text()
    for heading in (
        "## Server CPU per delivered message",
        "## Redis per published event",
        "## Publish to client across nodes",
        "## Idle connections across worker processes",
        "## One worker, then two",
        "## Projection: a 10-node cluster",
    ):
        assert heading in text
    json.dumps(results)


def test_projection_needs_its_scenarios() -> None:
    assert "missing" in cluster_report.project({"scenarios": {"idle": {}}})
