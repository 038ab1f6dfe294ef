"""The cluster benchmark's report, and its projection to a 10-node cluster.

    python -m bench.cluster_report bench/results/<date>-cluster   # rewrite report.md

Every projected figure is computed here from the measured ones in ``results.json``
(:func:`project`); the assumptions are the constants below, written into the report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.report import _f

#: Nodes in the projected cluster.
NODES = 10
#: Share of one core a single-threaded process (a node, the feed, Redis) is run at
#: before it counts as full: the rest is headroom for bursts, GC and the OS.
CORE_BUDGET = 0.7
#: The Redis host's network link, bits/s: one 10 Gbit/s interface.
LINK_BITS_PER_S = 10e9
#: Event rates the projection's table is computed at (events published per second).
EVENT_RATES = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000)


def _ok(scenario: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if scenario is None or "failed" in scenario else scenario


def project(results: dict[str, Any]) -> dict[str, Any]:
    """What a ``NODES``-node cluster carries, from the ``redis`` and ``cpu`` scenarios.

    Model: every node follows every event (``ingest`` µs each, measured on a node
    without clients) and spends ``fanout`` µs per message it delivers (bounded by the
    in-process gateway's CPU per delivered message, see below); Redis spends
    ``a + b * s`` µs per event with ``s`` pub/sub subscribers (a line through the
    redis scenario's two phases), and sends ``c + d * s`` bytes. Returns
    ``{"missing": why}`` without both scenarios.
    """
    redis = _ok(results["scenarios"].get("redis"))
    cpu = _ok(results["scenarios"].get("cpu"))
    if redis is None or cpu is None or len(redis["phases"]) < 2:
        return {"missing": "needs the redis and cpu scenarios"}
    one, many = redis["phases"][0], redis["phases"][-1]
    if not one.get("events_per_s") or not many.get("events_per_s"):
        return {"missing": "the redis scenario published no events"}
    extra = many["subscribers"] - one["subscribers"]
    slope = (many["cpu_us"]["redis"] - one["cpu_us"]["redis"]) / extra
    base = one["cpu_us"]["redis"] - slope * one["subscribers"]
    bytes_slope = (many["net_output_bytes"] - one["net_output_bytes"]) / extra
    bytes_base = one["net_output_bytes"] - bytes_slope * one["subscribers"]
    ingest = one["cpu_us"]["node0"]
    feed = one["cpu_us"]["feed"]
    # The level nearest the rate the ingest was measured at (batches grow with the
    # rate, so a node's cost per event falls as it rises).
    levels = [lv for lv in cpu["levels"] if lv["redis"]["sustained"]] or cpu["levels"]
    chosen = min(
        levels,
        key=lambda lv: abs(lv["redis"]["per_event"]["events_per_s"] - one["events_per_s"]),
    )
    # A node's fan-out is the single gateway's code (the hub's prepared frames, the
    # delivery's writes), so the in-process gateway's whole CPU per delivered message at
    # that level, its own feed and encoding included, bounds it from above. The node's
    # CPU less its ingest would be the direct figure, but it is the difference of two
    # close numbers from two runs: too noisy to divide by.
    fanout = chosen["inprocess"]["server_us_per_message"]
    redis_us = base + slope * NODES
    out_bytes = bytes_base + bytes_slope * NODES
    redis_limit = _full_at(CORE_BUDGET * 1e6, redis_us)
    limits: dict[str, float | None] = {
        "Redis CPU": redis_limit,
        "the feed process": _full_at(CORE_BUDGET * 1e6, feed),
        "every node's ingest": _full_at(CORE_BUDGET * 1e6, ingest),
        "Redis's network link": _full_at(LINK_BITS_PER_S / 8, out_bytes),
    }
    first = min((k for k, v in limits.items() if v), key=lambda k: limits[k] or 0)

    def per_node(rate: float) -> float | None:
        spare = CORE_BUDGET - rate * ingest / 1e6
        return spare / fanout * 1e6 if spare > 0 else None

    # The table stops at the first rate past one Redis's limit: beyond, one Redis is
    # not the design any more.
    last = min(
        [r for r in EVENT_RATES if redis_limit is not None and r > redis_limit],
        default=EVENT_RATES[-1],
    )
    rates = {*EVENT_RATES, *(round(v) for v in limits.values() if v)}
    rows = []
    for rate in sorted(r for r in rates if r <= last):
        node = per_node(rate)
        rows.append(
            {
                "events_per_s": rate,
                "redis_cores": rate * redis_us / 1e6,
                "redis_mbit_s": rate * out_bytes * 8 / 1e6,
                "feed_cores": rate * feed / 1e6,
                "node_ingest_cores": rate * ingest / 1e6,
                "per_node_deliveries": node,
                "cluster_deliveries": node * NODES if node else None,
                "within": all(v is None or rate <= v for v in limits.values()),
            }
        )
    return {
        "inputs": {
            "redis_us_per_event_base": base,
            "redis_us_per_subscriber": slope,
            "redis_us_per_event_at_nodes": redis_us,
            "redis_bytes_out_per_event_at_nodes": out_bytes,
            "feed_us_per_event": feed,
            "node_ingest_us_per_event": ingest,
            "node_fanout_us_per_delivered": fanout,
            "fanout_measured_at_offered": chosen["offered_per_s"],
            "commands_per_event": one["commands"],
        },
        "limits_events_per_s": limits,
        "first_limit": first,
        "rows": rows,
    }


def _full_at(budget: float, cost: float) -> float | None:
    """The events/s at which ``cost`` per event fills ``budget``; None for a cost too
    small to measure (a short window's CPU, read in clock ticks, can be 0)."""
    return budget / cost if cost > 0 else None


def write(results: dict[str, Any], out: Path) -> None:
    quick = results["profile"] == "quick"
    lines = ["# Cluster benchmark" + (" — QUICK SMOKE RUN" if quick else ""), ""]
    if quick:
        lines += [
            "> **Smoke run of `python -m bench.cluster --quick`, not the figures to quote.** "
            "Short windows, small sizes; on a shared machine the numbers are noisy.",
            "",
        ]
    lines += [
        f"Started {results['started']}, took {results.get('seconds', 0):.0f} s. "
        f"Command: `{results['command']}`.",
        "",
        "**What runs where.** *cpu*, *redis* and *latency*: every server process (the "
        "in-process gateway; or redis-server, `realtime feed` and the nodes) on CPU 0, "
        "the load generators (and the redis scenario's stand-in subscribers) on CPU 1, as "
        "`bench.run`. So the Redis setup's processes share one core, as the in-process "
        "gateway has one. *idle* and *workers*: nothing pinned: the workers, the feed, "
        "Redis and the load generators share both cores, so the load generators compete "
        "with the workers they measure.",
        "",
        "CPU from /proc (utime + stime) over the measured window; Redis's commands and "
        "bytes from `INFO` (commands a script runs count too). An *event* is one event "
        "Redis numbered (one seq). The feed sends them in batches, what queued while its "
        "previous call was in flight: one script call and one `PUBLISH` per batch, so "
        "`evalsha` and `publish` per event are one over the batch's size.",
        "",
        "| | |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in results["versions"].items()],
        "",
    ]
    scenarios = results["scenarios"]
    for name, section in (
        ("cpu", _cpu),
        ("redis", _redis),
        ("latency", _latency),
        ("idle", _idle),
        ("workers", _workers),
    ):
        if name not in scenarios:
            continue
        if "failed" in scenarios[name]:
            lines += [f"## {name}: FAILED", "", f"`{scenarios[name]['failed']}`", ""]
            continue
        lines += section(scenarios[name], results)
    lines += _projection(results.get("projection") or project(results))
    lines += ["Raw figures: `results.json`.", ""]
    (out / "report.md").write_text("\n".join(lines))


def _cpu(scenario: dict[str, Any], results: dict[str, Any]) -> list[str]:
    lines = [
        "## Server CPU per delivered message: Redis in the path vs the in-process bus",
        "",
        "S1's load: 100 clients, 10 of 100 symbols each (10 subscribers per symbol). "
        "In-process: `realtime serve` with its price feed. Redis: `realtime feed` + "
        "redis-server + one node (`serve --bus`) holding the same 100 clients. "
        "µs of server CPU per delivered message, each process and together.",
        "",
        "| offered/s | bus | delivered/s | p50 ms | p99 ms | node / gateway | feed | "
        "redis-server | together | x in-process | loadgen CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for level in scenario["levels"]:
        ours, theirs = level["inprocess"], level["redis"]
        us = theirs["us_per_delivered"]
        base = ours["server_us_per_message"]
        ratio = us["together"] / base if base else None
        lines.append(
            f"| {level['offered_per_s']:,} | in-process | {ours['delivered_per_s']:,.0f}"
            f"{_unsustained(ours)} | {_f(ours['p50_ms'])} | {_f(ours['p99_ms'])} | "
            f"{_f(base)} | | | {_f(base)} | 1 | {ours['loadgen_cpu']:.2f} |"
        )
        lines.append(
            f"| | Redis | {theirs['delivered_per_s']:,.0f}{_unsustained(theirs)} | "
            f"{_f(theirs['p50_ms'])} | {_f(theirs['p99_ms'])} | {_f(us['node0'])} | "
            f"{_f(us['feed'])} | {_f(us['redis'])} | {_f(us['together'])} | "
            f"{_f(ratio)} | {theirs['loadgen_cpu']:.2f} |"
        )
    lines += [
        "",
        "Per published event in the Redis setup (the same windows):",
        "",
        "| offered/s | events/s | node µs | feed µs | redis-server µs | Redis commands |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for level in scenario["levels"]:
        event = level["redis"]["per_event"]
        cpu = event.get("cpu_us", {})
        lines.append(
            f"| {level['offered_per_s']:,} | {event['events_per_s']:,.0f} | "
            f"{_f(cpu.get('node0'))} | {_f(cpu.get('feed'))} | {_f(cpu.get('redis'))} | "
            f"{_f(event.get('commands'))} |"
        )
    lines += [
        "",
        "Levels marked ✗ were not sustained (< 95% delivered or p99 ≥ 100 ms): their "
        "figures are not capacity.",
        "",
    ]
    return lines


def _unsustained(result: dict[str, Any]) -> str:
    return "" if result.get("sustained", True) else " ✗"


def _redis(scenario: dict[str, Any], results: dict[str, Any]) -> list[str]:
    lines = [
        "## Redis per published event",
        "",
        "No WebSocket clients: `realtime feed` publishes prices at a fixed rate, one node "
        "follows. Second phase: redis-cli `SUBSCRIBE` processes join the events channel "
        "(on CPU 1), so Redis sends every event to as many subscribers as a cluster of "
        "that many nodes. The node's figure is what following costs a node per event, "
        "whatever its clients.",
        "",
        "| pub/sub subscribers | events/s | redis-server µs | feed µs | node µs (no clients) | "
        "Redis commands | bytes out | bytes in |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for phase in scenario["phases"]:
        cpu = phase.get("cpu_us", {})
        lines.append(
            f"| {phase['subscribers']} | {phase['events_per_s']:,.0f} | {_f(cpu.get('redis'))} | "
            f"{_f(cpu.get('feed'))} | {_f(cpu.get('node0'))} | {_f(phase.get('commands'))} | "
            f"{_f(phase.get('net_output_bytes'), 0)} | {_f(phase.get('net_input_bytes'), 0)} |"
        )
    first = scenario["phases"][0].get("by_command", {})
    lines += [
        "",
        "Commands per event, by command (one subscriber): "
        + ", ".join(f"`{k}` {v:g}" for k, v in sorted(first.items(), key=lambda kv: -kv[1])),
        "",
        "The feed's `PUBLISH` script runs once per batch: `evalsha` (the call), `GET` of "
        "the feed lock (fencing), of the lane (a retry's check) and of the epoch, `TIME`, "
        "`PUBLISH` (the whole batch, one message) and `SET` of the lane; and per event "
        "`HINCRBY` (seq) and `HSET` (the last price). The rest is the nodes' and the "
        "feed's own traffic (`PING` probes, reports, lock renewals).",
        "",
    ]
    return lines


def _latency(scenario: dict[str, Any], results: dict[str, Any]) -> list[str]:
    lines = [
        "## Publish to client across nodes",
        "",
        f"`realtime feed` publishes S1's load at {scenario['offered_per_s']:,} messages/s "
        f"offered; {scenario['clients']} clients, half on each of two nodes (all on CPU 0 "
        "with Redis and the feed). Latency: the kernel's receive stamp of the client's "
        "socket minus the publish stamp the feed put in the message: feed → Redis → node "
        "→ client.",
        "",
        "| node | delivered/s | p50 ms | p99 ms | samples |",
        "| --- | --- | --- | --- | --- |",
    ]
    for index, node in enumerate(scenario["by_node"]):
        lines.append(
            f"| {index + 1} | {node['delivered_per_s']:,.0f} | {_f(node['p50_ms'])} | "
            f"{_f(node['p99_ms'])} | {node['samples']:,} |"
        )
    lines.append(
        f"| both | {scenario['delivered_per_s']:,.0f} | {_f(scenario['p50_ms'])} | "
        f"{_f(scenario['p99_ms'])} | {scenario['samples']:,} |"
    )
    cpu = _ok(results["scenarios"].get("cpu"))
    same = [
        lv
        for lv in (cpu or {}).get("levels", [])
        if lv["offered_per_s"] == scenario["offered_per_s"]
    ]
    if same:
        inprocess = same[0]["inprocess"]
        lines += [
            "",
            "In-process gateway at the same load (cpu scenario): p50 "
            f"{_f(inprocess['p50_ms'])} ms, p99 {_f(inprocess['p99_ms'])} ms.",
        ]
    lines.append("")
    return lines


def _idle(scenario: dict[str, Any], results: dict[str, Any]) -> list[str]:
    workers = scenario["per_worker"]
    lines = [
        "## Idle connections across worker processes",
        "",
        f"`realtime serve --bus … --workers {scenario['workers']}`, no feed; "
        f"{scenario['loadgen_processes']} load generator processes (trio-websocket), each "
        "connecting from its own loopback address (127.0.0.2, 127.0.0.3, …: one source "
        "address has about 28,000 ephemeral ports towards one server port). Each connection "
        "subscribes to 10 symbols, then all are held; at the end every one sends a `ping` "
        "and counts only if its `pong` came back. KiB per connection: growth of the "
        "workers' summed RSS divided by the connections that answered.",
        "",
        "| connections | subscribed | answered a ping | connect + subscribe s | "
        "KiB / conn | workers' RSS before → after MiB | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {scenario['connections']:,} | {scenario['subscribed']:,} | "
        f"{scenario['answered']:,} | {scenario['connect_subscribe_seconds']:.1f} | "
        f"{scenario['kib_per_connection']:.1f} | {scenario['rss_workers_before_mib']:.0f} → "
        f"{scenario['rss_workers_after_mib']:.0f} | {scenario['errors'] or '-'} |",
        "",
        "| worker | connections held | RSS before → after MiB | open files limit |",
        "| --- | --- | --- | --- |",
    ]
    for index, worker in enumerate(workers):
        lines.append(
            f"| {index + 1} | {worker['held']:,} | {worker['rss_before_mib']:.0f} → "
            f"{worker['rss_after_mib']:.0f} | {worker['open_files_limit']:,} |"
        )
    lines.append("")
    return lines


def _workers(scenario: dict[str, Any], results: dict[str, Any]) -> list[str]:
    by = scenario["by_workers"]
    lines = [
        "## One worker, then two",
        "",
        f"`realtime serve --bus … --workers N` with `realtime feed` and Redis; clients "
        f"subscribed so that each symbol has {scenario['subscribers_per_symbol']} "
        "subscribers (a wide fan-out, so that the workers, not the feed, do most of the "
        "work), in ticks of 10 events; the offered load ramps until a level is not "
        "sustained. **Nothing is "
        "pinned and this machine has 2 cores**: the workers, the feed, Redis and the load "
        "generators share them. Two workers can therefore not double: the load generators "
        "need a large share of a core at these rates (their CPU is in the table), and "
        "every worker follows every event.",
        "",
        "| workers | offered/s | delivered/s | p99 ms | workers' CPU | feed | redis | loadgen |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for count, entry in by.items():
        for level in entry["levels"]:
            cpu = level["cpu"]
            lines.append(
                f"| {count} | {level['offered_per_s']:,} | {level['delivered_per_s']:,.0f}"
                f"{_unsustained(level)} | {_f(level['p99_ms'])} | {cpu['node0']:.2f} | "
                f"{cpu['feed']:.2f} | {cpu['redis']:.2f} | {level['loadgen_cpu']:.2f} |"
            )
    one, two = by["1"]["max_sustained_per_s"], by["2"]["max_sustained_per_s"]
    growth = f"x{two / one:.2f}" if one else "-"
    lines += [
        "",
        f"Highest sustained: {one:,}/s with one worker, {two:,}/s with two ({growth}). "
        "A level ramp reports the last level sustained, so the true ratio lies within "
        "one step of it.",
        "",
    ]
    return lines


def _projection(projection: dict[str, Any]) -> list[str]:
    lines = ["## Projection: a 10-node cluster", ""]
    if "missing" in projection:
        return [*lines, f"Not computed: {projection['missing']}.", ""]
    i, limits = projection["inputs"], projection["limits_events_per_s"]
    lines += [
        "Computed from the figures above (`cluster_report.project`), with these assumptions:",
        "",
        f"- {NODES} nodes, each one process on a core of this machine's speed; clients "
        "spread evenly; every node follows every event (as the code does: one events "
        "channel).",
        f"- A process is full at {CORE_BUDGET:.0%} of its core (headroom for bursts, GC, "
        "the OS). Redis is single-threaded for commands: one core.",
        f"- Redis's network link: {LINK_BITS_PER_S / 1e9:g} Gbit/s.",
        "- Per-event costs measured at the redis scenario's rate hold at other rates "
        "(the feed's batches grow with the rate, what queues during one call, and the "
        "kernel and Redis batch too, so costs per event fall as the rate rises: the "
        "projection errs on the safe side).",
        "",
        "Inputs (measured):",
        "",
        f"- Redis: {_f(i['redis_us_per_event_base'])} µs per event + "
        f"{_f(i['redis_us_per_subscriber'])} µs per subscribed node → "
        f"{_f(i['redis_us_per_event_at_nodes'])} µs per event with {NODES} nodes; "
        f"{_f(i['redis_bytes_out_per_event_at_nodes'], 0)} bytes out per event; "
        f"{_f(i['commands_per_event'])} commands per event.",
        f"- The feed: {_f(i['feed_us_per_event'])} µs per event (one process, one round "
        "trip per batch).",
        f"- A node: {_f(i['node_ingest_us_per_event'])} µs per event it follows, and "
        f"{_f(i['node_fanout_us_per_delivered'])} µs per message it delivers: the "
        f"in-process gateway's CPU per delivered message at {i['fanout_measured_at_offered']:,}/s "
        "(the same fan-out and writes, with its own feed and encoding: an upper bound).",
        "",
        "Where each piece is full (events/s):",
        "",
        "| piece | events/s |",
        "| --- | --- |",
        *[f"| {k} | {_f(v, 0)} |" for k, v in limits.items()],
        "",
        "| events/s | Redis cores | Redis Mbit/s out | feed cores | each node's ingest, "
        "cores | deliveries/s per node | deliveries/s, cluster | within every limit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in projection["rows"]:
        lines.append(
            f"| {row['events_per_s']:,} | {row['redis_cores']:.2f} | "
            f"{row['redis_mbit_s']:,.0f} | {row['feed_cores']:.2f} | "
            f"{row['node_ingest_cores']:.2f} | {_f(row['per_node_deliveries'], 0)} | "
            f"{_f(row['cluster_deliveries'], 0)} | {'yes' if row['within'] else 'no'} |"
        )
    redis_limit = limits["Redis CPU"]
    lines += [
        "",
        f"**The first limit is {projection['first_limit']}** at "
        f"{_f(limits[projection['first_limit']], 0)} events/s. One Redis is full at "
        f"{_f(redis_limit, 0)} events/s ({NODES} nodes subscribed, at {CORE_BUDGET:.0%} of "
        "its core). Adding nodes adds delivery capacity (clients) but not event capacity: "
        "every node and Redis pay for every event.",
        "",
        "What to do at that point:",
        "",
        "- *The feed* first, if it is the limit: it sends a batch per round trip already; "
        "running one feed per group of symbols divides it.",
        "- *Shard by channel or symbol*: N Redis instances (or N Redis Cluster slots: "
        "today every key carries the one hash tag `{realtime}`, so Redis Cluster would put "
        "them all on one shard; a tag per shard, e.g. `{realtime:prices:3}`, spreads "
        "them), each with its own seq, history and events channel, and nodes subscribe "
        "only to the shards their clients want. That divides both Redis's load and each "
        "node's ingest.",
        "- Replicas do not help the write path (every event is a write on the primary), "
        "but can serve the catch-up reads.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("directory")
    out = Path(parser.parse_args().directory)
    results = json.loads((out / "results.json").read_text())
    results["projection"] = project(results)
    write(results, out)


if __name__ == "__main__":
    main()
