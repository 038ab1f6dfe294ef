"""Smoke test of the benchmark harness: every server, a handful of clients, a second.

Checks that the harness starts each server, that the load generator parses what it
sends and that the figures come out; never how fast anything is (speed targets live
in bench/, not in timed unit tests). About 10-15 s in all.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import report, scenarios
from bench.servers import NODE_DIR, SERVERS, Load, RunningServer


def available(name: str) -> bool:
    if shutil.which("taskset") is None:
        return False
    if name == "node-ws":
        return shutil.which("node") is not None and (NODE_DIR / "node_modules" / "ws").exists()
    module = {"websockets": "websockets", "fastapi": "fastapi"}.get(name)
    return module is None or importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("name", list(SERVERS))
def test_stream_figures(name: str) -> None:
    if not available(name):
        pytest.fail(f"{name} is not installed: run make bench-peers (make test does)")
    profile = scenarios.Profile(**{**scenarios.QUICK.__dict__})
    with RunningServer(name, Load(symbols=20, tick_rate=20, updates_per_tick=20)) as server:
        result = scenarios.measure_stream(
            server, 4, 1, profile, symbols_per_client=5, stuck=True, warmup=0.2
        )
        stats = server.stats()
    assert result["clients"] == 4
    assert result["delivered_per_s"] > 0
    assert result["samples"] > 0
    assert result["p50_ms"] is not None
    assert result["p99_ms"] is not None
    assert result["server_us_per_message"] is not None
    assert result["loadgen_cpu"] is not None
    assert len(result["rss_series_mib"]) == 1
    assert result["stuck"]["result"]["final_state"]
    assert stats["connections"] >= 0
    json.dumps(result)  # the raw JSON of the report


def test_report_from_results(tmp_path: Path) -> None:
    level = {
        "offered_per_s": 1000,
        "delivered_per_s": 1000.0,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "max_ms": 3.0,
        "server_cpu": 0.1,
        "server_us_per_message": 100.0,
        "loadgen_cpu": 0.1,
        "loadgen_bound": False,
        "sustained": True,
    }
    s1 = {"levels": [level], "max_sustained_per_s": 1000, "us_per_message": 1.5}
    s1["lower_bound"] = False
    results: dict[str, Any] = {
        "profile": "quick",
        "command": "python -m bench.run --quick",
        "started": "now",
        "seconds": 1.0,
        "versions": {"python": "3"},
        "fd_limit": 1024,
        "client": "raw",
        "scenarios": {
            "s1": {
                "gateway": {"runs": [s1]},
                "websockets": {"runs": [{**s1, "us_per_message": 4.0}]},
                "node-ws": {"runs": [{**s1, "us_per_message": 3.0}]},
            }
        },
    }
    results["targets"] = report.targets(results)
    assert results["targets"][0]["met"] is True
    report.write(results, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "QUICK SMOKE RUN" in text
    assert "| S1 |" in text
    assert (tmp_path / "s1-latency-vs-load.png").stat().st_size > 0


def test_top_frames(tmp_path: Path) -> None:
    path = tmp_path / "profile.txt"
    path.write_text("main;serve;send_all 30\nmain;serve;encode 10\n")
    text = report.top_frames(path)
    assert "40 samples" in text
    assert " 75.0  send_all" in text
