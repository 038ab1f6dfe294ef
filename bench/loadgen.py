"""Load generator: many trio-websocket clients in one process, for the benchmarks.

    python -m bench.loadgen --url ws://127.0.0.1:8000 --clients 1000 --symbols-per-client 10

Connects every client (in waves, so the handshakes do not time out), subscribes each
to its symbols, prints ``ready`` on stdout, counts and samples latency for
``--seconds``, then prints one JSON line of results and exits. Latency is receive time
minus the message's publish ``timestamp``. The process reports its own CPU time, so
a run where the generator, not the server, was the limit can be told apart.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from datetime import datetime

import orjson
import trio
from trio_websocket import ConnectionClosed, open_websocket_url


async def run(args: argparse.Namespace) -> dict[str, object]:
    received = 0
    latencies: list[float] = []
    errors: list[str] = []
    connected = 0
    all_connected = trio.Event()
    measuring = trio.Event()
    universe: list[str] = []
    rng = random.Random(args.seed)

    async def client(index: int) -> None:
        nonlocal received, connected
        try:
            async with open_websocket_url(
                f"{args.url}/ws/load-{index}", message_queue_size=args.queue
            ) as ws:
                welcome = orjson.loads(await ws.get_message())
                if not universe:
                    universe.extend(welcome["symbols"])
                if args.symbols_per_client:
                    symbols = rng.sample(universe, min(args.symbols_per_client, len(universe)))
                    request = {"type": "subscribe", "channel": "prices", "symbols": symbols}
                    await ws.send_message(orjson.dumps(request).decode())
                connected += 1
                if connected == args.clients:
                    all_connected.set()
                sample = index % args.sample_every == 0
                while True:
                    message = await ws.get_message()
                    if not measuring.is_set():
                        continue
                    received += 1
                    if sample and received % 16 == 0:
                        stamp = orjson.loads(message).get("timestamp")
                        if stamp:
                            sent = datetime.fromisoformat(stamp).timestamp()
                            latencies.append(time.time() - sent)
        except ConnectionClosed as exc:
            errors.append(f"closed {exc.reason.code}")
        except (OSError, trio.TooSlowError, Exception) as exc:  # report, never hide
            errors.append(type(exc).__name__)

    async with trio.open_nursery() as nursery:
        for index in range(args.clients):
            nursery.start_soon(client, index)
            if index % args.wave == args.wave - 1:
                await trio.sleep(0.05)
        with trio.move_on_after(args.connect_timeout):
            await all_connected.wait()
        print(f"ready {connected}", flush=True)
        await trio.sleep(args.warmup)
        measuring.set()
        cpu_start = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        await trio.sleep(args.seconds)
        measuring = trio.Event()  # stop counting
        elapsed = time.monotonic() - started
        cpu_end = resource.getrusage(resource.RUSAGE_SELF)
        nursery.cancel_scope.cancel()
    latencies.sort()

    def pct(q: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

    cpu = (cpu_end.ru_utime + cpu_end.ru_stime) - (cpu_start.ru_utime + cpu_start.ru_stime)
    return {
        "clients": connected,
        "received": received,
        "seconds": elapsed,
        "rate": received / elapsed,
        "p50": pct(0.5),
        "p99": pct(0.99),
        "max": latencies[-1] if latencies else None,
        "loadgen_cpu": cpu / elapsed,
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--symbols-per-client", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--wave", type=int, default=100, help="clients started per 50 ms")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument(
        "--sample-every", type=int, default=10, help="latency from every Nth client"
    )
    parser.add_argument("--queue", type=int, default=256, help="per-client receive queue")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = trio.run(run, args)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
