"""Alert rules: once per crossing with hysteresis, files with clear errors, the feed on a clock."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

import protocol as p
from feeds import (
    MAX_RULES,
    MAX_RULES_PER_USER,
    AlertEngine,
    AlertFeed,
    AlertRule,
    AlertType,
    PriceFeed,
    PriceFeedConfig,
    PriceTap,
    demo_rules,
    load_rules,
)
from feeds._alerts import VOLUME_MIN_SAMPLES

from .doubles import Recorder, quote


def _run(engine: AlertEngine, symbol: str, prices: list[float]) -> list[p.AlertData]:
    fired = []
    for t, price in enumerate(prices):
        fired += engine.observe(symbol, quote(price), float(t))
    return fired


def test_price_above_fires_once_per_crossing() -> None:
    rule = AlertRule(id="aapl-185", symbol="AAPL", type="price_above", threshold=185.0)
    engine = AlertEngine([rule])
    # Hovering around 185 fires once; re-arming needs a drop below 185 * (1 - 0.002).
    fired = _run(engine, "AAPL", [184.0, 185.0, 184.9, 185.1, 184.8, 185.2, 184.62, 185.0])
    assert [a.id for a in fired] == ["aapl-185-1", "aapl-185-2"]
    first = fired[0]
    assert first == p.AlertData(
        id="aapl-185-1",
        symbol="AAPL",
        type="price_above",
        message="AAPL crossed $185 going up: now $185.00",
        severity=p.Severity.WARNING,
    )
    assert _run(engine, "MSFT", [190.0]) == []  # other symbols: no rules


def test_price_rule_does_not_fire_when_it_starts_beyond_the_threshold() -> None:
    above = AlertRule(id="up", symbol="AAPL", type="price_above", threshold=185.0)
    below = AlertRule(id="down", symbol="AAPL", type="price_below", threshold=180.5)
    engine = AlertEngine([above, below])
    assert _run(engine, "AAPL", [186.0, 187.0]) == []  # already above: no crossing yet
    fired = _run(engine, "AAPL", [184.0, 185.0, 180.5])
    assert [(a.id, a.message) for a in fired] == [
        ("up-1", "AAPL crossed $185 going up: now $185.00"),
        ("down-1", "AAPL crossed $180.50 going down: now $180.50"),
    ]


def test_custom_hysteresis_and_zero_band() -> None:
    wide = AlertRule(id="w", symbol="X", type="price_below", threshold=100, hysteresis=0.05)
    tight = AlertRule(id="t", symbol="X", type="price_below", threshold=100, hysteresis=0)
    engine = AlertEngine([wide, tight])
    fired = _run(engine, "X", [101, 100, 100.5, 100, 104, 100, 106, 99])
    assert [a.id for a in fired] == ["w-1", "t-1", "t-2", "t-3", "w-2", "t-4"]


def test_percent_move_both_ways_with_hysteresis() -> None:
    rule = AlertRule(
        id="move", symbol="TSLA", type="percent_move", threshold=2, severity="critical"
    )
    engine = AlertEngine([rule])
    fired = []
    for price in (100.0, 101.0, 102.0, 101.8, 102.5, 101.4, 98.0):
        fired += engine.observe("TSLA", quote(price), 0.0)
    # Fires at +2%, stays quiet while above 1.5% (2 * (1 - 0.25)), re-arms at +1.4%.
    assert [a.message for a in fired] == [
        "TSLA is up 2.00% since the open (alert at 2%): now $102.00",
        "TSLA is down 2.00% since the open (alert at 2%): now $98.00",
    ]
    assert {a.severity for a in fired} == {p.Severity.CRITICAL}


def test_volume_spike_needs_a_baseline_and_fires_once() -> None:
    rule = AlertRule(id="vol", symbol="NVDA", type="volume_spike", threshold=3, severity="info")
    engine = AlertEngine([rule])
    volume, fired = 0, []

    def step(added: int, t: float) -> None:
        nonlocal volume
        volume += added
        fired.extend(engine.observe("NVDA", quote(100, volume=volume), t))

    step(0, 0.0)
    step(5000, 1.0)  # a spike before any baseline: too early to judge
    for t in range(2, 2 + VOLUME_MIN_SAMPLES):
        step(1000, float(t))
    assert fired == []
    step(4000, 7.0)  # 4000/s against a mean near 1667/s: 2.4x, below 3x
    assert fired == []
    step(9000, 8.0)  # far above
    step(9000, 9.0)  # still high: no second alert
    assert [a.id for a in fired] == ["vol-1"]
    assert fired[0].message.startswith("NVDA volume spike: trading at ")
    assert fired[0].message.endswith("x its recent rate (alert at 3x)")
    step(500, 9.0)  # no time passed: counted into the next interval, judged then
    assert len(fired) == 1


def test_volume_going_down_resets_the_baseline() -> None:
    rule = AlertRule(id="vol", symbol="A", type="volume_spike", threshold=2)
    engine = AlertEngine([rule])
    for t in range(10):
        engine.observe("A", quote(10, volume=1000 * t), float(t))
    # A new session: cumulative volume restarts; no spike is inferred from the reset.
    assert engine.observe("A", quote(10, volume=10), 10.0) == []
    assert engine.observe("A", quote(10, volume=100_000), 11.0) == []  # no baseline yet


def test_rules_can_be_added_replaced_and_removed() -> None:
    engine = AlertEngine()
    rule = AlertRule(id="r", symbol="A", type="price_above", threshold=10)
    engine.add_rule(rule)
    assert _run(engine, "A", [9, 10]) != []
    engine.add_rule(AlertRule(id="r", symbol="A", type="price_above", threshold=20))
    assert len(engine.rules) == 1
    assert engine.rules[0].threshold == 20
    assert engine.remove_rule("r") is True
    assert engine.remove_rule("r") is False
    assert _run(engine, "A", [19, 21]) == []


def test_replacing_the_rules_keeps_the_armed_state_of_the_unchanged_ones() -> None:
    kept = AlertRule(id="kept", symbol="A", type="price_above", threshold=10)
    changed = AlertRule(id="changed", symbol="A", type="price_above", threshold=10)
    gone = AlertRule(id="gone", symbol="A", type="price_above", threshold=10)
    engine = AlertEngine([kept, changed, gone])
    assert [a.id for a in _run(engine, "A", [9, 10])] == ["kept-1", "changed-1", "gone-1"]
    new = AlertRule(id="new", symbol="A", type="price_above", threshold=10, user="alice")
    engine.replace_rules([kept, attrs.evolve(changed, threshold=10.5), new])
    assert engine.rules == (kept, attrs.evolve(changed, threshold=10.5), new)
    assert (engine.count_of("alice"), len(engine)) == (1, 3)
    # Still above 10: the kept rule stays disarmed, the others start afresh (a price
    # already beyond the threshold has not crossed it).
    assert _run(engine, "A", [10.6, 10.7]) == []
    assert [a.id for a in _run(engine, "A", [9, 10.6])] == ["kept-2", "changed-1", "new-1"]


def test_rule_count_is_bounded() -> None:
    engine = AlertEngine(
        AlertRule(id=f"r{i}", symbol="A", type="price_above", threshold=1) for i in range(MAX_RULES)
    )
    with pytest.raises(ValueError, match=f"at most {MAX_RULES}"):
        engine.add_rule(AlertRule(id="one-more", symbol="A", type="price_above", threshold=1))
    engine.add_rule(AlertRule(id="r0", symbol="B", type="price_below", threshold=1))  # replace


def test_a_user_s_rules_are_that_user_s_and_fire_to_that_user() -> None:
    engine = AlertEngine(
        [
            AlertRule(id="r", symbol="A", type="price_above", threshold=10),
            AlertRule(id="r", symbol="A", type="price_above", threshold=10, user="alice"),
        ]
    )
    # The same id for another user is another rule; a duplicate for one user is refused.
    engine.add_rule(AlertRule(id="r", symbol="A", type="price_above", threshold=20, user="bob"))
    with pytest.raises(ValueError, match="duplicate rule id 'r'"):
        AlertEngine([AlertRule(id="r", symbol="A", type="price_above", threshold=1, user="x")] * 2)
    assert [rule.user for rule in engine.rules] == [None, "alice", "bob"]
    assert [rule.threshold for rule in engine.rules_of("bob")] == [20]
    assert "r" in engine  # a rule of no user
    assert engine.get("r", "alice") is not None
    assert engine.get("r", "carol") is None
    engine.fire("A", quote(9), 0.0)
    fired = engine.fire("A", quote(15), 1.0)
    assert [(f.user, f.alert.id) for f in fired] == [(None, "r-1"), ("alice", "r-1")]
    assert engine.remove_rule("r", "alice") is True
    assert engine.remove_rule("r", "alice") is False
    assert engine.count_of("alice") == 0
    assert [rule.user for rule in engine.rules] == [None, "bob"]


def test_a_user_holds_at_most_max_rules_per_user() -> None:
    engine = AlertEngine(
        AlertRule(id=f"r{i}", symbol="A", type="price_above", threshold=1, user="alice")
        for i in range(MAX_RULES_PER_USER)
    )
    with pytest.raises(ValueError, match=f"for user 'alice': at most {MAX_RULES_PER_USER}"):
        engine.add_rule(
            AlertRule(id="one-more", symbol="A", type="price_above", threshold=1, user="alice")
        )
    engine.add_rule(AlertRule(id="r0", symbol="B", type="price_below", threshold=1, user="alice"))
    engine.add_rule(AlertRule(id="r0", symbol="B", type="price_below", threshold=1, user="bob"))
    assert engine.count_of("alice") == MAX_RULES_PER_USER


async def test_the_feed_publishes_each_alert_to_its_rule_s_user(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    tap = PriceTap(recorder)
    rules = [
        AlertRule(id="all", symbol="A", type="price_above", threshold=10),
        AlertRule(id="mine", symbol="A", type="price_above", threshold=10, user="alice"),
    ]
    feed = AlertFeed(tap, rules)
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run, recorder)
        for price in (9.0, 11.0):
            await tap.publish(p.Channel.PRICES, quote(price), symbol="A")
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    alerts = recorder.on(p.Channel.ALERTS)
    assert [(item.user, item.to) for item in alerts] == [(None, None), ("alice", None)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": "has space"}, "rule id must be"),
        ({"user": ""}, "user must be a user name"),
        ({"user": "x" * 257}, "user must be a user name"),
        ({"symbol": "aapl"}, "symbol must be a ticker"),
        ({"type": "price_sideways"}, "'price_sideways' is not a valid AlertType"),
        ({"threshold": 0}, "threshold must be a finite number above 0"),
        ({"threshold": float("nan")}, "threshold must be a finite number above 0"),
        ({"severity": "meh"}, "'meh' is not a valid Severity"),
        ({"hysteresis": 1.0}, "hysteresis must be at least 0 and below 1"),
    ],
)
def test_bad_rules_are_refused(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "id": "r",
        "symbol": "AAPL",
        "type": "price_above",
        "threshold": 1.0,
    }
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        AlertRule(**fields)  # type: ignore[arg-type]  # values of the wrong type on purpose


def test_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(
        """
