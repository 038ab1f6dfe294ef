"""``realtime listen``: a terminal viewer on the Python client.

Prices show as a live table (one row per symbol, updated in place); the other
channels as a scrolling log; ``--json`` writes each message as one line of JSON
(NDJSON) to stdout for piping. Reconnects, history gaps and lag are reported on
stderr, so the NDJSON stream stays clean.

The only module that loads rich: the ``realtime`` command imports it when ``listen``
runs, and its flags live in ``_viewer_options``.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import IO, Final

import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from protocol import (
    AlertTriggered,
    Channel,
    ErrorReply,
    Notification,
    PortfolioUpdate,
    PriceUpdate,
    TradingSignal,
    encode,
)

from ._client import (
    Client,
    ClientError,
    Disconnected,
    HistoryGap,
    Item,
    Lagged,
    Reconnected,
    TokenProvider,
    open_client,
)
from ._viewer_options import ListenOptions

#: Table redraws per second: enough to look live, cheap on a slow terminal.
REFRESH_PER_SECOND: Final = 4
_EVENTS: Final = (PriceUpdate, AlertTriggered, TradingSignal, PortfolioUpdate, Notification)


async def listen(options: ListenOptions, out: IO[str], err: IO[str]) -> None:
    """Subscribe and show what arrives until ``count`` messages or cancellation.

    Raises :class:`realtime.client.ClientError` when the client gives up (a fatal
    close code, the reconnect attempts spent, or the first connection failing).
    """
    status = Console(file=err, highlight=False)
    get_token = _command_token(options.token_command) if options.token_command else None
    async with open_client(
        options.url, options.client_id, token=options.token, get_token=get_token
    ) as client:
        symbols = options.symbols if options.channel is Channel.PRICES else None
        await client.subscribe(options.channel, symbols)
        status.print(f"[dim]{options.client_id}: subscribed to {options.channel} on {options.url}")
        if options.json:
            await _json(client, options.count, out, status)
        elif options.channel is Channel.PRICES:
            await _table(client, options.count, Console(file=out), status)
        else:
            await _log(client, options.count, Console(file=out, highlight=False), status)


def _command_token(argv: tuple[str, ...]) -> TokenProvider:
    """``get_token`` for ``--token-command``: the command's output, stripped."""

    async def get_token() -> str:
        result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
        if result.returncode != 0:
            said = result.stderr.decode(errors="replace").strip().splitlines()
            raise RuntimeError(
                f"--token-command exited with status {result.returncode}"
                + (f": {said[-1]}" if said else "")
            )
        return result.stdout.decode(errors="replace").strip()

    return get_token


def _report(item: Item, status: Console) -> bool:
    """Report the client's own events on the status console; True if ``item`` was one."""
    match item:
        case Disconnected(code=code, reason=reason, attempt=attempt, delay=delay):
            status.print(f"[yellow]disconnected ({code} {reason}); retry {attempt} in {delay:.1f}s")
        case Reconnected():
            status.print("[green]reconnected; subscriptions restored")
        case HistoryGap(channel=channel, since=since):
            status.print(f"[yellow]{channel}: messages after seq {since} could not be replayed")
        case Lagged(missed=missed):
            status.print(f"[red]fell behind: {missed} messages dropped")
        case ErrorReply(code=code, error=error):
            status.print(f"[red]error {code}: {error}")
        case _:
            return False
    return True


async def _json(client: Client, count: int | None, out: IO[str], status: Console) -> None:
    seen = 0
    async for item in client:
        if _report(item, status) or not isinstance(item, _EVENTS):
            continue
        out.write(encode(item).decode() + "\n")
        out.flush()
        seen += 1
        if count is not None and seen >= count:
            return


async def _table(client: Client, count: int | None, console: Console, status: Console) -> None:
    rows: dict[str, PriceUpdate] = {}
    seen = 0
    with Live(_render(rows), console=console, refresh_per_second=REFRESH_PER_SECOND) as live:
        async for item in client:
            if _report(item, status) or not isinstance(item, PriceUpdate):
                continue
            rows[item.symbol] = item
            live.update(_render(rows))
            seen += 1
            if count is not None and seen >= count:
                return


def _render(rows: dict[str, PriceUpdate]) -> Table:
    table = Table(title="prices", expand=False)
    for name in ("symbol", "price", "chg", "chg %", "bid", "ask", "volume", "seq", "time"):
        table.add_column(name, justify="left" if name == "symbol" else "right")
    for symbol in sorted(rows):
        update = rows[symbol]
        data = update.data
        colour = "green" if data.change >= 0 else "red"
        table.add_row(
            symbol,
            f"{data.price:,.2f}",
            f"[{colour}]{data.change:+,.2f}",
            f"[{colour}]{data.change_pct:+.2f}%",
            f"{data.bid:,.2f}",
            f"{data.ask:,.2f}",
            f"{data.volume:,}",
            str(update.seq),
            _clock(update.timestamp),
        )
    return table


async def _log(client: Client, count: int | None, console: Console, status: Console) -> None:
    seen = 0
    async for item in client:
        if _report(item, status):
            continue
        console.print(_line(item))
        seen += 1
        if count is not None and seen >= count:
            return


def _line(item: Item) -> str:
    match item:
        case AlertTriggered(data=d, seq=seq, timestamp=t):
            return (
                f"{_clock(t)} #{seq} [bold]{d.severity.upper()}[/] {d.symbol} {d.type}: {d.message}"
            )
        case TradingSignal(data=d, seq=seq, timestamp=t):
            return (
                f"{_clock(t)} #{seq} {d.symbol} [bold]{d.action.upper()}[/] "
                f"({d.confidence:.0%}): {d.reasoning}"
            )
        case PortfolioUpdate(data=d, seq=seq, timestamp=t):
            return (
                f"{_clock(t)} #{seq} total {d.total_value:,.2f} cash {d.cash:,.2f} "
                f"day {d.day_change:+,.2f} ({d.day_change_pct:+.2f}%), "
                f"{len(d.positions)} positions"
            )
        case Notification(data=d, seq=seq, timestamp=t):
            return f"{_clock(t)} #{seq} [{d.type}] {d.message}"
        case PriceUpdate(symbol=symbol, data=d, seq=seq, timestamp=t):
            return f"{_clock(t)} #{seq} {symbol} {d.price:,.2f} ({d.change_pct:+.2f}%)"
    return str(item)


def _clock(stamp: datetime) -> str:
    return stamp.astimezone().strftime("%H:%M:%S")


def run(options: ListenOptions) -> int:
    """Run the viewer until interrupted; the process's exit status."""
    try:
        trio.run(listen, options, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        return 0
    except ClientError as exc:
        sys.stderr.write(f"realtime listen: {exc}\n")
        return 1
    return 0
