"""``/api/alert-rules``: how the rest of the agent system manages the alert rules.

==========================  =====================================================
``GET /api/alert-rules``    200 ``{"rules": [rule, ...]}``, in the order added
``POST /api/alert-rules``   one rule as the body; 201 with the rule as stored
``DELETE /api/alert-rules/ID``  204, no body
==========================  =====================================================

A rule is the JSON object of one ``[[rules]]`` entry of a rule file (``id``,
``symbol``, ``type``, ``threshold``, ``severity``?, ``hysteresis``?), validated by
the very code that reads the files (:func:`feeds.parse_rule`), so both paths
refuse the same values with the same sentences, naming the field.

The handler mutates the :class:`~feeds.AlertEngine` that the alert feed evaluates on
every price, and which the feed keeps across restarts: a rule added here is
evaluated from the next price tick on, and survives a crash of the feed. It is not
written back to the ``--alerts`` file: a gateway restart starts from the file again.

Order of checks, and the answer to each failure (every error body is
``{"error": sentence, "code": code}``, as for ``POST /api/publish``):

====  ====================  ===========================================================
405   ``invalid_message``   a method the path does not take (``Allow`` lists them)
403   ``forbidden``         the API is off: no key is configured (``--api-key``)
401   ``unauthorized``      ``Authorization: Bearer <key>`` missing or wrong
413   ``too_large``         body over the limit (``--publish-max-body``)
400   ``invalid_json``      the body is not JSON
400   ``invalid_message``   not an object; an unknown, missing, null, mistyped or
                            out-of-range field (the sentence names it)
400   ``invalid_symbol``    ``symbol`` is not a ticker
400   ``unknown_symbol``    ``symbol`` is a ticker the price feed does not publish
409   ``conflict``          a rule with this ``id`` exists (delete it first)
409   ``too_many_rules``    the engine holds :data:`feeds.MAX_RULES` rules
404   ``not_found``         DELETE of an id no rule has
====  ====================  ===========================================================

The count is refused with 409, not 422: the body is fine, the collection's state is
what stands in the way, and deleting a rule resolves it. Nothing changes unless the
answer is 201 or 204.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any, Final

from feeds import MAX_RULES, AlertEngine, AlertRule, RuleError, parse_rule

# parse_rule and RuleError are not re-exported by feeds/__init__ (yet).
from protocol import ErrorCode

from ._publish import BODY_TIMEOUT, APIEndpoint, Headers, Receive, Reject, Scope, json_object, peer

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
    return body


class AlertRulesAPI(APIEndpoint):
    """The ASGI handler of ``/api/alert-rules`` and ``/api/alert-rules/{id}`` (see
    the module doc).

    ``engine`` is the alert feed's engine, mutated in place; ``universe`` the symbols
    the price feed publishes (a rule on another symbol would never fire).
    ``api_key`` ``None`` turns the endpoint off; ``max_body`` bounds a body in bytes.
    Every request is answered without blocking on anything but the client's body.
    """

    _action = "alert-rules request"
    _api_name = "The alert rules API"

    def __init__(
        self,
        engine: AlertEngine,
        universe: Collection[str],
        *,
        api_key: str | None,
        max_body: int,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        super().__init__(api_key=api_key, max_body=max_body, body_timeout=body_timeout)
        self._engine = engine
        self._universe = frozenset(universe)
        self._universe_text = ", ".join(sorted(self._universe)[:_NAMED_SYMBOLS]) + (
            ", ..." if len(self._universe) > _NAMED_SYMBOLS else ""
        )
        #: Rules added and removed through the API since start.
        self.added = 0
        self.removed = 0

    @staticmethod
    def claims(path: str) -> bool:
        """Whether ``path`` is one of this handler's (the collection or one rule)."""
        return path == PATH or path.startswith(PATH + "/")

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, object, Headers]:
        path: str = scope["path"]
        if path == PATH:
            self._check_method(
                scope, ("GET", "POST"), "Use GET to list the alert rules, POST to add one"
            )
            self._authenticate(scope)
            if scope["method"] == "GET":
                return 200, {"rules": [rule_json(rule) for rule in self._engine.rules]}, ()
            return self._add(scope, await self._read_body(scope, receive))
        self._check_method(scope, ("DELETE",), "Use DELETE to remove an alert rule")
        self._authenticate(scope)
        # After the key: without it, nobody learns which ids exist.
        return self._remove(scope, path.removeprefix(PATH + "/"))

    def _add(self, scope: Scope, raw: bytes) -> tuple[int, object, Headers]:
        table = json_object(raw)
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
                f"({self._universe_text})",
            )
        if rule.id in self._engine:
            raise Reject(
                409,
                CONFLICT,
                f"An alert rule with id {rule.id!r} exists: delete it first to replace it",
            )
        if len(self._engine) >= MAX_RULES:
            raise Reject(
                409,
                TOO_MANY_RULES,
                f"The gateway holds {MAX_RULES} alert rules, the most it takes: "
                "delete one to add another",
            )
        # No await between the checks above and this: no other request interleaves.
        self._engine.add_rule(rule)
        self.added += 1
        logger.info("[API] Added alert rule %s (%s) from %s", rule.id, rule.symbol, peer(scope))
        location = f"{PATH}/{rule.id}".encode()
        return 201, rule_json(rule), [(b"location", location)]

    def _remove(self, scope: Scope, rule_id: str) -> tuple[int, object, Headers]:
        if not self._engine.remove_rule(rule_id):
            # Ids are at most 64 characters: echo no more of a long path than that.
            shown = rule_id if len(rule_id) <= _MAX_ID else rule_id[:_MAX_ID] + "..."
            raise Reject(404, NOT_FOUND, f"No alert rule has the id {shown!r}")
        self.removed += 1
        logger.info("[API] Removed alert rule %s from %s", rule_id, peer(scope))
        return 204, None, ()