[[rules]]
id = "aapl-185"
symbol = "AAPL"
type = "price_above"
threshold = 185

[[rules]]
id = "tsla-move"
symbol = "TSLA"
type = "percent_move"
threshold = 2.5
severity = "critical"
hysteresis = 0.1

[[rules]]
id = "aapl-185"
symbol = "AAPL"
type = "price_above"
threshold = 185
user = "alice"
"""
    )
    assert load_rules(path) == (
        AlertRule(id="aapl-185", symbol="AAPL", type=AlertType.PRICE_ABOVE, threshold=185.0),
        AlertRule(
            id="tsla-move",
            symbol="TSLA",
            type=AlertType.PERCENT_MOVE,
            threshold=2.5,
            severity=p.Severity.CRITICAL,
            hysteresis=0.1,
        ),
        AlertRule(
            id="aapl-185",
            symbol="AAPL",
            type=AlertType.PRICE_ABOVE,
            threshold=185.0,
            user="alice",
        ),
    )


RULE = 'id = "r"\nsymbol = "AAPL"\ntype = "price_above"\nthreshold = 1\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules = [", "not valid TOML"),
        ("rule = 1", "unknown top-level key 'rule'"),
        ("rules = 3", "'rules' must be an array of tables"),
        ("[[rules]]\n" + RULE + "colour = 'red'\n", r"rules\[0\]: unknown field 'colour'"),
        ('[[rules]]\nid = "r"\n', r"rules\[0\]: missing field 'symbol'"),
        ("[[rules]]\n" + RULE.replace("1\n", '"1"\n'), r"rules\[0\].threshold must be a number"),
        ("[[rules]]\n" + RULE.replace("price_above", "up"), "type must be one of price_above"),
        ("[[rules]]\n" + RULE + "severity = 'loud'\n", "severity must be one of info"),
        ("[[rules]]\n" + RULE.replace("AAPL", "aapl"), r"rules\[0\]: symbol must be a ticker"),
        ("[[rules]]\n" + RULE + "[[rules]]\n" + RULE, r"rules\[1\]: duplicate rule id 'r'"),
        ("[[rules]]\n" + RULE + "user = 7\n", r"rules\[0\].user must be a string"),
        (
            "[[rules]]\n" + RULE + "user = 'al'\n" + "[[rules]]\n" + RULE + "user = 'al'\n",
            r"rules\[1\]: duplicate rule id 'r'",
        ),
        (
            "".join(
                f"[[rules]]\n{RULE}user = 'al'\n".replace('"r"', f'"r{i}"') for i in range(101)
            ),
            r"rules\[100\]: more than 100 rules for user 'al'",
        ),
    ],
)
def test_bad_rule_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as raised:
        load_rules(path)
    assert str(raised.value).startswith(str(path))


def test_missing_and_oversized_rule_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        load_rules(tmp_path / "nope.toml")
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (4 * 1024 * 1024 + 1))
    with pytest.raises(ValueError, match="larger than 4194304 bytes"):
        load_rules(big)


def test_demo_rules_cover_the_first_symbols() -> None:
    rules = demo_rules({"AAPL": 190.0, "MSFT": 420.0, "GOOG": 170.0, "AMZN": 185.0, "KO": 62.0})
    assert {rule.symbol for rule in rules} == {"AAPL", "MSFT", "GOOG", "AMZN"}
    assert len({rule.id for rule in rules}) == len(rules)
    by_id = {rule.id: rule for rule in rules}
    assert by_id["aapl-above"].threshold == 190.38
    assert by_id["aapl-below"].threshold == 189.62
    assert by_id["aapl-volume"].type is AlertType.VOLUME_SPIKE


async def test_feed_on_a_seeded_market_fires_each_crossing_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = PriceFeedConfig(symbols=("AAPL",), tick_rate=10.0, seed=11)
    prices = PriceFeed(config)
    recorder = Recorder()
    tap = PriceTap(recorder)
    open_ = prices.market.last("AAPL").price
    rules = [
        AlertRule(id="up", symbol="AAPL", type="price_above", threshold=round(open_ * 1.002, 2)),
        AlertRule(id="down", symbol="AAPL", type="price_below", threshold=round(open_ * 0.998, 2)),
    ]
    alerts = AlertFeed(tap, rules)
    async with trio.open_nursery() as nursery:
        await nursery.start(alerts.run, recorder)
        await nursery.start(prices.run, tap)
        await trio.sleep(120)
        nursery.cancel_scope.cancel()
    quotes = [item.data for item in recorder.on(p.Channel.PRICES)]
    fired = [item.data for item in recorder.on(p.Channel.ALERTS)]
    assert len(quotes) >= 1200
    # An independent model of "once per crossing": the same quotes through a fresh engine.
    expected = AlertEngine(rules)
    model = []
    for t, q in enumerate(quotes):
        assert isinstance(q, p.PriceData)
        model += expected.observe("AAPL", q, float(t))
    assert fired == model
    assert 2 <= len(fired) < len(quotes) // 20  # it fires, and it does not spam
    ids = [a.id for a in fired if isinstance(a, p.AlertData)]
    assert len(set(ids)) == len(ids)
    # Each alert is published right after the quote that fired it.
    kinds = [item.channel for item in recorder.items]
    for i, kind in enumerate(kinds):
        if kind is p.Channel.ALERTS:
            assert kinds[i - 1] in (p.Channel.PRICES, p.Channel.ALERTS)
