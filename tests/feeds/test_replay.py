"""Replay of recorded quotes: the formats, their errors, and the schedule on a virtual clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
import trio.testing

import protocol as p
from feeds import SAMPLE_REPLAY, RecordedQuote, ReplayFeed, load_quotes
from feeds._replay import LOOP_PAUSE, MAX_REPLAY_ROWS

from .doubles import Recorder


def test_the_shipped_sample_loads() -> None:
    quotes = load_quotes(SAMPLE_REPLAY)
    assert len(quotes) == 180
    assert {q.symbol for q in quotes} == {"AAPL", "AMZN", "GOOG", "IBM", "MSFT"}
    assert quotes[0] == RecordedQuote(
        time=datetime(2007, 1, 1, tzinfo=UTC).timestamp(), symbol="AAPL", price=85.73
    )
    assert [q.time for q in quotes] == sorted(q.time for q in quotes)
    assert (SAMPLE_REPLAY.parent / "README.md").read_text().count("MIT") >= 2


def test_csv_with_every_column(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text(
        "time,symbol,price,volume,bid,ask\n"
        "2024-03-01T14:30:01Z,AAPL,180.5,1000,180.49,180.51\n"
        "2024-03-01T14:30:00+00:00,MSFT,410,,,\n"
        "\n"
        "1709303402.5,AAPL,180.75,2500.0,180.7,180.8\n"
    )
    quotes = load_quotes(path)
    # Sorted by time; an empty cell is an absent value.
    assert [q.symbol for q in quotes] == ["MSFT", "AAPL", "AAPL"]
    assert quotes[0] == RecordedQuote(time=1709303400.0, symbol="MSFT", price=410.0)
    assert quotes[2] == RecordedQuote(1709303402.5, "AAPL", 180.75, 2500, 180.7, 180.8)


def test_ndjson(tmp_path: Path) -> None:
    path = tmp_path / "q.ndjson"
    path.write_text(
        '{"time": "2024-03-01", "symbol": "KO", "price": 60.1, "volume": 5}\n\n'
        '{"time": 1709337600, "symbol": "KO", "price": 60.2, "bid": 60.19, "ask": 60.21}\n'
    )
    assert load_quotes(path) == (
        RecordedQuote(1709251200.0, "KO", 60.1, 5),
        RecordedQuote(1709337600.0, "KO", 60.2, 0, 60.19, 60.21),
    )


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("q.txt", "", "replay files are .csv or .ndjson"),
        ("q.csv", "", "empty file"),
        ("q.csv", "time,symbol\n", "q.csv:1: missing column 'price'"),
        ("q.csv", "time,symbol,price,colour\n", "q.csv:1: unknown column 'colour'"),
        ("q.csv", "time,symbol,price\n", "no quotes"),
        ("q.csv", "time,symbol,price\n2024-01-01,AAPL\n", "q.csv:2: 2 fields, the header has 3"),
        ("q.csv", "time,symbol,price\nnoon,AAPL,1\n", "q.csv:2: time must be an ISO 8601"),
        ("q.csv", "time,symbol,price\n2024-01-01,aapl,1\n", "q.csv:2: symbol must be a ticker"),
        ("q.csv", "time,symbol,price\n2024-01-01,AAPL,-1\n", "q.csv:2: price must be a finite"),
        ("q.csv", "time,symbol,price\n2024-01-01,AAPL,nan\n", "q.csv:2: price must be a finite"),
        ("q.csv", "time,symbol,price,volume\n1,A,1,1.5\n", "q.csv:2: volume must be a whole"),
        ("q.csv", "time,symbol,price,bid,ask\n1,A,1,2,1\n", "q.csv:2: bid 2.0 is above ask 1.0"),
        ("q.ndjson", "[1]\n", "q.ndjson:1: each line must be a JSON object"),
        ("q.ndjson", "{\n", "q.ndjson:1: not valid JSON"),
        ("q.ndjson", '{"time":1,"symbol":"A","price":true}\n', "price must be a number"),
        ("q.ndjson", '{"time":1,"symbol":"A","price":1,"x":1}\n', "unknown column 'x'"),
    ],
)
def test_bad_files_name_the_file_and_line(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as raised:
        load_quotes(path)
    assert str(raised.value).startswith(str(path))


def test_row_count_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import feeds._replay

    monkeypatch.setattr(feeds._replay, "MAX_REPLAY_ROWS", 3)
    path = tmp_path / "q.csv"
    path.write_text("time,symbol,price\n" + "1,A,1\n" * 4)
    with pytest.raises(ValueError, match="more than 3 rows"):
        load_quotes(path)
    assert MAX_REPLAY_ROWS == 1_000_000


def test_speed_is_validated() -> None:
    quotes = (RecordedQuote(0.0, "A", 1.0),)
    for speed in (0.0, -1.0, float("nan"), 1e10):
        with pytest.raises(ValueError, match="replay speed must be > 0"):
            ReplayFeed(quotes, speed=speed)


async def test_plays_on_the_recorded_schedule_then_loops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    quotes = (
        RecordedQuote(1000.0, "AAPL", 100.0, 10),
        RecordedQuote(1000.0, "MSFT", 50.0),
        RecordedQuote(1010.0, "AAPL", 101.0, 20, 100.9, 101.1),
        RecordedQuote(1030.0, "MSFT", 49.0),
    )
    replay = ReplayFeed(quotes, speed=10.0, name="test.csv")
    recorder = Recorder()
    start = trio.current_time()
    with trio.move_on_after(3.0 + LOOP_PAUSE + 0.5):
        await replay.run(recorder)
    prices = [(round(i.time - start, 6), i.symbol, i.data) for i in recorder.items[:4]]
    assert prices == [
        (
            0.0,
            "AAPL",
            p.PriceData(price=100.0, change=0, change_pct=0, volume=10, bid=100, ask=100),
        ),
        (0.0, "MSFT", p.PriceData(price=50.0, change=0, change_pct=0, volume=0, bid=50, ask=50)),
        (
            1.0,
            "AAPL",
            p.PriceData(price=101.0, change=1, change_pct=1, volume=20, bid=100.9, ask=101.1),
        ),
        (3.0, "MSFT", p.PriceData(price=49.0, change=-1, change_pct=-2, volume=0, bid=49, ask=49)),
    ]
    note = recorder.items[4]
    assert note.channel is p.Channel.NOTIFICATIONS
    assert isinstance(note.data, p.NotificationData)
    assert note.data.message == "Replay of test.csv finished pass 1 (4 quotes); starting over in 1s"
    # The second pass starts LOOP_PAUSE later, from the first row.
    assert [i.symbol for i in recorder.items[5:]] == ["AAPL", "MSFT"]
    assert recorder.items[5].time - start == pytest.approx(3.0 + LOOP_PAUSE)
    assert replay.passes == 1
    assert replay.symbols == ("AAPL", "MSFT")


async def test_a_restart_resumes_where_it_stopped(autojump_clock: trio.testing.MockClock) -> None:
    quotes = tuple(RecordedQuote(float(t), "A", 1.0 + t) for t in range(10))
    replay = ReplayFeed(quotes, speed=1.0)
    recorder = Recorder()
    with trio.move_on_after(4.5):
        await replay.run(recorder)
    with trio.move_on_after(2.5):
        await replay.run(recorder)
    prices = [i.data.price for i in recorder.items if isinstance(i.data, p.PriceData)]
    assert prices == [1.0 + t for t in range(8)]
    gaps = [b.time - a.time for a, b in itertools.pairwise(recorder.items)]
    assert gaps[:4] == pytest.approx([1.0] * 4)
