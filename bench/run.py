"""Run the benchmark scenarios against every server and write the report.

    python -m bench.run                    # full: `make bench`
    python -m bench.run --quick            # about 2 minutes: `make bench-quick`
    python -m bench.run --servers gateway,node-ws --scenarios s1,s2 --out /tmp/x

Writes ``bench/results/<date>[-quick]/``: ``report.md``, ``results.json`` (every
figure, raw per-second records included), PNG plots, and py-spy profiles of the
gateway where it missed a target. Servers run on CPU 0, load generators on CPU 1.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import signal
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from bench import report, scenarios
from bench.servers import NODE_DIR, ROOT, SERVERS, raise_fd_limit, versions

SCENARIOS = ("s1", "s2", "s3", "s4", "s5", "s6")
#: Open files the server needs besides S4's connections (listener, logs, /proc, ...).
S4_FD_MARGIN = 100


def check_environment(servers: list[str]) -> None:
    problems = []
    if shutil.which("taskset") is None:
        problems.append("taskset not found (util-linux)")
    if "node-ws" in servers and not (NODE_DIR / "node_modules" / "ws").exists():
        problems.append(
            "Node ws not installed: run `make bench-peers` (npm ci in bench/peers/node)"
        )
    for module, server in (("websockets", "websockets"), ("fastapi", "fastapi")):
        if server in servers:
            try:
                __import__(module)
            except ImportError:
                problems.append(f"{module} not installed: pip install -e '.[bench]'")
    if problems:
        sys.exit("cannot run the benchmarks:\n  " + "\n  ".join(problems))


def run(args: argparse.Namespace) -> Path:
    profile = scenarios.QUICK if args.quick else scenarios.FULL
    if args.client:
        profile.client = args.client
    if args.s1_levels:
        profile.s1_levels = [int(level) for level in args.s1_levels.split(",")]
    servers = args.servers.split(",")
    chosen = args.scenarios.split(",")
    check_environment(servers)
    fd_limit = raise_fd_limit()
    capped_from = None
    if "s4" in chosen and fd_limit < max(profile.s4_sizes) + S4_FD_MARGIN:
        # The nearest valid run: as many connections as the server's fds allow.
        capped_from = max(profile.s4_sizes)
        cap = (fd_limit - S4_FD_MARGIN) // 100 * 100
        profile.s4_sizes = [min(size, cap) for size in profile.s4_sizes]
        print(
            f"WARNING: open files limit {fd_limit} (hard) is below S4's {capped_from:,} "
            f"connections + {S4_FD_MARGIN}; S4 runs {cap:,} instead. Raise the hard limit "
            "(ulimit -Hn, needs CAP_SYS_RESOURCE) for the full size.",
            flush=True,
        )
    out = Path(args.out) if args.out else default_out(args.quick)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "profile": profile.name,
        "command": " ".join(["python -m bench.run", *map(shlex.quote, sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "versions": versions(),
        "fd_limit": fd_limit,
        "s4_capped_from": capped_from,
        "client": profile.client,
        "scenarios": {},
    }
    started = time.monotonic()
    for scenario in chosen:
        print(f"== {scenario.upper()} ({profile.name})", flush=True)
        by_server: dict[str, Any] = {}
        for name in servers:
            by_server[name] = run_one(scenario, name, profile)
            (out / "results.json").write_text(json.dumps(results, indent=1))
        results["scenarios"][scenario] = by_server
    results["seconds"] = time.monotonic() - started
    results["targets"] = report.targets(results)
    # The quick run is a smoke test: its figures are not quoted, so neither profiled.
    if "gateway" in servers and not args.no_profile and not args.quick:
        profile_missed(results, profile, out)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    report.write(results, out)
    print(f"report: {out / 'report.md'} ({results['seconds']:.0f} s)", flush=True)
    return out


def run_one(scenario: str, name: str, profile: scenarios.Profile) -> Any:
    """One scenario for one server; repeated for S1/S2; a failure is recorded, not fatal."""
    functions = {
        "s1": scenarios.s1_saturation,
        "s2": scenarios.s2_many_clients,
        "s3": scenarios.s3_slow_consumer,
        "s4": scenarios.s4_capacity,
        "s5": scenarios.s5_reconnect_storm,
        "s6": scenarios.s6_churn,
    }
    repetitions = profile.repetitions if scenario in ("s1", "s2") else 1
    runs = []
    for repetition in range(repetitions):
        if repetitions > 1:
            print(f"  {name}: repetition {repetition + 1}/{repetitions}", flush=True)
        try:
            runs.append(functions[scenario](name, profile))
        except Exception as exc:  # one broken server must not lose the other figures
            print(f"  {name}: {scenario} FAILED: {exc!r}", flush=True)
            runs.append({"failed": repr(exc)})
    return {"runs": runs}


def profile_missed(results: dict[str, Any], profile: scenarios.Profile, out: Path) -> None:
    """Rerun the gateway under py-spy for every missed CPU or latency target."""
    if shutil.which("py-spy") is None:
        print("py-spy not installed: no profiles", flush=True)
        return
    wanted = {t["scenario"] for t in results["targets"] if t["met"] is False}
    profiles: dict[str, str] = {}
    for scenario in ("s1", "s2", "s3"):
        if scenario not in wanted:
            continue
        print(f"== profiling the gateway under {scenario.upper()} (missed a target)", flush=True)
        path = out / f"pyspy-{scenario}.txt"
        try:
            if scenario == "s1":
                single = scenarios.Profile(**{**profile.__dict__})
                levels = results["scenarios"]["s1"]["gateway"]["runs"][0].get("levels", [])
                single.s1_levels = [levels[-1]["offered_per_s"]] if levels else profile.s1_levels
                scenarios.s1_saturation("gateway", single, pyspy_dir=out)
                produced = sorted(out.glob("s1-*.txt"))
                if produced:
                    produced[-1].rename(path)
            elif scenario == "s2":
                scenarios.s2_many_clients("gateway", profile, pyspy=path)
            else:
                scenarios.s3_slow_consumer("gateway", profile, pyspy=path)
        except Exception as exc:
            print(f"  profiling {scenario} failed: {exc!r}", flush=True)
            continue
        if path.exists():
            profiles[scenario] = path.name
            (out / f"pyspy-{scenario}-top.txt").write_text(report.top_frames(path))
    results["profiles"] = profiles


def default_out(quick: bool) -> Path:
    name = date.today().isoformat() + ("-quick" if quick else "")
    return ROOT / "bench" / "results" / name


def unwind(signum: int, frame: object) -> None:
    # SIGTERM (make interrupted, a CI timeout) unwinds like Ctrl-C, so every
    # `finally` kills its server and load generators: no orphans.
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    signal.signal(signal.SIGTERM, unwind)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the 2-minute version")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--client", choices=("raw", "trio-websocket"), help="S1-S3 client")
    parser.add_argument("--out", help="output directory (default bench/results/<date>)")
    parser.add_argument("--no-profile", action="store_true", help="skip py-spy reruns")
    parser.add_argument(
        "--s1-levels",
        help="S1's offered loads, messages/s, comma-separated (default: the profile's)",
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
