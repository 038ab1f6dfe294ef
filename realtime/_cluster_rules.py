"""The alert rules of a cluster, kept in Redis (docs/cluster.md, "Alert rules").

Theory of operation
-------------------
Redis holds the rules: :data:`RULES_KEY` maps each rule's key (its id, then ``@`` and
its user percent-encoded when it has one: ids never hold ``@``) to ``N JSON``, the
rule as ``/api/alert-rules`` shows it, after ``N``, the version that added it (so a
listing comes back in the order added). :data:`RULE_COUNTS_KEY` counts each user's
rules, and :data:`RULES_VERSION_KEY` counts changes; it exists once the rules are
*seeded*, and is the marker that they are.

**Seeding.** The first active ``realtime feed`` that finds no marker writes its own
rules (its ``--alerts`` file, or the demo set) and the marker in one :data:`SEED`
call: so a feed that restarts, or a standby that takes over, never seeds again over
what the API changed. Redis losing its data (a ``FLUSHALL``, a restart without
persistence) loses the marker with the rules, and the next active feed seeds again.

**Changing** (:class:`RedisRules`, the node's side of the API). One script call per
request: :data:`ADD` refuses, in the same atomic step that would store the rule, a
key that exists, a full set (:data:`feeds.MAX_RULES`) or a user at
:data:`feeds.MAX_RULES_PER_USER`: two nodes racing for a user's last rule are two
calls, and Redis runs one after the other. :data:`REMOVE` deletes one. Each bumps the
version and publishes the change on the rules channel (``VERSION add|del N JSON``;
``VERSION seed`` for a seed). Before the seed, every request is refused: there is no
rule set to show or change yet.

**Following** (:class:`RuleFollower`, in the active feed): subscribe to the rules
channel first, then seed if need be and load every rule and the version in one
:data:`LOAD` call, and make the alert engine hold exactly those
(:meth:`feeds.AlertEngine.replace_rules`: the armed state of a rule that did not
change is kept). Then each announced change whose version is the next one is applied
as it comes; an older one is already in; a gap (a message missed) or a seed loads
everything again, and so does every reconnection. A standby that takes over starts
by loading, so it evaluates what the API added while it stood by.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import quote

import coredis
import orjson
import trio

from feeds import MAX_RULES, MAX_RULES_PER_USER, AlertEngine, AlertRule, parse_rule

from ._redis_bus import (
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    RedisBus,
    closed_on_teardown,
    failure,
    open_redis,
    redacted,
    rules_channel,
    unreachable,
)
from ._rules_api import Refusal, RuleRefused, RulesUnavailable, rule_json

logger = logging.getLogger("realtime.rules")

RULES_KEY: Final = "{realtime}:rules"
RULE_COUNTS_KEY: Final = "{realtime}:rule-counts"
RULES_VERSION_KEY: Final = "{realtime}:rules-version"
RULE_KEYS: Final = (RULES_KEY, RULE_COUNTS_KEY, RULES_VERSION_KEY)

#: What ADD and REMOVE return instead of a version.
_UNSEEDED: Final = -1
_CONFLICT: Final = -2
_FULL: Final = -3
_USER_FULL: Final = -4
_ABSENT: Final = 0

#: KEYS: :data:`RULE_KEYS`. ARGV: the rules channel, then per rule its key, its user
#: (empty: none) and its JSON. Writes the rules and the marker unless the marker
#: exists; 1 if it seeded, 0 if the rules were seeded already.
SEED: Final = """
if redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
local n = 0
for i = 2, #ARGV, 3 do
  n = n + 1
  redis.call('HSET', KEYS[1], ARGV[i], n .. ' ' .. ARGV[i + 2])
  if ARGV[i + 1] ~= '' then
    redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1)
  end
end
redis.call('SET', KEYS[3], n)
redis.call('PUBLISH', ARGV[1], n .. ' seed')
return 1
"""

#: KEYS: :data:`RULE_KEYS`. ARGV: the rules channel, the rule's key, its user (empty:
#: none), its JSON, MAX_RULES, MAX_RULES_PER_USER. Returns the new version, or -1 (not
#: seeded), -2 (the key exists), -3 (the set is full), -4 (the user's is).
ADD: Final = """
if redis.call('EXISTS', KEYS[3]) == 0 then
  return -1
end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then
  return -2
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then
  return -3
end
if ARGV[3] ~= '' and tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0') >= tonumber(ARGV[6]) then
  return -4
