"""The six scenarios, the same for every server. Each returns a JSON-able dict.

Figures come from three places, never from the server's own word alone: the load
generators (messages received, latency samples, their own CPU), /proc of the server
(CPU, RSS, open fds) and ``/ws/stats`` (connections, subscriptions), which every
server under test exposes.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.servers import LOADGEN_CPU, Load, Loadgen, RunningServer

#: Above this share of a core the load generator, not the server, may be the limit.
LOADGEN_BOUND = 0.90
P99_LIMIT = 0.100
SUBSCRIBERS_PER_SYMBOL_S1 = 10


@dataclass
class Profile:
    """How big and long each scenario is (``full`` or ``quick``)."""

    name: str
    repetitions: int
    s1_levels: list[int]  # offered messages per second
    s1_seconds: int
    s2_clients: int
    s2_seconds: int
    s3_seconds: int
    s4_sizes: list[int]
    s5_clients: int
    s6_cycles: int
    s6_warmup: int
    client: str = "raw"  # stream client for S1-S3
    loadgen_processes: dict[str, int] = field(default_factory=dict)


FULL = Profile(
    name="full",
    repetitions=3,
    # 20k, 60k and 150k are the burst-coalescing targets (report.BURST_LEVELS).
    s1_levels=[10_000, 20_000, 40_000, 60_000, 80_000, 120_000, 150_000, 240_000, 320_000],
    s1_seconds=10,
    s2_clients=1000,
    s2_seconds=10,
    s3_seconds=20,
    s4_sizes=[5000, 20_000],
    s5_clients=2000,
    s6_cycles=100_000,
    s6_warmup=2000,
    loadgen_processes={"s4": 4, "s5": 2, "s6": 2},
)
QUICK = Profile(
    name="quick",
    repetitions=1,
    s1_levels=[20_000, 60_000, 150_000],
    s1_seconds=3,
    s2_clients=200,
    s2_seconds=3,
    s3_seconds=12,
    s4_sizes=[500, 2000],
    s5_clients=200,
    s6_cycles=600,
    s6_warmup=100,
    loadgen_processes={"s4": 2, "s5": 1, "s6": 1},
)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def say(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {text}", flush=True)


def start_profiler(server: RunningServer, seconds: float, path: Path) -> subprocess.Popen[bytes]:
    """py-spy on the server (not paused: ``--nonblocking``), pinned with the loadgen."""
    return subprocess.Popen(
        [
            "taskset",
            "-c",
            str(LOADGEN_CPU),
            "py-spy",
            "record",
            "--pid",
            str(server.pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "100",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def measure_stream(
    server: RunningServer,
    clients: int,
    seconds: int,
    profile: Profile,
    *,
    symbols_per_client: int = 10,
    stuck: bool = False,
    pyspy: Path | None = None,
    warmup: float = 1.0,
    urls: Sequence[str] = (),
    readings: Callable[[], dict[str, float]] | None = None,
    loadgen_cpus: str | None = None,
) -> dict[str, Any]:
    """Connect ``clients`` streaming clients (and the stuck one), measure ``seconds``.

    ``urls``: the clients are spread over these servers (load generator processes
    round-robin; default: ``server`` alone) and the result gives each one's figures
    in ``by_url``. ``readings``: counters of other processes (CPU seconds, Redis's
    commands), read where the server's CPU is, so ``window_rates`` gives each one per
    second over exactly the measured window. ``loadgen_cpus``: where the load
    generators run (default ``LOADGEN_CPU``; an empty string: not pinned).
    """
    url = f"ws://127.0.0.1:{server.port}"
    urls = list(urls) or [url]
    processes = max(len(urls), clients // 1000)
    process_urls = [urls[i % len(urls)] for i in range(processes)]
    rss_idle = server.rss()
    with (
        Loadgen(
            url,
            processes,
            clients,
            "--mode",
            "stream",
            "--client",
            profile.client,
            "--symbols-per-client",
            str(symbols_per_client),
            "--seconds",
            str(seconds),
            "--sample-every",
            "5",
            process_flags=[["--url", each] for each in process_urls],
            cpus=loadgen_cpus,
        ) as load,
        ExitStack() as stack,
    ):
        ready = load.wait_all("ready", 120)
        stuck_gen = None
        if stuck:
            stuck_gen = stack.enter_context(
                Loadgen(url, 1, 1, "--mode", "stuck", "--seconds", str(seconds))
            )
            stuck_gen.wait_all("ready", 30)
        time.sleep(warmup)  # the last prices sent after `subscribed` are not measured
        rss_connected = server.rss()
        profiler = start_profiler(server, seconds, pyspy) if pyspy else None
        before = readings() if readings else {}
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        sent0 = server.metric("realtime_messages_sent_total")
        writes0 = server.metric("realtime_socket_writes_total")
        load.send("go")
        if stuck_gen:
            stuck_gen.send("go")
        rss_series, connection_series = [], []
        for _ in range(seconds):
            time.sleep(1.0)
            rss_series.append(server.rss())
            if stuck:  # an overloaded server may not answer /ws/stats in time
                connection_series.append(server.connections_or_none())
        results = load.wait_all("result", seconds + 60)
        cpu1, t1 = server.cpu_seconds(), time.monotonic()
        after = readings() if readings else {}
        sent1 = server.metric("realtime_messages_sent_total")
        writes1 = server.metric("realtime_socket_writes_total")
        stuck_result: dict[str, Any] | None = None
        if stuck_gen:
            stuck_result = {
                "result": stuck_gen.wait_all("result", 30)[0],
                "seconds": [record for _, record in getattr(stuck_gen, "seconds", [])],
            }
            stuck_gen.close()
        if profiler:
            profiler.wait(timeout=seconds + 30)
        per_second: dict[int, dict[str, Any]] = {}
        by_process: dict[int, list[float]] = {}
        by_url: dict[str, list[float]] = {each: [] for each in urls}
        for index, record in load.seconds:
            totals = by_process.setdefault(index, [0.0, 0.0])
            totals[0] += record["received"]
            totals[1] += record["duration"]
            slot = per_second.setdefault(record["t"], {"received": 0, "latency": []})
            slot["received"] += record["received"]
            slot["latency"].extend(record["latency"])
            by_url[process_urls[index]].extend(record["latency"])
    latencies = [x for slot in per_second.values() for x in slot["latency"]]
    # Each process's count over its own measured time (not the nominal seconds).
    delivered = sum(n / d for n, d in by_process.values() if d > 0)
    loadgen_cpu = sum(r["loadgen_cpu"] or 0.0 for r in results)
    errors: Counter[str] = Counter()
    for record in (*ready, *results):
        errors.update(record.get("errors", {}))
        errors.update(record.get("closes", {}))
    server_cpu = (cpu1 - cpu0) / (t1 - t0)
    result: dict[str, Any] = {
        "clients": sum(r["clients"] for r in ready),
        "connect_seconds": max(r.get("connect_seconds", 0.0) for r in ready),
        "delivered_per_s": delivered,
        "p50_ms": _ms(percentile(latencies, 0.50)),
        "p99_ms": _ms(percentile(latencies, 0.99)),
        "max_ms": _ms(max(latencies, default=None)),
        "samples": len(latencies),
        "server_cpu": server_cpu,
        "server_us_per_message": server_cpu / delivered * 1e6 if delivered else None,
        "loadgen_cpu": loadgen_cpu,
        "loadgen_bound": loadgen_cpu > LOADGEN_BOUND * 1,  # the loadgens share one core
        "rss_idle_mib": rss_idle / 2**20,
        "rss_connected_mib": rss_connected / 2**20,
        "rss_per_connection_kib": (rss_connected - rss_idle) / max(1, clients) / 1024,
        "rss_series_mib": [x / 2**20 for x in rss_series],
        "connection_series": connection_series,
        "errors": dict(errors),
        "per_second": [
            {
                "t": t,
                "received": per_second[t]["received"],
                "p99_ms": _ms(percentile(per_second[t]["latency"], 0.99)),
            }
            for t in sorted(per_second)
        ],
    }
    if len(urls) > 1:
        result["by_url"] = {
            each: {
                "delivered_per_s": sum(
                    n / d for i, (n, d) in by_process.items() if process_urls[i] == each and d
                ),
                "p50_ms": _ms(percentile(samples, 0.50)),
                "p99_ms": _ms(percentile(samples, 0.99)),
                "samples": len(samples),
            }
            for each, samples in by_url.items()
        }
    if readings:
        # A counter may first appear during the window (a command Redis had not run).
        result["window_rates"] = {
            key: (after[key] - before.get(key, 0.0)) / (t1 - t0) for key in after
        }
    if sent0 is not None and sent1 is not None:
        result["gateway_sent_per_s"] = (sent1 - sent0) / (t1 - t0)
    if sent0 is not None and sent1 is not None and writes0 is not None and writes1 is not None:
        # How many messages share one write: the flusher's coalescing at this load.
        result["gateway_messages_per_write"] = (sent1 - sent0) / max(1.0, writes1 - writes0)
    if stuck_result is not None:
        # The server's view: the stuck client is gone once the server counts one
        # connection fewer. (A FIN cannot reach a client whose window is zero, so
        # the client's own TCP state may stay ESTABLISHED after the server let go.)
        # Only while all the others are still connected: the last sample may race
        # with the load generators closing their clients.
        others = result["clients"]
        dropped = [t + 1 for t, n in enumerate(connection_series[:-1]) if n == others]
        stuck_result["server_connections"] = connection_series
        stuck_result["server_dropped_at"] = float(dropped[0]) if dropped else None
        result["stuck"] = stuck_result
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def s1_saturation(name: str, profile: Profile, pyspy_dir: Path | None = None) -> dict[str, Any]:
    """100 clients x 10 of 100 symbols; offered load ramps until p99 or delivery fails."""
    levels = []
    for offered in profile.s1_levels:
        updates_per_second = offered / SUBSCRIBERS_PER_SYMBOL_S1
        load = Load(symbols=100, tick_rate=updates_per_second / 100, updates_per_tick=100)
        with RunningServer(name, load) as server:
            pyspy = pyspy_dir / f"s1-{offered}.txt" if pyspy_dir else None
            level = measure_stream(server, 100, profile.s1_seconds, profile, pyspy=pyspy)
        level["offered_per_s"] = offered
        level["sustained"] = bool(
            level["delivered_per_s"] >= 0.95 * offered
            and level["p99_ms"] is not None
            and level["p99_ms"] < P99_LIMIT * 1000
        )
        say(
            f"S1 {name} offered {offered:,}/s: delivered {level['delivered_per_s']:,.0f}/s "
            f"p99 {_fmt(level['p99_ms'])} ms, {_fmt(level['server_us_per_message'])} µs/msg, "
            f"loadgen CPU {level['loadgen_cpu']:.2f}"
        )
        levels.append(level)
        if not level["sustained"]:
            break
    sustained = [level for level in levels if level["sustained"]]
    best = max(sustained, key=lambda level: level["offered_per_s"]) if sustained else None
    return {
        "levels": levels,
        "max_sustained_per_s": best["offered_per_s"] if best else 0,
        # Load-independent figure: at the highest sustained level (most messages).
        "us_per_message": best["server_us_per_message"] if best else None,
        "lower_bound": bool(best and best["loadgen_bound"])
        or any(level["loadgen_bound"] for level in levels),
    }


def s2_load() -> Load:
    # 1,000 clients x 10 of 100 symbols = 100 subscribers per symbol: 200 updates/s
    # gives 20,000 messages/s; the quick profile keeps the same feed with fewer clients.
    return Load(symbols=100, tick_rate=10, updates_per_tick=20)


def s2_many_clients(name: str, profile: Profile, pyspy: Path | None = None) -> dict[str, Any]:
    with RunningServer(name, s2_load()) as server:
        time.sleep(0.5)
        result = measure_stream(
            server, profile.s2_clients, profile.s2_seconds, profile, pyspy=pyspy
        )
    result["offered_per_s"] = s2_load().updates_per_second * profile.s2_clients * 10 / 100
    say(
        f"S2 {name}: {result['clients']} clients, delivered {result['delivered_per_s']:,.0f}/s "
        f"of {result['offered_per_s']:,.0f}, p99 {_fmt(result['p99_ms'])} ms, "
        f"{_fmt(result['rss_per_connection_kib'])} KiB/conn"
    )
    return result


def s3_slow_consumer(name: str, profile: Profile, pyspy: Path | None = None) -> dict[str, Any]:
    with RunningServer(name, s2_load()) as server:
        time.sleep(0.5)
        result = measure_stream(
            server, profile.s2_clients, profile.s3_seconds, profile, stuck=True, pyspy=pyspy
        )
        result["gateway_counters"] = {
            metric: server.metric(metric)
            for metric in (
                "realtime_write_timeouts_total",
                'realtime_connection_closes_total{by="server",code="4499"}',
                "realtime_messages_conflated_total",
            )
        }
        result["stats_after"] = server.stats()
    result["offered_per_s"] = s2_load().updates_per_second * profile.s2_clients * 10 / 100
    stuck = result["stuck"]["result"]
    say(
        f"S3 {name}: others p99 {_fmt(result['p99_ms'])} ms, delivered "
        f"{result['delivered_per_s']:,.0f}/s, RSS {result['rss_series_mib'][0]:.1f} -> "
        f"{result['rss_series_mib'][-1]:.1f} MiB, stuck client: dropped by the server at "
        f"{result['stuck']['server_dropped_at']} s, its TCP state {stuck['final_state']}"
    )
    return result


def s4_capacity(name: str, profile: Profile) -> dict[str, Any]:
    sizes = []
    for size in profile.s4_sizes:
        with RunningServer(name, Load(symbols=100, feeds=False)) as server:
            time.sleep(0.5)
            rss0 = server.rss()
            processes = max(1, min(profile.loadgen_processes.get("s4", 1), size // 500))
            started = time.monotonic()
            with Loadgen(
                f"ws://127.0.0.1:{server.port}",
                processes,
                size,
                "--mode",
                "idle",
                "--symbols-per-client",
                "10",
                "--seconds",
                "60",
                "--wave",
                "200",
            ) as load:
                ready = load.wait_all("ready", 300)
                connect_seconds = time.monotonic() - started
                time.sleep(1.0)
                rss1 = server.rss()
                stats = server.stats()
                load.send("check")
                checked = load.wait_all("result", 120)
                load.send("stop")
        errors: Counter[str] = Counter()
        for record in (*ready, *checked):
            errors.update(record.get("errors", {}))
        entry = {
            "connections": size,
            "subscribed": sum(r["clients"] for r in ready),
            "answered": sum(r["answered"] for r in checked),
            "server_connections": stats["connections"],
            "connect_subscribe_seconds": connect_seconds,
            "rss_before_mib": rss0 / 2**20,
            "rss_after_mib": rss1 / 2**20,
            "kib_per_connection": (rss1 - rss0) / size / 1024,
            "errors": dict(errors),
        }
        say(
            f"S4 {name} {size:,}: {entry['subscribed']:,} subscribed in "
            f"{connect_seconds:.1f} s, {entry['answered']:,} answered, "
            f"{entry['kib_per_connection']:.1f} KiB/conn"
        )
        sizes.append(entry)
    return {"sizes": sizes}


def s5_reconnect_storm(name: str, profile: Profile) -> dict[str, Any]:
    clients = profile.s5_clients
    load_spec = Load(symbols=100, tick_rate=1, updates_per_tick=100)
    server = RunningServer(name, load_spec)
    server.start()
    try:
        processes = profile.loadgen_processes.get("s5", 1)
        with Loadgen(
            f"ws://127.0.0.1:{server.port}",
            processes,
            clients,
            "--mode",
            "storm",
            "--symbols-per-client",
            "10",
            "--seconds",
            "60",
        ) as load:
            ready = load.wait_all("ready", 120)
            killed = time.time()
            server.stop(hard=True)
            server.start()
            restarted = time.time() - killed
            results = load.wait_all("result", 120)
    finally:
        server.stop()
    handshakes = sorted(t for r in results for t in r["handshakes"])
    per_second = Counter(int(t - killed) for t in handshakes)
    errors: Counter[str] = Counter()
    for record in results:
        errors.update(record["errors"])
    last = max((r["last_resubscribed"] or 0.0 for r in results), default=0.0)
    resubscribed = sum(r["resubscribed"] for r in results)
    handshake_errors = {k: v for k, v in errors.items() if k != "refused"}
    result = {
        "clients": sum(r["clients"] for r in ready),
        "dropped": sum(r["dropped"] for r in results),
        "resubscribed": resubscribed,
        "server_restart_seconds": restarted,
        "all_back_seconds": last - killed if resubscribed == clients else None,
        "peak_handshakes_per_s": max(per_second.values(), default=0),
        "refused_while_down": errors.get("refused", 0),
        "handshake_errors": handshake_errors,
    }
    say(
        f"S5 {name}: {resubscribed}/{clients} back in {_fmt(result['all_back_seconds'])} s, "
        f"peak {result['peak_handshakes_per_s']} handshakes/s, errors {handshake_errors}"
    )
    return result


def s6_churn(name: str, profile: Profile) -> dict[str, Any]:
    load_spec = Load(symbols=100, tick_rate=1, updates_per_tick=100)
    with RunningServer(name, load_spec) as server:
        url = f"ws://127.0.0.1:{server.port}"
        start = _snapshot(server)

        def churn(cycles: int) -> dict[str, Any]:
            processes = profile.loadgen_processes.get("s6", 1)
            with Loadgen(
                url, processes, 0, "--mode", "churn", "--cycles", str(cycles // processes)
            ) as load:
                load.wait_all("ready", 30)
                results = load.wait_all("result", max(600, cycles / 50))
            errors: Counter[str] = Counter()
            for record in results:
                errors.update(record["errors"])
            return {
                "cycles": sum(r["cycles"] for r in results),
                "seconds": max(r["seconds"] for r in results),
                "errors": dict(errors),
            }

        churn(profile.s6_warmup)
        time.sleep(2.0)
        baseline = _snapshot(server)
        say(f"S6 {name}: baseline {baseline}; churning {profile.s6_cycles:,} cycles")
        run = churn(profile.s6_cycles)
        time.sleep(3.0)
        after = _snapshot(server)
    back = (
        after["connections"] == 0
        and after["subscriptions"] == 0
        and after["fds"] <= baseline["fds"] + 2
        and after["rss_mib"] <= baseline["rss_mib"] * 1.10 + 2.0
        # The /metrics scrape's own HTTP connection is a task or two of the count.
        and (after["trio_tasks"] is None or after["trio_tasks"] <= baseline["trio_tasks"] + 2)
    )
    result = {
        "start": start,
        "baseline": baseline,
        "after": after,
        **run,
        "cycles_per_s": run["cycles"] / run["seconds"],
        "back_to_baseline": back,
    }
    say(f"S6 {name}: {run['cycles']:,} cycles, after {after}, back to baseline: {back}")
    return result


def _snapshot(server: RunningServer) -> dict[str, Any]:
    stats = server.stats()
    return {
        **stats,
        "fds": server.fds(),
        "rss_mib": round(server.rss() / 2**20, 2),
        # The gateway's live Trio tasks (None for the peers, which have no such gauge).
        "trio_tasks": server.metric("realtime_trio_tasks"),
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def summarize(values: list[float | None]) -> dict[str, float | None]:
    """Median and range of repeated figures (None when a run gave none)."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(present), "min": min(present), "max": max(present)}
