"""``/api/alert-rules``: how the rest of the agent system manages the alert rules.

==========================  =====================================================
``GET /api/alert-rules``    200 ``{"rules": [rule, ...]}``, in the order added
``POST /api/alert-rules``   one rule as the body; 201 with the rule as stored
``DELETE /api/alert-rules/ID``  204, no body
==========================  =====================================================

A rule is the JSON object of one ``[[rules]]`` entry of a rule file (``id``,
``symbol``, ``type``, ``threshold``, ``severity``?, ``hysteresis``?, ``user``?),
validated by the very code that reads the files (:func:`feeds.parse_rule`), so both
paths refuse the same values with the same sentences, naming the field.

Whose rules: an administrator (the API key, or a token with the admin role) sees and
manages every rule; a rule it adds belongs to the body's ``user``, or to no user (it
fires to everyone). A user's token (with authentication on) sees, adds and deletes
that user's rules only: what it adds is its own (a body naming another ``user`` is
403), and another user's rule is as absent to it as one that does not exist (404).
Ids are unique per user. ``?user=SUB`` names whose rules an administrator lists or
deletes (``DELETE /api/alert-rules/ID`` alone deletes the rule of no user).

Where the rules live (a :class:`RuleSet`): on a single gateway, the
:class:`~feeds.AlertEngine` that the alert feed evaluates on every price, and which
the feed keeps across restarts (:class:`EngineRules`): a rule added here is evaluated
from the next price tick on, and survives a crash of the feed. It is not written back
to the ``--alerts`` file: a gateway restart starts from the file again. On a node of
a cluster, in Redis (``_cluster_rules.RedisRules``): each request is one atomic
script call that checks and changes the cluster's rules, which the active
``realtime feed`` follows, so every node answers alike and a rule added through any
node fires from the feed (docs/cluster.md, "Alert rules").

Order of checks, and the answer to each failure (every error body is
``{"error": sentence, "code": code}``, as for ``POST /api/publish``):

====  ====================  ===========================================================
405   ``invalid_message``   a method the path does not take (``Allow`` lists them)
403   ``forbidden``         the API is off: no API key, and authentication off
401   ``unauthorized``      ``Authorization: Bearer <key or token>`` missing or refused
400   ``invalid_message``   a query other than ``?user=SUB``
403   ``forbidden``         a user's token naming another user (body or query)
413   ``too_large``         body over the limit (``--publish-max-body``)
400   ``invalid_json``      the body is not JSON
400   ``invalid_message``   not an object; an unknown, missing, null, mistyped or
                            out-of-range field (the sentence names it)
400   ``invalid_symbol``    ``symbol`` is not a ticker
400   ``unknown_symbol``    ``symbol`` is a ticker the price feed does not publish
409   ``conflict``          the user (or no user) has a rule with this ``id`` (delete it
                            first)
409   ``too_many_rules``    the engine holds :data:`feeds.MAX_RULES` rules, or the user
                            :data:`feeds.MAX_RULES_PER_USER`
404   ``not_found``         DELETE of an id none of the user's rules has
503   ``unavailable``       a node that cannot reach Redis now, or whose Redis holds no
                            rules yet (no feed has seeded them): nothing was read or
                            changed; ``Retry-After`` says when to try again
503   ``unconfirmed``       a node whose call to Redis failed while changing a rule: the
                            change may have been made (list the rules to know)
====  ====================  ===========================================================

The count is refused with 409, not 422: the body is fine, the collection's state is
what stands in the way, and deleting a rule resolves it. Nothing changes unless the
answer is 201 or 204 (or, perhaps, 503 ``unconfirmed``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Collection, Sequence
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, quote

from feeds import MAX_RULES, MAX_RULES_PER_USER, AlertEngine, AlertRule, RuleError, parse_rule
from protocol import ErrorCode

from ._http_auth import Caller, HTTPAuth, Reject, peer
from ._publish import (
    BODY_TIMEOUT,
    RETRY_AFTER,
    UNAVAILABLE,
    UNCONFIRMED,
    APIEndpoint,
    Headers,
    Receive,
    Scope,
    json_object,
)

logger = logging.getLogger("realtime.api")

PATH: Final = "/api/alert-rules"
#: Codes of this endpoint's own failures (the body's use :class:`protocol.ErrorCode`).
CONFLICT: Final = "conflict"
TOO_MANY_RULES: Final = "too_many_rules"
NOT_FOUND: Final = "not_found"

#: How error sentences name the body, as a rule file names ``FILE: rules[i]``.
_WHERE: Final = "rule"
#: The longest rule id (see AlertRule).
_MAX_ID: Final = 64
#: At most this many symbols are listed in an unknown_symbol sentence.
_NAMED_SYMBOLS: Final = 20


def rule_json(rule: AlertRule) -> dict[str, Any]:
    """``rule`` as the JSON object of a rule file's entry: ``hysteresis`` is left out
    when the type's default is in force, so that the object reads back the same rule."""
    body: dict[str, Any] = {
        "id": rule.id,
        "symbol": rule.symbol,
        "type": str(rule.type),
        "threshold": rule.threshold,
        "severity": str(rule.severity),
    }
    if rule.hysteresis is not None:
        body["hysteresis"] = rule.hysteresis
    if rule.user is not None:
        body["user"] = rule.user
    return body


