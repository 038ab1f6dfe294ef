"""The cluster benchmark: the gateway on Redis, next to the in-process bus.

    python -m bench.cluster                  # full, bench/results/<date>-cluster/
    python -m bench.cluster --quick          # about a minute, <date>-cluster-quick/
    python -m bench.cluster --scenarios cpu,redis --out /tmp/x

Scenarios (docs/benchmarks.md, "The cluster"):

* ``cpu`` — S1's load (100 clients, 10 of 100 symbols each) on the in-process gateway,
  then on Redis: ``realtime feed`` + redis-server + one node holding the same clients.
  Server CPU per delivered message of each process, and together.
* ``redis`` — no clients, a fixed event rate: what Redis, the feed and a following
  node spend per event, and Redis's commands per event, with one node subscribed and
  then with as many pub/sub subscribers as a 10-node cluster has.
* ``latency`` — publish (the feed) to client across two nodes, clients on both.
* ``idle`` — idle connections held by ``serve --workers N`` from several load
  generator processes, each from its own loopback address; every one must answer a
  ping; KiB per connection from the workers' summed RSS.
* ``workers`` — the highest sustained rate of one worker, then two, on this machine.

Pinning: ``cpu``, ``redis`` and ``latency`` run every server process (gateway, nodes,
feed, redis-server) on CPU 0 and the load on CPU 1, as bench.run does. ``idle`` and
``workers`` pin nothing: with two cores, two workers and the load share them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from bench import cluster_report, scenarios
from bench.report import _f
from bench.run import check_environment, unwind
from bench.scenarios import P99_LIMIT, SUBSCRIBERS_PER_SYMBOL_S1, measure_stream, say
from bench.servers import (
    LOADGEN_CPU,
    ROOT,
    SERVER_CPU,
    Load,
    Loadgen,
    RunningServer,
    cpu_seconds,
    kill_group,
    process_tree,
    raise_fd_limit,
    rss,
    versions,
)
from realtime._redis_bus import SEQ_KEY, events_channel
from tests.cluster.conftest import accepted_by
from tests.cluster.redis_server import REDIS_SERVER, RedisServer

SCENARIOS = ("cpu", "redis", "latency", "idle", "workers")
SYMBOLS = 100
#: The servers' log (bench.servers.RunningServer's): the feed writes there too.
LOG = ROOT / "bench" / "results" / ".server.log"


@dataclass
class ClusterProfile:
    """How big and long each cluster scenario is (``full`` or ``quick``)."""

    name: str
    seconds: int
    cpu_levels: list[int]  # offered messages/s, S1's geometry
    redis_events_per_s: int
    #: Pub/sub subscribers of the events channel in the redis scenario's second
    #: phase: the node and this many more make a 10-node cluster as Redis sees it.
    redis_extra_subscribers: int
    latency_offered: int
    latency_clients: int
    idle_connections: int
    idle_workers: int
    idle_loadgens: int
    worker_levels: list[int]  # offered messages/s, ramped until one is not sustained
    worker_clients: int
    stream: scenarios.Profile = field(default_factory=lambda: scenarios.QUICK)


FULL = ClusterProfile(
    name="full",
    seconds=10,
    # Low levels too: on one core the Redis setup saturates far below the gateway.
    cpu_levels=[5_000, 10_000, 20_000, 60_000],
    # The top cpu level's events (60,000 msg/s, 10 subscribers each): the projection
    # subtracts the node's ingest, measured here, from that level's CPU, so both must
    # be taken at one rate, with batches of one size.
    redis_events_per_s=6_000,
    redis_extra_subscribers=9,
    latency_offered=5_000,
    latency_clients=100,
    idle_connections=50_000,
    idle_workers=3,
    idle_loadgens=5,
    worker_levels=[10_000, 25_000, 50_000, 75_000, 100_000, 150_000, 200_000],
    worker_clients=2_000,
)
QUICK = ClusterProfile(
    name="quick",
    seconds=3,
    cpu_levels=[5_000],
    redis_events_per_s=500,
    redis_extra_subscribers=9,
    latency_offered=5_000,
    latency_clients=100,
    idle_connections=3_000,
    idle_workers=3,
    idle_loadgens=3,
    worker_levels=[25_000, 50_000],
    worker_clients=1_000,
)


def s1_load(
    offered: int,
    subscribers_per_symbol: int = SUBSCRIBERS_PER_SYMBOL_S1,
    updates_per_tick: int = SYMBOLS,
) -> Load:
    """The feed that offers ``offered`` messages/s when each symbol has that many
    subscribers (S1's: 100 symbols, every one each tick)."""
    events = offered / subscribers_per_symbol
    return Load(
        symbols=SYMBOLS, tick_rate=events / updates_per_tick, updates_per_tick=updates_per_tick
    )


def spawn(argv: list[str], cpus: str) -> subprocess.Popen[bytes]:
    """A process pinned to ``cpus`` (empty: not pinned), in its own process group so
    that :func:`bench.servers.kill_group` ends it whole; its output to ``LOG``."""
    pin = ["taskset", "-c", cpus] if cpus else []
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("ab") as log:
        return subprocess.Popen(
            [*pin, *argv], cwd=ROOT, stdout=log, stderr=log, start_new_session=True
        )


@contextmanager
def killed_on_exit(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield process
    finally:
        kill_group(process)


class Redis:
    """A redis-server of the tests' kind (tests/cluster/redis_server.py: no eviction,
    no persistence) pinned to ``cpus``; :meth:`readings` from its ``INFO``."""

    def __init__(self, folder: Path, cpus: str) -> None:
        self.server = RedisServer(folder)
        self.cpus = cpus

    def __enter__(self) -> Redis:
        self.server.start()
        if self.cpus:  # -a: its background threads too
            try:
                subprocess.run(
                    ["taskset", "-a", "-p", "-c", self.cpus, str(self.pid)],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            except BaseException:  # __exit__ will not run: no server left behind
                self.server.stop()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def info(self) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(self.server.port), "INFO", "all"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def events(self) -> float:
        """Events Redis has numbered: a batch is one ``PUBLISH`` of many events."""
        seqs = subprocess.run(
            ["redis-cli", "-p", str(self.server.port), "HVALS", SEQ_KEY],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return float(sum(int(seq) for seq in seqs.split()))

    def readings(self) -> dict[str, float]:
        """CPU seconds, events numbered (the sum of every stream's seq), commands
        processed (all, and per command as ``cmd.NAME``: the commands a script runs
        count as well), and network bytes."""
        found = {"cpu.redis": cpu_seconds(self.pid), "redis.events": self.events()}
        for line in self.info().splitlines():
            name, _, value = line.strip().partition(":")
            if name == "total_commands_processed":
                found["redis.commands"] = float(value)
            elif name in ("total_net_output_bytes", "total_net_input_bytes"):
                found[f"redis.{name[10:]}"] = float(value)
            elif name.startswith("cmdstat_"):
                calls = value.split(",")[0].partition("=")[2]
                found[f"cmd.{name[8:]}"] = float(calls)
        return found


def feed_command(url: str, load: Load) -> list[str]:
    """``realtime feed`` with the benchmark's price feed alone, as the gateway's S1."""
    return [
        sys.executable, "-c", "from realtime._cli import main; main()", "feed",
        "--bus", url, "--symbols", str(load.symbols), "--tick-rate", str(load.tick_rate),
        "--updates-per-tick", str(load.updates_per_tick), "--derived-feeds", "false",
        "--demo-events", "false", "--log-level", "warning",
    ]  # fmt: skip


def wait_for_events(redis: Redis, timeout: float = 30.0) -> None:
    """Until the feed publishes (Redis runs PUBLISH)."""
    deadline = time.monotonic() + timeout
    while redis.readings().get("cmd.publish", 0) == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the feed published nothing in {timeout} s; see {LOG}")
        time.sleep(0.1)


@dataclass
class Cluster:
    """A running Redis, feed and nodes (see :func:`running_cluster`)."""

    redis: Redis
    feed: subprocess.Popen[bytes]
    nodes: list[RunningServer]

    def readings(self) -> dict[str, float]:
        """Every process's CPU and Redis's counters, for ``measure_stream``."""
        found = self.redis.readings()
        found["cpu.feed"] = cpu_seconds(self.feed.pid)
        for index, node in enumerate(self.nodes):
            found[f"cpu.node{index}"] = node.cpu_seconds()
        return found


@contextmanager
def running_cluster(
    load: Load, nodes: int = 1, *, cpus: str = str(SERVER_CPU), extra: tuple[str, ...] = ()
) -> Iterator[Cluster]:
    """redis-server, ``realtime feed`` publishing ``load`` and ``nodes`` nodes (each
    ``realtime serve --bus`` with ``extra``), all pinned to ``cpus``."""
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as folder, ExitStack() as stack:
        redis = stack.enter_context(Redis(Path(folder), cpus))
        feed = stack.enter_context(killed_on_exit(spawn(feed_command(redis.url, load), cpus)))
        wait_for_events(redis)
        started = [
            stack.enter_context(
                RunningServer(
                    "gateway",
                    Load(symbols=load.symbols, feeds=False),
                    extra=("--bus", redis.url, *extra),
                    cpus=cpus,
                )
            )
            for _ in range(nodes)
        ]
        yield Cluster(redis, feed, started)


def per_event(rates: dict[str, float]) -> dict[str, Any]:
    """Per published event (one seq Redis numbered; the feed sends them in batches, one
    ``PUBLISH`` each): CPU µs of each process, Redis's commands (all, and each
    command's), and Redis's network bytes."""
    events = rates.get("redis.events", 0.0)
    if not events:
        return {"events_per_s": 0.0}
    return {
        "events_per_s": events,
        "cpu_us": {k[4:]: v / events * 1e6 for k, v in rates.items() if k.startswith("cpu.")},
        "commands": rates["redis.commands"] / events,
        "by_command": {
            k[4:]: round(v / events, 3) for k, v in rates.items() if k.startswith("cmd.") and v
        },
        "net_output_bytes": rates["redis.output_bytes"] / events,
        "net_input_bytes": rates["redis.input_bytes"] / events,
    }


def cpu_scenario(profile: ClusterProfile) -> dict[str, Any]:
    """S1's load, in-process and on Redis, level by level."""
    levels = []
    for offered in profile.cpu_levels:
        load = s1_load(offered)
        with RunningServer("gateway", load) as server:
            inprocess = measure_stream(server, 100, profile.seconds, profile.stream)
        with running_cluster(load) as cluster:
            redis = measure_stream(
                cluster.nodes[0], 100, profile.seconds, profile.stream, readings=cluster.readings
            )
        redis["per_event"] = per_event(redis["window_rates"])
        delivered = redis["delivered_per_s"]
        cpu = {k[4:]: v for k, v in redis["window_rates"].items() if k.startswith("cpu.")}
        cpu["together"] = sum(cpu.values())
        redis["cpu"] = cpu
        redis["us_per_delivered"] = {k: v / delivered * 1e6 for k, v in cpu.items()}
        level = {"offered_per_s": offered, "inprocess": inprocess, "redis": redis}
        for each in (inprocess, redis):
            each["sustained"] = sustained(each, offered)
        say(
            f"cpu {offered:,}/s: in-process {_f(inprocess['server_us_per_message'])} µs/msg, "
            f"p99 {_f(inprocess['p99_ms'])} ms; Redis (node+feed+redis) "
            f"{_f(redis['us_per_delivered']['together'])} µs/msg "
            f"(node {_f(redis['us_per_delivered']['node0'])}), p99 {_f(redis['p99_ms'])} ms, "
            f"{_f(redis['per_event'].get('commands'))} Redis commands/event"
        )
        levels.append(level)
    return {"levels": levels}


def sustained(result: dict[str, Any], offered: int) -> bool:
    """S1's rule: at least 95% delivered, p99 under 100 ms."""
    return bool(
        result["delivered_per_s"] >= 0.95 * offered
        and result["p99_ms"] is not None
        and result["p99_ms"] < P99_LIMIT * 1000
    )


def redis_scenario(profile: ClusterProfile) -> dict[str, Any]:
    """What one event costs Redis, the feed and a following node (no clients), with
    one subscriber of the events channel and with a 10-node cluster's."""
    load = Load(symbols=SYMBOLS, tick_rate=profile.redis_events_per_s / SYMBOLS)
    phases = []
    with running_cluster(load) as cluster:
        time.sleep(1.0)
        phases.append(measure_window(cluster, profile.seconds, subscribers=1))
        channel = events_channel(cluster.redis.url)
        with ExitStack() as stack:
            # Stand-ins for the other nodes as Redis sees them: pub/sub connections
            # that read every event (on the load generators' CPU).
            for _ in range(profile.redis_extra_subscribers):
                argv = ["redis-cli", "-p", str(cluster.redis.server.port), "SUBSCRIBE", channel]
                stack.enter_context(killed_on_exit(spawn_quiet(argv, str(LOADGEN_CPU))))
            time.sleep(1.0)
            subscribers = 1 + profile.redis_extra_subscribers
            phases.append(measure_window(cluster, profile.seconds, subscribers=subscribers))
    for phase in phases:
        say(
            f"redis, {phase['subscribers']} subscriber(s): {phase['events_per_s']:,.0f} "
            f"events/s, Redis {phase['cpu_us']['redis']:.1f} µs/event, feed "
            f"{phase['cpu_us']['feed']:.1f}, node {phase['cpu_us']['node0']:.1f}; "
            f"{phase['commands']:.1f} commands, {phase['net_output_bytes']:.0f} B out per event"
        )
    return {"phases": phases}


def spawn_quiet(argv: list[str], cpus: str) -> subprocess.Popen[bytes]:
    """As :func:`spawn`, its output discarded (a subscriber prints every event)."""
    return subprocess.Popen(
        ["taskset", "-c", cpus, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def measure_window(cluster: Cluster, seconds: int, *, subscribers: int) -> dict[str, Any]:
    before, t0 = cluster.readings(), time.monotonic()
    time.sleep(seconds)
    after, t1 = cluster.readings(), time.monotonic()
    rates = {k: (v - before.get(k, 0.0)) / (t1 - t0) for k, v in after.items()}
    return {"subscribers": subscribers, **per_event(rates)}


def latency_scenario(profile: ClusterProfile) -> dict[str, Any]:
    """Feed -> Redis -> two nodes -> clients on both: p50/p99 per node."""
    # Each node holds half the clients, so a symbol has half S1's subscribers per node.
    load = s1_load(profile.latency_offered)
    with running_cluster(load, nodes=2) as cluster:
        urls = [f"ws://127.0.0.1:{node.port}" for node in cluster.nodes]
        result = measure_stream(
            cluster.nodes[0],
            profile.latency_clients,
            profile.seconds,
            profile.stream,
            urls=urls,
            readings=cluster.readings,
        )
    result["offered_per_s"] = profile.latency_offered
    result["per_event"] = per_event(result["window_rates"])
    by_node = list(result["by_url"].values())
    result["by_node"] = by_node
    say(
        f"latency {profile.latency_offered:,}/s over 2 nodes: p99 "
        + ", ".join(f"node {i + 1} {_f(n['p99_ms'])} ms" for i, n in enumerate(by_node))
        + f"; all {_f(result['p99_ms'])} ms"
    )
    return result


def idle_scenario(profile: ClusterProfile) -> dict[str, Any]:
    """``serve --workers N --bus`` holding idle connections from several sources."""
    size, workers = profile.idle_connections, profile.idle_workers
    loadgens = profile.idle_loadgens
    with (
        tempfile.TemporaryDirectory(prefix="bench-redis-") as folder,
        Redis(Path(folder), "") as redis,
        RunningServer(
            "gateway",
            Load(symbols=SYMBOLS, feeds=False),
            extra=("--bus", redis.url, "--workers", str(workers)),
            cpus="",
        ) as server,
    ):
        pids = process_tree(server.pid)[1:]
        before = {pid: rss(pid) for pid in pids}
        started = time.monotonic()
        with Loadgen(
            f"ws://127.0.0.1:{server.port}",
            loadgens,
            size,
            "--mode", "idle", "--symbols-per-client", "10", "--seconds", "120",
            "--wave", "200", "--connect-timeout", "600",
            # One loopback source address per process: 28k ephemeral ports each.
            process_flags=[["--source", f"127.0.0.{2 + i}"] for i in range(loadgens)],
            cpus="",
        ) as load:  # fmt: skip
            ready = load.wait_all("ready", 900)
            connect_seconds = time.monotonic() - started
            time.sleep(2.0)
            after = {pid: rss(pid) for pid in pids}
            held = {pid: accepted_by(pid, server.port) for pid in pids}
            load.send("check")
            checked = load.wait_all("result", 300)
            load.send("stop")
        limits = {pid: open_files_limit(pid) for pid in pids}
    errors: Counter[str] = Counter()
    for record in (*ready, *checked):
        errors.update(record.get("errors", {}))
    answered = sum(r["answered"] for r in checked)
    grown = sum(after.values()) - sum(before.values())
    result = {
        "connections": size,
        "workers": workers,
        "loadgen_processes": loadgens,
        "subscribed": sum(r["clients"] for r in ready),
        "answered": answered,
        "connect_subscribe_seconds": connect_seconds,
        "per_worker": [
            {
                "held": held[pid],
                "rss_before_mib": before[pid] / 2**20,
                "rss_after_mib": after[pid] / 2**20,
                "open_files_limit": limits[pid],
            }
            for pid in pids
        ],
        "rss_workers_before_mib": sum(before.values()) / 2**20,
        "rss_workers_after_mib": sum(after.values()) / 2**20,
        "kib_per_connection": grown / max(1, answered) / 1024,
        "errors": dict(errors),
    }
    held_each = [worker["held"] for worker in result["per_worker"]]
    say(
        f"idle: {result['subscribed']:,} subscribed in {connect_seconds:.1f} s, "
        f"{answered:,} answered a ping, held per worker {held_each}, "
        f"{result['kib_per_connection']:.1f} KiB/conn"
    )
    return result


def open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


def workers_scenario(profile: ClusterProfile) -> dict[str, Any]:
    """The offered load ramps on one worker, then two; nothing pinned."""
    by_count: dict[str, Any] = {}
    subscribers = profile.worker_clients * 10 // SYMBOLS
    for count in (1, 2):
        levels = []
        for offered in profile.worker_levels:
            # Ticks of 10 events, not S1's 100: a node spends far longer per event
            # than the in-process hub, and a tick's last event would wait for the
            # whole tick, so S1's ticks would measure the burst, not the rate.
            load = s1_load(offered, subscribers, updates_per_tick=10)
            with running_cluster(load, cpus="", extra=("--workers", str(count))) as cluster:
                level = measure_stream(
                    cluster.nodes[0],
                    profile.worker_clients,
                    profile.seconds,
                    profile.stream,
                    readings=cluster.readings,
                    loadgen_cpus="",
                )
            level["offered_per_s"] = offered
            level["sustained"] = sustained(level, offered)
            level["cpu"] = {
                k[4:]: v for k, v in level["window_rates"].items() if k.startswith("cpu.")
            }
            say(
                f"workers {count} at {offered:,}/s: delivered {level['delivered_per_s']:,.0f}/s, "
                f"p99 {_f(level['p99_ms'])} ms, CPU workers {level['cpu']['node0']:.2f} "
                f"feed {level['cpu']['feed']:.2f} redis {level['cpu']['redis']:.2f} "
                f"loadgen {level['loadgen_cpu']:.2f}"
            )
            levels.append(level)
            if not level["sustained"]:
                break
        best = max((lv["offered_per_s"] for lv in levels if lv["sustained"]), default=0)
        by_count[str(count)] = {"levels": levels, "max_sustained_per_s": best}
    return {"subscribers_per_symbol": subscribers, "by_workers": by_count}


def run(args: argparse.Namespace) -> Path:
    profile = QUICK if args.quick else FULL
    chosen = args.scenarios.split(",")
    check_environment(["gateway"])
    raise_fd_limit()
    out = Path(args.out) if args.out else default_out(args.quick)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "profile": profile.name,
        "command": " ".join(["python -m bench.cluster", *map(shlex.quote, sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "versions": {**versions(), "redis-server": redis_version()},
        "scenarios": {},
    }
    functions: dict[str, Callable[[ClusterProfile], dict[str, Any]]] = {
        "cpu": cpu_scenario,
        "redis": redis_scenario,
        "latency": latency_scenario,
        "idle": idle_scenario,
        "workers": workers_scenario,
    }
    started = time.monotonic()
    for scenario in chosen:
        print(f"== {scenario} ({profile.name})", flush=True)
        try:
            results["scenarios"][scenario] = functions[scenario](profile)
        except Exception as exc:  # one failed scenario must not lose the others' figures
            print(f"  {scenario} FAILED: {exc!r}", flush=True)
            results["scenarios"][scenario] = {"failed": repr(exc)}
        (out / "results.json").write_text(json.dumps(results, indent=1))
    results["seconds"] = time.monotonic() - started
    results["projection"] = cluster_report.project(results)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    cluster_report.write(results, out)
    print(f"report: {out / 'report.md'} ({results['seconds']:.0f} s)", flush=True)
    return out


def redis_version() -> str:
    found = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True)
    return found.stdout.split()[2].removeprefix("v=") if found.returncode == 0 else "missing"


def default_out(quick: bool) -> Path:
    name = date.today().isoformat() + "-cluster" + ("-quick" if quick else "")
    return ROOT / "bench" / "results" / name


def main() -> None:
    signal.signal(signal.SIGTERM, unwind)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the 2-minute version")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--out", help="output directory (default bench/results/<date>-cluster)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
