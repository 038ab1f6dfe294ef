"""Alert rules evaluated on every price tick, each firing once per crossing.

Theory of operation
-------------------
An :class:`AlertRule` watches one symbol for one condition. :class:`AlertEngine`
keeps, per rule, whether it is *armed*; :meth:`AlertEngine.observe` takes one quote
and returns the alerts it fires. A rule fires only while armed and then disarms; it
re-arms only once the value has moved back past the threshold by the rule's
hysteresis band. So a price hovering around a threshold fires once, not on every
tick, and fires again only after a real retreat and a new crossing.

==============  ====================================  ==============================
type            fires when (armed)                    re-arms when
==============  ====================================  ==============================
price_above     price >= T                            price < T * (1 - h)
price_below     price <= T                            price > T * (1 + h)
percent_move    abs(change_pct) >= T (percent)        abs(change_pct) < T * (1 - h)
volume_spike    volume rate >= T x its recent mean    rate < T * (1 - h) x the mean
==============  ====================================  ==============================

``h`` is the rule's ``hysteresis``, a fraction of the threshold (defaults in
:data:`DEFAULT_HYSTERESIS`). A price rule starts armed only if the first price seen
is on the near side of the threshold: a price that is already above ``T`` when the
rule is first evaluated has not *crossed* it. Move and volume rules start armed.

Volume rate: ``volume`` in a quote is the cumulative session volume, so the rate is
the volume added since the previous quote of the symbol divided by the time between
them (``now``, from the caller's clock). Its recent mean is over the last
:data:`VOLUME_WINDOW` rates; a rule needs :data:`VOLUME_MIN_SAMPLES` of them before
it can fire. A volume that goes down (a new session, a replay starting over) resets
the history.

A rule may belong to a ``user`` (a token's ``sub``): its alerts then go to that
user's connections alone (the feed publishes them with ``user``), and its id is that
user's, so two users may each have a rule ``aapl-185``. A rule without a user (the
rule file's, the demo set's, most of the API key's) fires to every subscriber. One
user holds at most :data:`MAX_RULES_PER_USER` rules, so that no user can fill the
engine's :data:`MAX_RULES` for everyone else.

Everything here is synchronous and reads no clock: time comes in as ``now``.
"""

from __future__ import annotations

import enum
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import attrs
import trio

from protocol import SYMBOL_PATTERN, AlertData, Channel, PriceData, Severity

from ._files import Fields, load_toml
from ._publisher import MAX_USER_LENGTH, Publisher
from ._tap import PriceTap

#: Most rules one engine holds (from files and added at run time together).
MAX_RULES: Final = 10_000
#: Most rules one user holds.
MAX_RULES_PER_USER: Final = 100
#: Volume rates averaged into a symbol's baseline.
VOLUME_WINDOW: Final = 20
#: Rates needed in the baseline before a volume rule can fire.
VOLUME_MIN_SAMPLES: Final = 5

_E = TypeVar("_E", bound=enum.StrEnum)
_T = TypeVar("_T")

_RULE_ID_RE: Final = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_SYMBOL_RE: Final = re.compile(SYMBOL_PATTERN)


class AlertType(enum.StrEnum):
    """What a rule watches; the ``type`` of the alerts it fires."""

    PRICE_ABOVE = "price_above"
    PRICE_BELOW = "price_below"
    PERCENT_MOVE = "percent_move"
    VOLUME_SPIKE = "volume_spike"


#: Hysteresis of each rule type when a rule does not set its own (a fraction of T).
DEFAULT_HYSTERESIS: Final[Mapping[AlertType, float]] = {
    AlertType.PRICE_ABOVE: 0.002,
    AlertType.PRICE_BELOW: 0.002,
    AlertType.PERCENT_MOVE: 0.25,
    AlertType.VOLUME_SPIKE: 0.25,
}