class Refusal(enum.Enum):
    """Why a rule set refuses a valid rule."""

    #: The user (or no user) has a rule with the id.
    CONFLICT = enum.auto()
    #: The set holds :data:`feeds.MAX_RULES`.
    FULL = enum.auto()
    #: The rule's user holds :data:`feeds.MAX_RULES_PER_USER`.
    USER_FULL = enum.auto()


class RuleRefused(Exception):
    """A rule set refused a rule: ``why``. Nothing changed."""

    def __init__(self, why: Refusal) -> None:
        super().__init__(why.name)
        self.why = why


class RulesUnavailable(Exception):
    """The rules cannot be read or changed now (a node of a cluster that cannot reach
    Redis, or whose Redis holds no rules yet): 503. ``unconfirmed`` says that a change
    was sent and may have been made; when False, nothing was changed."""

    def __init__(self, message: str, *, unconfirmed: bool = False) -> None:
        super().__init__(message)
        self.unconfirmed = unconfirmed


class RuleSet(Protocol):
    """Where the rules of the API live: the alert feed's engine on a single gateway
    (:class:`EngineRules`), Redis on a node of a cluster (``_cluster_rules``). Each
    method is one atomic step; it raises :exc:`RulesUnavailable` when the rules are
    out of reach."""

    async def rules(self) -> Sequence[AlertRule]:
        """Every rule, in the order added."""
        ...

    async def add(self, rule: AlertRule) -> None:
        """Add ``rule``, or raise :exc:`RuleRefused`."""
        ...

    async def remove(self, rule_id: str, user: str | None) -> bool:
        """Remove the rule ``rule_id`` of ``user``; whether there was one."""
        ...


class EngineRules:
    """The rules of a single gateway: ``engine``, which its alert feed evaluates and
    keeps across restarts. Nothing here awaits: each call is atomic for the trio
    tasks around it."""

    def __init__(self, engine: AlertEngine) -> None:
        self._engine = engine

    async def rules(self) -> Sequence[AlertRule]:
        return self._engine.rules

    async def add(self, rule: AlertRule) -> None:
        engine = self._engine
        if engine.get(rule.id, rule.user) is not None:
            raise RuleRefused(Refusal.CONFLICT)
        if len(engine) >= MAX_RULES:
            raise RuleRefused(Refusal.FULL)
        if rule.user is not None and engine.count_of(rule.user) >= MAX_RULES_PER_USER:
            raise RuleRefused(Refusal.USER_FULL)
        engine.add_rule(rule)

    async def remove(self, rule_id: str, user: str | None) -> bool:
        return self._engine.remove_rule(rule_id, user)


