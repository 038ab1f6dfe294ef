"""The report: targets met or missed, tables, plots, from ``results.json``.

python -m bench.report bench/results/<date>     # rewrite report.md and the plots
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from bench.scenarios import summarize
from bench.servers import SERVERS

WRITE_TIMEOUT = 10.0  # the gateway's default, which the benchmark does not change
OUTBOX_BYTES_MIB = 4.0
#: S1 loads (messages/s) at which burst coalescing must hold the gateway to at most
#: half of websockets' CPU per message, with p99 at most 1 ms above websockets'.
BURST_LEVELS = (20_000, 60_000, 150_000)
BURST_P99_MARGIN_MS = 1.0


def runs(results: dict[str, Any], scenario: str, server: str) -> list[dict[str, Any]]:
    entry = results["scenarios"].get(scenario, {}).get(server)
    return [r for r in entry["runs"] if "failed" not in r] if entry else []


def median_of(results: dict[str, Any], scenario: str, server: str, key: str) -> float | None:
    return summarize([r.get(key) for r in runs(results, scenario, server)])["median"]


def s1_level_median(results: dict[str, Any], server: str, offered: int, key: str) -> float | None:
    """The median over S1's repetitions of ``key`` at the ``offered`` load level."""
    values = [
        level.get(key)
        for run in runs(results, "s1", server)
        for level in run["levels"]
        if level["offered_per_s"] == offered
    ]
    return summarize(values)["median"]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target for the gateway: met True/False, None if not measured."""
    found: list[dict[str, Any]] = []

    def add(scenario: str, target: str, met: bool | None, detail: str) -> None:
        found.append({"scenario": scenario, "target": target, "met": met, "detail": detail})

    peers = [s for s in SERVERS if s != "gateway"]
    if runs(results, "s1", "gateway"):
        ours = median_of(results, "s1", "gateway", "us_per_message")
        ws = median_of(results, "s1", "websockets", "us_per_message")
        node = median_of(results, "s1", "node-ws", "us_per_message")
        met = (
            None
            if ours is None or ws is None or node is None
            else bool(ours <= ws / 2 and ours < node)
        )
        add(
            "s1",
            "server CPU per delivered message <= 1/2 websockets and < Node ws (goal <= 2 µs)",
            met,
            f"gateway {_f(ours)} µs, websockets {_f(ws)} µs, Node ws {_f(node)} µs",
        )
    for offered in BURST_LEVELS:
        ours = s1_level_median(results, "gateway", offered, "server_us_per_message")
        ours_p99 = s1_level_median(results, "gateway", offered, "p99_ms")
        ws = s1_level_median(results, "websockets", offered, "server_us_per_message")
        ws_p99 = s1_level_median(results, "websockets", offered, "p99_ms")
        if ours is None:
            continue  # this level was not run
        met = (
            None
            if ours_p99 is None or ws is None or ws_p99 is None
            else bool(ours <= ws / 2 and ours_p99 <= ws_p99 + BURST_P99_MARGIN_MS)
        )
        add(
            "s1",
            f"at {offered:,} msg/s: CPU per message <= 1/2 websockets, "
            f"p99 <= websockets + {BURST_P99_MARGIN_MS:g} ms",
            met,
            f"gateway {_f(ours)} µs, p99 {_f(ours_p99)} ms; "
            f"websockets {_f(ws)} µs, p99 {_f(ws_p99)} ms",
        )
    if runs(results, "s2", "gateway"):
        ours = median_of(results, "s2", "gateway", "p99_ms")
        others = {p: median_of(results, "s2", p, "p99_ms") for p in peers}
        known = {p: v for p, v in others.items() if v is not None}
        met = None if ours is None or not known else all(ours < v for v in known.values())
        add(
            "s2",
            "S2 p99 below every reference server's",
            met,
            f"gateway {_f(ours)} ms; " + ", ".join(f"{p} {_f(v)} ms" for p, v in others.items()),
        )
    s3 = runs(results, "s3", "gateway")
    if s3:
        run = s3[0]
        s2_p99 = median_of(results, "s2", "gateway", "p99_ms")
        p99 = run.get("p99_ms")
        met = None if s2_p99 is None or p99 is None else bool(p99 <= 1.10 * s2_p99)
        add("s3", "others' p99 within 10% of S2", met, f"S3 {_f(p99)} ms vs S2 {_f(s2_p99)} ms")
        growth = max(run["rss_series_mib"]) - run["rss_connected_mib"]
        add(
            "s3",
            "server RSS flat (growth bounded by the stuck client's 4 MiB outbox)",
            bool(growth <= OUTBOX_BYTES_MIB + 1.0),
            f"RSS grew {growth:.1f} MiB over the run",
        )
        closed_at = run["stuck"]["server_dropped_at"]
        add(
            "s3",
            f"stuck client closed within the write deadline ({WRITE_TIMEOUT:g} s, +5 s to "
            "fill the socket buffers)",
            bool(closed_at is not None and closed_at <= WRITE_TIMEOUT + 5.0),
            f"closed at {closed_at} s"
            if closed_at is not None
            else f"still open after {len(run['rss_series_mib'])} s",
        )
    s4 = runs(results, "s4", "gateway")
    if s4:
        sizes = s4[0]["sizes"]
        largest = sizes[-1]
        per = largest["kib_per_connection"] * 1024 / 1000
        held = largest["answered"] == largest["connections"]
        capped_from = results.get("s4_capped_from")
        add(
            "s4",
            "<= 10 KB per idle connection, and every connection of the largest size held",
            bool(per <= 10.0 and held),
            f"{per:.1f} KB/conn at {largest['connections']:,}; "
            f"{largest['answered']:,}/{largest['connections']:,} answered"
            + (
                f"; {capped_from:,} could not be run: the open files limit is "
                f"{results['fd_limit']:,}"
                if capped_from
                else ""
            ),
        )
    s5 = runs(results, "s5", "gateway")
    if s5:
        run = s5[0]
        back = run["all_back_seconds"]
        add(
            "s5",
            "all reconnected within 15 s without a handshake error",
            bool(back is not None and back <= 15.0 and not run["handshake_errors"]),
            f"back in {_f(back)} s, handshake errors {run['handshake_errors'] or 'none'}",
        )
    s6 = runs(results, "s6", "gateway")
    if s6:
        run = s6[0]
        add(
            "s6",
            "connections, subscriptions, fds, RSS and (gateway) Trio tasks back to baseline",
            bool(run["back_to_baseline"]),
            f"baseline {run['baseline']}, after {run['after']}",
        )
    return found


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _range(values: list[float | None], digits: int = 2) -> str:
    s = summarize(values)
    if s["median"] is None:
        return "-"
    if len([v for v in values if v is not None]) == 1:
        return _f(s["median"], digits)
    return f"{_f(s['median'], digits)} ({_f(s['min'], digits)}-{_f(s['max'], digits)})"


def write(results: dict[str, Any], out: Path) -> None:
    plots = make_plots(results, out)
    lines: list[str] = []
    quick = results["profile"] == "quick"
    title = "Benchmark report" + (" — QUICK SMOKE RUN" if quick else "")
    lines += [f"# {title}", ""]
    if quick:
        lines += [
            "> **Smoke run of `make bench-quick`, not the figures to quote.** Fewer clients, "
            "short windows, one repetition; on a shared machine the numbers are noisy. "
            "Run `make bench` on a quiet machine for the report.",
            "",
        ]
    lines += [
        f"Started {results['started']}, took {results.get('seconds', 0):.0f} s. "
        f"Command: `{results['command']}`.",
        "",
        "Servers on CPU 0 (`taskset -c 0`), load generators on CPU 1, all on 127.0.0.1. "
        f"Stream client for S1-S3: `{results['client']}` "
        "(see docs/benchmarks.md for why). Latency = receive time - the message's publish "
        "`timestamp`. Server CPU from /proc (utime+stime) over the measured window, divided "
        "by the rate the load generators received (each over its own measured time). "
        "A figure marked † was taken with "
        "the load generators above 90% of their core: it is a lower bound of the server.",
        "",
        "## Versions and machine",
        "",
        "| | |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v} |" for k, v in results["versions"].items()]
    lines += [f"| open files limit | {results['fd_limit']} |", ""]

    lines += ["## Targets for the gateway", "", "| scenario | target | result | figures |"]
    lines += ["| --- | --- | --- | --- |"]
    for t in results.get("targets", []):
        verdict = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['scenario'].upper()} | {t['target']} | {verdict} | {t['detail']} |")
    profiles = results.get("profiles", {})
    if profiles:
        lines += ["", "Profiles of the gateway where a target was missed (py-spy, 100 Hz):", ""]
        for scenario, name in profiles.items():
            lines.append(f"- {scenario.upper()}: `{name}` (collapsed stacks), top frames:")
            top = (out / f"pyspy-{scenario}-top.txt").read_text().splitlines()[:14]
            lines += ["", "```", *top, "```", ""]
    lines.append("")
    scenarios = results["scenarios"]
    servers = [s for s in SERVERS if any(s in v for v in scenarios.values())]

    if "s1" in scenarios:
        lines += [
            "## S1 saturation (100 clients, 10 of 100 symbols each, offered load ramps)",
            "",
            "Median (range) over repetitions. *Sustained*: ≥ 95% delivered and p99 < 100 ms. "
            "At a level a server does not sustain, delivered/s may exceed offered/s (a "
            "backlog queued before the window drains during it) and its µs/msg means "
            "nothing; the headline µs/msg is taken at the highest sustained level.",
            "",
            "| server | max sustained msg/s | server µs / delivered msg | lower bound? |",
            "| --- | --- | --- | --- |",
        ]
        for s in servers:
            rs = runs(results, "s1", s)
            lb = any(r["lower_bound"] for r in rs)
            lines.append(
                f"| {SERVERS[s]} | {_range([r['max_sustained_per_s'] for r in rs], 0)} | "
                f"{_range([r['us_per_message'] for r in rs])} | {'† yes' if lb else 'no'} |"
            )
        lines += ["", "Every level (first repetition):", ""]
        lines += [
            "| server | offered/s | delivered/s | p50 ms | p99 ms | max ms | server CPU | "
            "µs/msg | msgs/write | loadgen CPU |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for s in servers:
            for level in (runs(results, "s1", s) or [{"levels": []}])[0]["levels"]:
                mark = " †" if level["loadgen_bound"] else ""
                lines.append(
                    f"| {s} | {level['offered_per_s']:,} | {level['delivered_per_s']:,.0f}{mark} "
                    f"| {_f(level['p50_ms'])} | {_f(level['p99_ms'])} | {_f(level['max_ms'])} | "
                    f"{level['server_cpu']:.2f} | {_f(level['server_us_per_message'])} | "
                    f"{_f(level.get('gateway_messages_per_write'))} | "
                    f"{level['loadgen_cpu']:.2f} |"
                )
        lines += ["", f"![latency vs offered load]({plots['s1']})", ""]

    if "s2" in scenarios:
        lines += [
            "## S2 many clients (20,000 msg/s offered at 1,000 clients)",
            "",
            "Median (range) over repetitions.",
            "",
            "| server | clients | offered/s | delivered/s | p50 ms | p99 ms | max ms | "
            "server CPU | µs/msg | KiB RSS / conn | loadgen CPU |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for s in servers:
            rs = runs(results, "s2", s)
            if not rs:
                lines.append(f"| {s} | failed | | | | | | | | | |")
                continue
            mark = " †" if any(r["loadgen_bound"] for r in rs) else ""
            lines.append(
                f"| {SERVERS[s]} | {rs[0]['clients']:,} | {rs[0]['offered_per_s']:,.0f} | "
                f"{_range([r['delivered_per_s'] for r in rs], 0)}{mark} | "
                f"{_range([r['p50_ms'] for r in rs])} | {_range([r['p99_ms'] for r in rs])} | "
                f"{_range([r['max_ms'] for r in rs])} | {_range([r['server_cpu'] for r in rs])} | "
                f"{_range([r['server_us_per_message'] for r in rs])} | "
                f"{_range([r['rss_per_connection_kib'] for r in rs], 1)} | "
                f"{_range([r['loadgen_cpu'] for r in rs])} |"
            )
        lines.append("")

    if "s3" in scenarios:
        lines += [
            "## S3 slow consumer (S2 plus one client subscribed to everything, never reading)",
            "",
            "The stuck client sets SO_RCVBUF to 4 KiB so its buffers fill within the run; "
            "its state is read with TCP_INFO each second without reading the socket. "
            "*Dropped at*: the first second the server counted only the other clients "
            "(the last second is not used: it races with the clients closing).",
            "",
            "| server | others delivered/s | others p99 ms | RSS start → max → end MiB | "
            "stuck client |",
            "| --- | --- | --- | --- | --- |",
        ]
        for s in servers:
            rs = runs(results, "s3", s)
            if not rs:
                continue
            r = rs[0]
            series = r["rss_series_mib"]
            stuck = r["stuck"]["result"]
            dropped = r["stuck"]["server_dropped_at"]
            fate = (
                f"dropped by the server at {dropped:.0f} s"
                if dropped is not None
                else "still held by the server"
            ) + f"; client TCP {stuck['final_state']}"
            lines.append(
                f"| {SERVERS[s]} | {r['delivered_per_s']:,.0f} | {_f(r['p99_ms'])} | "
                f"{r['rss_connected_mib']:.1f} → {max(series):.1f} → {series[-1]:.1f} | {fate} |"
            )
        lines += ["", "Others' rate and p99 per second:", ""]
        header_done = False
        for s in servers:
            rs = runs(results, "s3", s)
            if not rs:
                continue
            per = rs[0]["per_second"]
            if not header_done:
                lines += [
                    "| server | " + " | ".join(f"{p['t'] + 1}s" for p in per) + " |",
                    "| --- |" + " --- |" * len(per),
                ]
                header_done = True
            lines.append(f"| {s} msg/s | " + " | ".join(f"{p['received']:,}" for p in per) + " |")
            lines.append(f"| {s} p99 ms | " + " | ".join(_f(p["p99_ms"], 1) for p in per) + " |")
        lines += ["", f"![RSS over time in S3]({plots['s3']})", ""]

    if "s4" in scenarios:
        lines += ["## S4 capacity (idle subscribed connections, feeds off)", ""]
        if results.get("s4_capped_from"):
            lines += [
                f"The open files limit of this machine ({results['fd_limit']:,}, hard) cannot "
                f"hold {results['s4_capped_from']:,} connections plus the server's own files: "
                "the largest size was run as big as it allows.",
                "",
            ]
        lines += [
            "| server | connections | subscribed | answering a ping | connect + subscribe s | "
            "KiB / conn | errors |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for s in servers:
            for r in (runs(results, "s4", s) or [{"sizes": []}])[0]["sizes"]:
                lines.append(
                    f"| {SERVERS[s]} | {r['connections']:,} | {r['subscribed']:,} | "
                    f"{r['answered']:,} | {r['connect_subscribe_seconds']:.1f} | "
                    f"{r['kib_per_connection']:.1f} | {r['errors'] or '-'} |"
                )
        lines += ["", f"![memory per connection]({plots['s4']})", ""]

    if "s5" in scenarios:
        lines += [
            "## S5 reconnect storm (server killed with SIGKILL and restarted at once)",
            "",
            "Clients reconnect with exponential backoff and full jitter (0.1 s doubling, "
            "cap 5 s). *Refused* are attempts while the server was down, expected.",
            "",
            "| server | clients | back | all back after s | server restart s | "
            "peak handshakes/s | refused | handshake errors |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for s in servers:
            for r in runs(results, "s5", s):
                lines.append(
                    f"| {SERVERS[s]} | {r['clients']:,} | {r['resubscribed']:,} | "
                    f"{_f(r['all_back_seconds'])} | {r['server_restart_seconds']:.2f} | "
                    f"{r['peak_handshakes_per_s']:,} | {r['refused_while_down']:,} | "
                    f"{r['handshake_errors'] or 'none'} |"
                )
        lines.append("")

    if "s6" in scenarios:
        lines += [
            "## S6 churn (connect / subscribe / close cycles)",
            "",
            "Baseline taken after a warm-up round of churn. Back to baseline: 0 connections, "
            "0 subscriptions, fds ≤ baseline + 2, RSS ≤ baseline x 1.1 + 2 MiB, and for the "
            "gateway Trio tasks ≤ baseline + 2 (the scrape's own HTTP connection is a task).",
            "",
            "| server | cycles | cycles/s | errors | baseline conns/subs/fds/RSS MiB | "
            "after | back? |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for s in servers:
            for r in runs(results, "s6", s):
                b, a = r["baseline"], r["after"]
                lines.append(
                    f"| {SERVERS[s]} | {r['cycles']:,} | {r['cycles_per_s']:,.0f} | "
                    f"{r['errors'] or 'none'} | {b['connections']}/{b['subscriptions']}/"
                    f"{b['fds']}/{b['rss_mib']:.1f} | {a['connections']}/{a['subscriptions']}/"
                    f"{a['fds']}/{a['rss_mib']:.1f} | {'yes' if r['back_to_baseline'] else 'no'} |"
                )
        lines.append("")

    failures = [
        f"- {sc.upper()} {s}: {r['failed']}"
        for sc, by in scenarios.items()
        for s, entry in by.items()
        for r in entry["runs"]
        if "failed" in r
    ]
    if failures:
        lines += ["## Runs that failed", "", *failures, ""]
    lines += ["Raw figures: `results.json`.", ""]
    (out / "report.md").write_text("\n".join(lines))


def make_plots(results: dict[str, Any], out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = results["scenarios"]
    names = {"s1": "s1-latency-vs-load.png", "s3": "s3-rss.png", "s4": "s4-memory.png"}
    if "s1" in scenarios:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for s in SERVERS:
            rs = runs(results, "s1", s)
            if not rs:
                continue
            by_level: dict[int, list[float]] = {}
            for r in rs:
                for level in r["levels"]:
                    if level["p99_ms"] is not None:
                        by_level.setdefault(level["offered_per_s"], []).append(level["p99_ms"])
            xs = sorted(by_level)
            ax.plot(xs, [statistics.median(by_level[x]) for x in xs], marker="o", label=s)
        ax.axhline(100, color="grey", linestyle="--", linewidth=1)
        ax.set(xlabel="offered messages/s", ylabel="p99 latency (ms)", yscale="log")
        ax.set_title("S1: p99 latency vs offered load")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / names["s1"], dpi=110)
        plt.close(fig)
    if "s3" in scenarios:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for s in SERVERS:
            rs = runs(results, "s3", s)
            if rs:
                series = rs[0]["rss_series_mib"]
                ax.plot(range(1, len(series) + 1), series, marker=".", label=s)
        ax.set(xlabel="seconds", ylabel="server RSS (MiB)", title="S3: server RSS, stuck client")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / names["s3"], dpi=110)
        plt.close(fig)
    if "s4" in scenarios:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        present = [s for s in SERVERS if runs(results, "s4", s)]
        sizes = sorted(
            {r["connections"] for s in present for r in runs(results, "s4", s)[0]["sizes"]}
        )
        width = 0.8 / max(1, len(sizes))
        for i, size in enumerate(sizes):
            values = []
            for s in present:
                match = [r for r in runs(results, "s4", s)[0]["sizes"] if r["connections"] == size]
                values.append(match[0]["kib_per_connection"] if match else 0.0)
            ax.bar([x + i * width for x in range(len(present))], values, width, label=f"{size:,}")
        ax.set_xticks([x + width * (len(sizes) - 1) / 2 for x in range(len(present))], present)
        ax.set(ylabel="KiB RSS per idle connection", title="S4: memory per connection")
        ax.legend(title="connections")
        fig.tight_layout()
        fig.savefig(out / names["s4"], dpi=110)
        plt.close(fig)
    return names


def top_frames(path: Path, limit: int = 30) -> str:
    """Top frames of py-spy's collapsed stacks: by own samples and by inclusive samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "own %  frame"]
    lines += [f"{100 * c / total:5.1f}  {f}" for f, c in own.most_common(limit)] if total else []
    lines += ["", "inclusive %  frame"]
    lines += (
        [f"{100 * c / total:5.1f}  {f}" for f, c in inclusive.most_common(limit)] if total else []
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory")
    args = parser.parse_args()
    out = Path(args.directory)
    results = json.loads((out / "results.json").read_text())
    results["targets"] = targets(results)
    write(results, out)


if __name__ == "__main__":
    main()