class RuleError(ValueError):
    """A rule that cannot be built: a bad table, field or value.

    ``field`` names the field at fault (``"symbol"``, ...), or is ``None`` when the
    table as a whole is (not a table, an unknown field). The message names the field
    too, for a person; ``field`` is for code that maps errors to codes (the HTTP API).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _check_id(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not _RULE_ID_RE.fullmatch(value):
        raise RuleError(
            f"rule id must be 1-64 of A-Z a-z 0-9 _ . : -, got {value!r}", attribute.name
        )


def _check_symbol(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not _SYMBOL_RE.fullmatch(value):
        raise RuleError(
            f"symbol must be a ticker matching {SYMBOL_PATTERN}, got {value!r}", attribute.name
        )


def _check_threshold(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not (isinstance(value, int | float) and 0 < value < math.inf):
        raise RuleError(f"threshold must be a finite number above 0, got {value!r}", attribute.name)


def _check_user(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_USER_LENGTH:
        raise RuleError(
            f"user must be a user name (a token's sub) of 1-{MAX_USER_LENGTH} characters, "
            f"got {value!r}"[:200],
            attribute.name,
        )


def _check_hysteresis(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not (isinstance(value, int | float) and 0 <= value < 1):
        raise RuleError(f"hysteresis must be at least 0 and below 1, got {value!r}", attribute.name)


@attrs.frozen(kw_only=True)
class AlertRule:
    """One condition on one symbol. Validated on construction (:exc:`ValueError`; a
    :exc:`RuleError` naming the field for a bad id, symbol, threshold or hysteresis)."""

    #: Unique among an engine's rules; alerts it fires have ids ``{id}-{n}``.
    id: str = attrs.field(validator=_check_id)
    symbol: str = attrs.field(validator=_check_symbol)
    type: AlertType = attrs.field(converter=AlertType)
    #: Dollars for price rules, percent for ``percent_move``, a multiple for ``volume_spike``.
    threshold: float = attrs.field(validator=_check_threshold)
    severity: Severity = attrs.field(default=Severity.WARNING, converter=Severity)
    #: Re-arm band as a fraction of ``threshold``; ``None``: the type's default.
    hysteresis: float | None = attrs.field(default=None, validator=_check_hysteresis)
    #: The user whose rule it is, and who alone gets its alerts; ``None``: everyone's.
    user: str | None = attrs.field(default=None, validator=_check_user)

    @property
    def band(self) -> float:
        """The hysteresis in force."""
        return DEFAULT_HYSTERESIS[self.type] if self.hysteresis is None else self.hysteresis


def _money(value: float) -> str:
    return f"${value:,.0f}" if value == int(value) else f"${value:,.2f}"


def _number(value: float) -> str:
    return f"{value:g}"


@attrs.frozen
class Fired:
    """An alert a rule fired, and the user it is for (``None``: every subscriber)."""

    alert: AlertData
    user: str | None


class _RuleState:
    __slots__ = ("armed", "fired", "rule")

    def __init__(self, rule: AlertRule) -> None:
        self.rule = rule
        #: None until the rule's first evaluation (price rules decide it from the side).
        self.armed: bool | None = None
        self.fired = 0


class _VolumeState:
    __slots__ = ("last_time", "last_volume", "rates")

    def __init__(self) -> None:
        self.last_volume: int | None = None
        self.last_time = 0.0
        self.rates: deque[float] = deque(maxlen=VOLUME_WINDOW)


class AlertEngine:
    """The rules and their armed state; synchronous (see the module doc).

    A rule is known by its user and its id: ids are unique per user (``None``, the
    rules of no user, counting as one).
    """

    def __init__(self, rules: Iterable[AlertRule] = ()) -> None:
        self._states: dict[tuple[str | None, str], _RuleState] = {}
        self._by_symbol: dict[str, list[_RuleState]] = {}
        self._per_user: dict[str | None, int] = {}
        self._volumes: dict[str, _VolumeState] = {}
        for rule in rules:
            if (rule.user, rule.id) in self._states:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            self.add_rule(rule)

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        """The rules, in the order they were added."""
        return tuple(state.rule for state in self._states.values())

    def rules_of(self, user: str | None) -> tuple[AlertRule, ...]:
        """The rules of ``user`` (``None``: the rules of no user), in the order added."""
        return tuple(state.rule for (owner, _), state in self._states.items() if owner == user)

    def count_of(self, user: str | None) -> int:
        """How many rules ``user`` holds."""
        return self._per_user.get(user, 0)

    def __len__(self) -> int:
        """How many rules the engine holds (at most :data:`MAX_RULES`)."""
        return len(self._states)

    def __contains__(self, rule_id: object) -> bool:
        """Whether the engine holds a rule of no user with the id ``rule_id``."""
        return (None, rule_id) in self._states

    def get(self, rule_id: str, user: str | None = None) -> AlertRule | None:
        """The rule ``rule_id`` of ``user`` (``None``: of no user), if there is one."""
        state = self._states.get((user, rule_id))
        return None if state is None else state.rule

    def add_rule(self, rule: AlertRule) -> None:
        """Add ``rule``, replacing (and resetting) the rule with the same user and id.

        Raises :exc:`ValueError` when the engine already holds :data:`MAX_RULES`, or
        the rule's user :data:`MAX_RULES_PER_USER`.
        """
        key = (rule.user, rule.id)
        if key not in self._states:
            if len(self._states) >= MAX_RULES:
                raise ValueError(f"too many alert rules: at most {MAX_RULES}")
            if rule.user is not None and self.count_of(rule.user) >= MAX_RULES_PER_USER:
                raise ValueError(
                    f"too many alert rules for user {rule.user[:64]!r}: at most "
                    f"{MAX_RULES_PER_USER} each"
                )
        self.remove_rule(rule.id, rule.user)
        state = _RuleState(rule)
        self._states[key] = state
        self._per_user[rule.user] = self.count_of(rule.user) + 1
        self._by_symbol.setdefault(rule.symbol, []).append(state)

    def remove_rule(self, rule_id: str, user: str | None = None) -> bool:
        """Remove the rule ``rule_id`` of ``user`` (``None``: of no user); whether
        there was one."""
        state = self._states.pop((user, rule_id), None)
        if state is None:
            return False
        left = self._per_user[user] - 1
        if left:
            self._per_user[user] = left
        else:
            del self._per_user[user]
        siblings = self._by_symbol[state.rule.symbol]
        siblings.remove(state)
        if not siblings:
            del self._by_symbol[state.rule.symbol]
        return True

    def replace_rules(self, rules: Iterable[AlertRule]) -> None:
        """Hold exactly ``rules`` (unique by user and id): add the new ones, remove the
        gone or changed ones, and keep each unchanged rule with its armed state and
        firing count, so that following a shared set of rules (a cluster's, in Redis)
        fires no crossing twice. Raises :exc:`ValueError` as :meth:`add_rule` does
        when ``rules`` exceed the limits."""
        wanted = {(rule.user, rule.id): rule for rule in rules}
        for (user, rule_id), state in list(self._states.items()):
            if wanted.get((user, rule_id)) != state.rule:
                self.remove_rule(rule_id, user)
        for key, rule in wanted.items():
            if key not in self._states:
                self.add_rule(rule)

    def fire(self, symbol: str, quote: PriceData, now: float) -> list[Fired]:
        """Evaluate every rule of ``symbol`` on ``quote`` seen at time ``now`` (seconds,
        any monotonic origin); the alerts fired, each with its rule's user, in rule
        order."""
        states = self._by_symbol.get(symbol)
        ratio = self._volume_ratio(symbol, quote.volume, now)
        if not states:
            return []
        fired = []
        for state in states:
            alert = self._evaluate(state, quote, ratio)
            if alert is not None:
                fired.append(Fired(alert, state.rule.user))
        return fired

    def observe(self, symbol: str, quote: PriceData, now: float) -> list[AlertData]:
        """:meth:`fire`'s alerts alone, whoever they are for."""
        return [fired.alert for fired in self.fire(symbol, quote, now)]

    def _volume_ratio(self, symbol: str, volume: int, now: float) -> float | None:
        track = self._volumes.get(symbol)
        if track is None:
            track = self._volumes[symbol] = _VolumeState()
        last = track.last_volume
        if last is None or volume < last:
            track.last_volume, track.last_time = volume, now
            track.rates.clear()
            return None
        dt = now - track.last_time
        if dt <= 0:
            return None  # the volume counts into the next interval
        rate = (volume - last) / dt
        track.last_volume, track.last_time = volume, now
        rates = track.rates
        ratio = None
        if len(rates) >= VOLUME_MIN_SAMPLES:
            mean = sum(rates) / len(rates)
            ratio = rate / mean if mean > 0 else None
        rates.append(rate)
        return ratio

    def _evaluate(
        self, state: _RuleState, quote: PriceData, ratio: float | None
    ) -> AlertData | None:
        rule = state.rule
        threshold, band = rule.threshold, rule.band
        kind = rule.type
        if kind is AlertType.PRICE_ABOVE:
            value = quote.price
            crossed, rearm = value >= threshold, value < threshold * (1 - band)
            initial = value < threshold
        elif kind is AlertType.PRICE_BELOW:
            value = quote.price
            crossed, rearm = value <= threshold, value > threshold * (1 + band)
            initial = value > threshold
        elif kind is AlertType.PERCENT_MOVE:
            value = abs(quote.change_pct)
            crossed, rearm = value >= threshold, value < threshold * (1 - band)
            initial = True
        else:
            if ratio is None:
                return None
            value = ratio
            crossed, rearm = value >= threshold, value < threshold * (1 - band)
            initial = True
        if state.armed is None:
            state.armed = initial
        if not state.armed:
            if rearm:
                state.armed = True
            return None
        if not crossed:
            return None
        state.armed = False
        state.fired += 1
        return AlertData(
            id=f"{rule.id}-{state.fired}",
            symbol=rule.symbol,
            type=str(kind),
            message=_message(rule, quote, value),
            severity=rule.severity,
        )


def _message(rule: AlertRule, quote: PriceData, value: float) -> str:
    symbol, threshold = rule.symbol, rule.threshold
    if rule.type is AlertType.PRICE_ABOVE:
        return f"{symbol} crossed {_money(threshold)} going up: now ${quote.price:,.2f}"
    if rule.type is AlertType.PRICE_BELOW:
        return f"{symbol} crossed {_money(threshold)} going down: now ${quote.price:,.2f}"
    if rule.type is AlertType.PERCENT_MOVE:
        direction = "up" if quote.change_pct >= 0 else "down"
        return (
            f"{symbol} is {direction} {abs(quote.change_pct):.2f}% since the open "
            f"(alert at {_number(threshold)}%): now ${quote.price:,.2f}"
        )
    return (
        f"{symbol} volume spike: trading at {value:.1f}x its recent rate "
        f"(alert at {_number(threshold)}x)"
    )


# --- rule files and the demo set --------------------------------------------------------

_RULE_FIELDS: Final = {"id", "symbol", "type", "threshold", "severity", "hysteresis", "user"}


def load_rules(path: Path) -> tuple[AlertRule, ...]:
    """The rules of the TOML file ``path`` (``[[rules]]`` tables; see docs/feeds.md).

    Raises :exc:`ValueError` naming the file, the rule and the field on any problem:
    unreadable or invalid TOML, an unknown or missing field, a bad value, a duplicate
    id, more than :data:`MAX_RULES` rules.
    """
    document = load_toml(path)
    unknown = sorted(set(document) - {"rules"})
    if unknown:
        raise ValueError(f"{path}: unknown top-level key {unknown[0]!r} (expected [[rules]])")
    tables = document.get("rules", [])
    if not isinstance(tables, list):
        raise ValueError(f"{path}: 'rules' must be an array of tables ([[rules]])")
    if len(tables) > MAX_RULES:
        raise ValueError(f"{path}: {len(tables)} rules, at most {MAX_RULES}")
    rules: list[AlertRule] = []
    seen: set[tuple[str | None, str]] = set()
    users: dict[str, int] = {}
    for i, table in enumerate(tables):
        where = f"{path}: rules[{i}]"
        rule = parse_rule(table, where)
        if (rule.user, rule.id) in seen:
            raise ValueError(f"{where}: duplicate rule id {rule.id!r}")
        seen.add((rule.user, rule.id))
        if rule.user is not None:
            users[rule.user] = users.get(rule.user, 0) + 1
            if users[rule.user] > MAX_RULES_PER_USER:
                raise ValueError(
                    f"{where}: more than {MAX_RULES_PER_USER} rules for user {rule.user[:64]!r}"
                )
        rules.append(rule)
    return tuple(rules)


def parse_rule(table: object, where: str) -> AlertRule:
    """The rule of one table: a ``[[rules]]`` entry of a rule file, or a decoded JSON
    object (the HTTP API), so that both are validated alike and fail alike.

    Raises :exc:`RuleError` whose message starts with ``where`` and names the field:
    not a table, an unknown or missing field, a mistyped or out-of-range value, or a
    null (JSON only: leaving an optional field out is how to get its default).
    Checks nothing across rules (duplicate ids, the count, the price universe).
    """
    try:
        fields = Fields(table, where)
        fields.check_keys(_RULE_FIELDS)
    except ValueError as exc:
        raise RuleError(str(exc)) from None
    for key in sorted(_RULE_FIELDS):
        # Fields reads a null as absent and would call a required one "missing".
        if fields.has(key) and fields.raw(key) is None:
            raise RuleError(f"{where}.{key} must not be null", key)
    rule_id = _read(fields, "id", fields.string)
    symbol = _read(fields, "symbol", fields.string)
    kind = _read(fields, "type", lambda key: _choice(fields, key, AlertType))
    threshold = _read(fields, "threshold", fields.number)
    severity = _read(
        fields, "severity", lambda key: _choice(fields, key, Severity, Severity.WARNING)
    )
    hysteresis = _read(fields, "hysteresis", fields.number) if fields.has("hysteresis") else None
    user = _read(fields, "user", fields.string) if fields.has("user") else None
    try:
        return AlertRule(
            id=rule_id,
            symbol=symbol,
            type=kind,
            threshold=threshold,
            severity=severity,
            hysteresis=hysteresis,
            user=user,
        )
    except ValueError as exc:
        field = exc.field if isinstance(exc, RuleError) else None
        raise RuleError(f"{where}: {exc}", field) from None


def _read(fields: Fields, key: str, read: Callable[[str], _T]) -> _T:
    """``read(key)``, its :exc:`ValueError` (which names ``fields.where``) tagged with ``key``."""
    try:
        return read(key)
    except ValueError as exc:
        raise RuleError(str(exc), key) from None


def _choice(fields: Fields, key: str, kind: type[_E], default: _E | None = None) -> _E:
    raw = fields.string(key, None if default is None else str(default))
    try:
        return kind(raw)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValueError(f"{fields.where}.{key} must be one of {allowed}, got {raw!r}") from None


#: How many symbols of the universe the demo rules cover.
DEMO_SYMBOLS: Final = 4


def demo_rules(opens: Mapping[str, float]) -> tuple[AlertRule, ...]:
    """The built-in rules for a demo: on the first :data:`DEMO_SYMBOLS` symbols of
    ``opens`` (symbol to opening price), a price 0.2% above and below the open, a 0.5%
    move (warning) and a 1% move (critical); a volume spike rule (1.8x) on the first.
    The simulated prices cross these within seconds."""
    rules: list[AlertRule] = []
    for n, (symbol, open_) in enumerate(list(opens.items())[:DEMO_SYMBOLS]):
        key = symbol.lower()
        rules += [
            AlertRule(
                id=f"{key}-above",
                symbol=symbol,
                type=AlertType.PRICE_ABOVE,
                threshold=max(0.01, round(open_ * 1.002, 2)),
                severity=Severity.INFO,
            ),
            AlertRule(
                id=f"{key}-below",
                symbol=symbol,
                type=AlertType.PRICE_BELOW,
                threshold=max(0.01, round(open_ * 0.998, 2)),
                severity=Severity.INFO,
            ),
            AlertRule(id=f"{key}-move", symbol=symbol, type=AlertType.PERCENT_MOVE, threshold=0.5),
            AlertRule(
                id=f"{key}-big-move",
                symbol=symbol,
                type=AlertType.PERCENT_MOVE,
                threshold=1.0,
                severity=Severity.CRITICAL,
            ),
        ]
        if n == 0:
            rules.append(
                AlertRule(
                    id=f"{key}-volume",
                    symbol=symbol,
                    type=AlertType.VOLUME_SPIKE,
                    threshold=1.8,
                    severity=Severity.INFO,
                )
            )
    return tuple(rules)


# --- the feed ---------------------------------------------------------------------------


class AlertFeed:
    """The alert feed: evaluates the engine's rules on every price of ``tap``.

    The engine (rules and their armed state) outlives any one run, so a restarted
    feed neither forgets rules added at run time nor fires again for a crossing it
    already reported.
    """

    def __init__(self, tap: PriceTap, rules: Iterable[AlertRule] = ()) -> None:
        self.tap = tap
        self.engine = AlertEngine(rules)

    async def run(
        self, publisher: Publisher, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Publish ``alert_triggered`` events until cancelled, each to its rule's user
        (or every subscriber, for a rule of no user); never returns.

        Reports ``task_status.started()`` once it watches the tap. Each price batch
        is evaluated at ``trio.current_time()``; publishing blocks while the bus is
        full (the tap conflates prices meanwhile). Exceptions of ``publisher``
        propagate.
        """
        async with self.tap.open_stream() as stream:
            task_status.started()
            while True:
                batch = await stream.receive()
                now = trio.current_time()
                for symbol, quote in batch:
                    for fired in self.engine.fire(symbol, quote, now):
                        await publisher.publish(Channel.ALERTS, fired.alert, user=fired.user)