end
local version = redis.call('INCR', KEYS[3])
local value = version .. ' ' .. ARGV[4]
redis.call('HSET', KEYS[1], ARGV[2], value)
if ARGV[3] ~= '' then
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
end
redis.call('PUBLISH', ARGV[1], version .. ' add ' .. value)
return version
"""

#: KEYS: :data:`RULE_KEYS`. ARGV: the rules channel, the rule's key, its user (empty:
#: none). Returns the new version, or -1 (not seeded), 0 (no such rule).
REMOVE: Final = """
if redis.call('EXISTS', KEYS[3]) == 0 then
  return -1
end
local value = redis.call('HGET', KEYS[1], ARGV[2])
if not value then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[2])
if ARGV[3] ~= '' and redis.call('HINCRBY', KEYS[2], ARGV[3], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[3])
end
local version = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[1], version .. ' del ' .. value)
return version
"""

#: KEYS: :data:`RULE_KEYS`. Returns the version (empty: not seeded) and every rule
#: (a flat key/value list), read at one instant.
LOAD: Final = """
return {redis.call('GET', KEYS[3]) or '', redis.call('HGETALL', KEYS[1])}
"""

#: How a stored rule that does not read back is named in the log.
_WHERE: Final = "a rule in Redis"

UNSEEDED: Final = (
    "The cluster's alert rules are not loaded yet: no realtime feed has been active on "
    "this Redis since it started empty; retry once one is"
)


def rule_key(rule_id: str, user: str | None) -> str:
    """The field of a rule in :data:`RULES_KEY`: unique per user and id."""
    return rule_id if user is None else f"{rule_id}@{quote(user, safe='')}"


def _args(rule: AlertRule) -> list[str | bytes]:
    return [rule_key(rule.id, rule.user), rule.user or "", orjson.dumps(rule_json(rule))]


def _decode(value: bytes) -> tuple[int, AlertRule]:
    """The version that added a stored rule, and the rule; raises ``ValueError``
    (a :exc:`feeds.RuleError`, or not JSON) for one this version cannot read."""
    version, _, body = value.partition(b" ")
    return int(version), parse_rule(orjson.loads(body), _WHERE)


def _readable(values: Iterable[bytes]) -> list[AlertRule]:
    """The rules of ``values`` in the order added; a rule that does not read back (a
    newer gateway's field) is logged and left out."""
    rules = []
    for value in values:
        try:
            rules.append(_decode(value))
        except ValueError as exc:
            logger.warning("Ignored %s that does not read back: %s", _WHERE, exc)
    return [rule for _, rule in sorted(rules, key=lambda pair: pair[0])]


async def load(client: coredis.Redis[bytes]) -> tuple[int, list[AlertRule]] | None:
    """The version and the rules Redis holds, in the order added; ``None`` before
    the seed."""
    reply = typing.cast(
        list[typing.Any], await client.register_script(LOAD)(keys=RULE_KEYS, args=())
    )
    version: bytes = reply[0]
    if not version:
        return None
    flat: list[bytes] = reply[1]
    return int(version), _readable(flat[1::2])


async def seed(client: coredis.Redis[bytes], channel: str, rules: Sequence[AlertRule]) -> bool:
    """Write ``rules`` as the cluster's unless they are seeded already; whether it did."""
    args: list[str | bytes] = [channel]
    for rule in rules:
        args += _args(rule)
    return bool(await client.register_script(SEED)(keys=RULE_KEYS, args=args))


class RedisRules:
    """The rules of ``/api/alert-rules`` on a node: those of Redis, through ``bus``'s
    client (see the module doc).

    Every method raises :exc:`RulesUnavailable` at once, having sent nothing, while
    the node does not follow Redis or before the seed; a change whose call to Redis
    fails raises it with ``unconfirmed`` True (Redis may have run it).
    """

    def __init__(self, bus: RedisBus) -> None:
        self._bus = bus
        self._channel = rules_channel(bus.url)

    def _client(self) -> coredis.Redis[bytes]:
        client = self._bus.client
        if client is None:
            raise RulesUnavailable(
                "This node has lost its connection to Redis and is reconnecting: no "
                "rule was read or changed; retry later"
            )
        return client

    async def rules(self) -> Sequence[AlertRule]:
        """Every rule, in the order added."""
        try:
            loaded = await load(self._client())
        except Exception as exc:
            if not unreachable(exc):
                raise
            raise RulesUnavailable(f"Redis did not answer ({failure(exc)}); retry later") from exc
        if loaded is None:
            raise RulesUnavailable(UNSEEDED)
        return loaded[1]

    async def add(self, rule: AlertRule) -> None:
        """Store ``rule``; raises :exc:`RuleRefused` for an existing key or a full set."""
        result = await self._call(
            ADD, [*_args(rule), MAX_RULES, MAX_RULES_PER_USER], "added", rule.id
        )
        refusal = {
            _CONFLICT: Refusal.CONFLICT,
            _FULL: Refusal.FULL,
            _USER_FULL: Refusal.USER_FULL,
        }.get(result)
        if refusal is not None:
            raise RuleRefused(refusal)

    async def remove(self, rule_id: str, user: str | None) -> bool:
        """Delete the rule ``rule_id`` of ``user``; whether there was one."""
        args: list[str | bytes | int] = [rule_key(rule_id, user), user or ""]
        return await self._call(REMOVE, args, "deleted", rule_id) != _ABSENT

    async def _call(
        self, script: str, args: Sequence[str | bytes | int], done: str, rule_id: str
    ) -> int:
        client = self._client()
        try:
            result = typing.cast(
                int,
                await client.register_script(script)(keys=RULE_KEYS, args=[self._channel, *args]),
            )
        except Exception as exc:
            if not unreachable(exc):
                raise
            raise RulesUnavailable(
                f"Redis did not confirm the change ({failure(exc)}): the rule {rule_id!r} "
                f"may or may not have been {done}; list the rules to know",
                unconfirmed=True,
            ) from exc
        if result == _UNSEEDED:
            raise RulesUnavailable(UNSEEDED)
        return result


class RuleFollower:
    """The active feed's side: keeps ``engine`` holding the rules Redis holds, seeding
    them with ``engine``'s own at construction (the ``--alerts`` file or the demo
    set) when Redis has none (see the module doc)."""

    def __init__(self, url: str, engine: AlertEngine) -> None:
        self._url = url
        self._channel = rules_channel(url)
        self._engine = engine
        self._seed = engine.rules
        #: The version the engine holds; -1 before the first load.
        self.version = -1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the rules until cancelled. Reports started once the engine holds
        Redis's rules; a lost connection is logged and followed again with backoff,
        from a new load. Raises what is not Redis being away (a bug)."""
        backoff = INITIAL_BACKOFF
        while True:
            try:
                async with open_redis(self._url) as client:
                    with closed_on_teardown():
                        async with client.pubsub(
                            channels=[self._channel],
                            ignore_subscribe_messages=True,
                            retry_policy=None,
                        ) as pubsub:
                            await self._load(client)
                            task_status.started()
                            task_status = trio.TASK_STATUS_IGNORED
                            backoff = INITIAL_BACKOFF
                            async for message in pubsub:
                                await self._receive(client, typing.cast(bytes, message["data"]))
                problem = "the subscription ended"
            except Exception as exc:
                if not unreachable(exc):
                    raise
                problem = failure(exc)
            logger.warning(
                "Lost the alert rules' channel at %s (%s): following it again in %gs",
                redacted(self._url),
                problem,
                backoff,
            )
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _load(self, client: coredis.Redis[bytes]) -> None:
        """Seed if Redis has no rules, then make the engine hold Redis's."""
        if await seed(client, self._channel, self._seed):
            logger.info("Seeded the cluster's alert rules in Redis with %d rules", len(self._seed))
        loaded = await load(client)
        if loaded is None:  # emptied between the two calls: the next seed brings them
            return
        self.version, rules = loaded
        self._engine.replace_rules(rules)
        logger.info("Following the cluster's %d alert rules (version %d)", len(rules), self.version)

    async def _receive(self, client: coredis.Redis[bytes], message: bytes) -> None:
        version_text, _, rest = message.partition(b" ")
        op, _, value = rest.partition(b" ")
        if not version_text.isdigit():  # not ours to read: load what Redis holds
            await self._load(client)
            return
        version = int(version_text)
        if version <= self.version:
            return  # in the last load already
        if version != self.version + 1 or op not in (b"add", b"del"):
            await self._load(client)  # a seed, or a change this feed missed
            return
        self.version = version
        try:
            _, rule = _decode(value)
        except ValueError as exc:
            logger.warning("Ignored %s that does not read back: %s", _WHERE, exc)
            return
        owner = "" if rule.user is None else f" of user {rule.user[:64]!r}"
        if op == b"add":
            self._engine.add_rule(rule)
            logger.info("Alert rule %s%s added (version %d)", rule.id, owner, version)
        else:
            self._engine.remove_rule(rule.id, rule.user)
            logger.info("Alert rule %s%s removed (version %d)", rule.id, owner, version)