class AlertRulesAPI(APIEndpoint):
    """The ASGI handler of ``/api/alert-rules`` and ``/api/alert-rules/{id}`` (see
    the module doc).

    ``rules`` is where the rules live (:class:`EngineRules`, or Redis on a node);
    ``universe`` the symbols the price feed publishes (a rule on another symbol would
    never fire), read at each request: it may grow.
    ``auth`` checks credentials; ``max_body`` bounds a body in bytes.
    A request blocks on nothing but the client's body and, on a node, one call to Redis.
    """

    _action = "alert-rules request"
    _api_name = "The alert rules API"

    def __init__(
        self,
        rules: RuleSet,
        universe: Collection[str],
        *,
        auth: HTTPAuth,
        max_body: int,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        super().__init__(auth=auth, max_body=max_body, body_timeout=body_timeout)
        self._rules = rules
        # Kept as given, not copied: the gateway passes its live universe, which a feed
        # hook may grow.
        self._universe = universe
        #: Rules added and removed through the API since start.
        self.added = 0
        self.removed = 0

    @staticmethod
    def claims(path: str) -> bool:
        """Whether ``path`` is one of this handler's (the collection or one rule)."""
        return path == PATH or path.startswith(PATH + "/")

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, object, Headers]:
        try:
            return await self._answer(scope, receive)
        except RulesUnavailable as exc:
            logger.warning("[API] Could not reach the alert rules from %s: %s", peer(scope), exc)
            if exc.unconfirmed:
                raise Reject(503, UNCONFIRMED, str(exc)) from None
            raise Reject(
                503, UNAVAILABLE, str(exc), headers=[(b"retry-after", b"%d" % RETRY_AFTER)]
            ) from None

    async def _answer(self, scope: Scope, receive: Receive) -> tuple[int, object, Headers]:
        path: str = scope["path"]
        if path == PATH:
            self._check_method(
                scope, ("GET", "POST"), "Use GET to list the alert rules, POST to add one"
            )
            caller = self._caller(scope)
            if scope["method"] == "GET":
                owner = _owner(caller, scope)
                every = caller.admin and owner is None and not _query(scope)
                rules = await self._rules.rules()
                listed = [rule_json(rule) for rule in rules if every or rule.user == owner]
                return 200, {"rules": listed}, ()
            return await self._add(scope, caller, await self._read_body(scope, receive))
        self._check_method(scope, ("DELETE",), "Use DELETE to remove an alert rule")
        caller = self._caller(scope)
        # After the credential: without it, nobody learns which ids exist.
        return await self._remove(scope, _owner(caller, scope), path.removeprefix(PATH + "/"))

    async def _add(self, scope: Scope, caller: Caller, raw: bytes) -> tuple[int, object, Headers]:
        if _query(scope):
            raise Reject(
                400, ErrorCode.INVALID_MESSAGE, "POST takes no query: name the rule's user in it"
            )
        table = json_object(raw)
        if not caller.admin:
            if table.get("user", caller.user) != caller.user:
                raise Reject(
                    403,
                    ErrorCode.FORBIDDEN,
                    "You may add alert rules for yourself only: leave 'user' out",
                )
            table = {**table, "user": caller.user}
        try:
            rule = parse_rule(table, _WHERE)
        except RuleError as exc:
            # A string that is no ticker is invalid_symbol, as in a WebSocket subscribe;
            # a symbol of another type is a mistyped field like any other.
            code = (
                ErrorCode.INVALID_SYMBOL
                if exc.field == "symbol" and isinstance(table.get("symbol"), str)
                else ErrorCode.INVALID_MESSAGE
            )
            raise Reject(400, code, str(exc)) from None
        if rule.symbol not in self._universe:
            raise Reject(
                400,
                ErrorCode.UNKNOWN_SYMBOL,
                f"{_WHERE}.symbol: {rule.symbol} is not a symbol of the price feed "
                f"({_describe(self._universe)})",
            )
        try:
            await self._rules.add(rule)
        except RuleRefused as refused:
            raise _refusal(refused.why, rule, caller) from None
        self.added += 1
        logger.info(
            "[API] Added alert rule %s%s (%s) from %s",
            rule.id,
            _of(rule.user),
            rule.symbol,
            peer(scope),
        )
        location = f"{PATH}/{rule.id}"
        if caller.admin and rule.user is not None:
            location += f"?user={quote(rule.user, safe='')}"
        return 201, rule_json(rule), [(b"location", location.encode())]

    async def _remove(
        self, scope: Scope, owner: str | None, rule_id: str
    ) -> tuple[int, object, Headers]:
        if not await self._rules.remove(rule_id, owner):
            # Ids are at most 64 characters: echo no more of a long path than that.
            shown = rule_id if len(rule_id) <= _MAX_ID else rule_id[:_MAX_ID] + "..."
            raise Reject(404, NOT_FOUND, f"No alert rule{_of(owner)} has the id {shown!r}")
        self.removed += 1
        logger.info("[API] Removed alert rule %s%s from %s", rule_id, _of(owner), peer(scope))
        return 204, None, ()


def _refusal(why: Refusal, rule: AlertRule, caller: Caller) -> Reject:
    """The 409 of a valid rule that the rule set refused."""
    if why is Refusal.CONFLICT:
        return Reject(
            409,
            CONFLICT,
            f"An alert rule with id {rule.id!r} exists{_of(rule.user)}: delete it first "
            "to replace it",
        )
    if why is Refusal.FULL:
        return Reject(
            409,
            TOO_MANY_RULES,
            f"The gateway holds {MAX_RULES} alert rules, the most it takes: "
            "delete one to add another",
        )
    return Reject(
        409,
        TOO_MANY_RULES,
        f"{'You hold' if not caller.admin else 'The user holds'} {MAX_RULES_PER_USER} "
        "alert rules, the most one user may: delete one to add another",
    )


def _query(scope: Scope) -> dict[str, str]:
    """The query's parameters; 400 for any but ``user``, or a repeated one."""
    raw: bytes = scope.get("query_string", b"")
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, max_num_fields=2)
    except ValueError:
        pairs = [("", "")]
    query = dict(pairs)
    if len(query) != len(pairs) or set(query) - {"user"}:
        raise Reject(400, ErrorCode.INVALID_MESSAGE, "The only query parameter is user, given once")
    return query


def _owner(caller: Caller, scope: Scope) -> str | None:
    """Whose rules the request is about: a user's own; for an administrator, the
    query's ``user``, else the rules of no user. 403 for a user naming another."""
    named = _query(scope).get("user")
    if caller.admin:
        return named or None
    if named is not None and named != caller.user:
        raise Reject(403, ErrorCode.FORBIDDEN, "You may see and manage your own alert rules only")
    return caller.user


def _of(user: str | None) -> str:
    return "" if user is None else f" of user {user[:64]!r}"


def _describe(universe: Collection[str]) -> str:
    symbols = sorted(universe)
    return ", ".join(symbols[:_NAMED_SYMBOLS]) + (", ..." if len(symbols) > _NAMED_SYMBOLS else "")
