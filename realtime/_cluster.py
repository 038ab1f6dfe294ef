"""Cluster-wide rules of a node: a client id is held once in the whole cluster, a
user's connections are counted across it, ``POST /api/disconnect`` reaches every node,
and the cluster's view of itself (docs/cluster.md, "Cluster-wide rules").

Theory of operation
-------------------
**Client ids.** A node claims in Redis the client id of every connection its hub
registers (:meth:`Hub.watch_clients`): the key ``{realtime}:client:<id>`` holds
``MS NODE TOKEN USER``, when the connection was registered (the node's wall clock, in
milliseconds), the node's id, the connection's token on that node, and its user
(percent-encoded; empty for nobody's). The :data:`CLAIM` script settles a claim
against the holder in one atomic step, by the same rules as one hub:

* no holder, or one whose node is gone (its heartbeat key expired): the claimant
  holds the id;
* the same connection: its TTL starts again (a refresh);
* another user's connection: the claimant is refused, the holder keeps the id;
* the same user's: the later connection holds it, the earlier one is replaced.

The loser, refused or replaced, is named on the control channel (pub/sub, followed
by every node beside the events), and the node holding that token closes it with 4409.
A node's own connections settle in its hub first (a replaced one never reaches Redis).
A disconnect releases the id (compare-and-delete). One script call per connect and
per disconnect, O(1) each, batched: the node sends in one call what accumulated
while the previous one was in flight. What is still to send is kept per client id
(its latest state), so it is bounded by the node's connections however long Redis is
away; after each (re)connection the node claims every connection it holds again
(Redis may have lost them, or the node missed a control message), and every
:data:`REFRESH_INTERVAL` it refreshes them all (their TTL, :data:`CLAIM_TTL_MS`, only
collects what a crashed node left).

**Seats.** ``--max-connections-per-user`` counts a user's connections across the
cluster: ``{realtime}:user:<user>`` is a hash of the user's seats per node (field: the
node's id) and their ``total``; ``{realtime}:seats:<node>`` the users holding seats on
that node. Before a connection of an authenticated user joins the hub, :meth:`take_seat`
runs :data:`SEAT`, which in one atomic step refuses it at the limit (two nodes racing
for a user's last seat: one wins) or adds it: O(1). A connection that replaces the
same user's with the same client id (4409, on any live node) adds none. Leaving
frees the seat: decrements batched like the claims. The node's own count
(:attr:`_seats`) is the truth Redis is told: after each (re)connection, and whenever a
call's outcome is unknown or the node's lease lapsed, it sets its seats absolutely
(:data:`SEATS`, ``set``), and until that is done it admits by its own count alone
(the single-process rule), as it does while Redis is away. A node whose report key
expired is gone, and the next report of any node frees its seats (at most
:data:`BATCH` users per report).

**Disconnects.** :meth:`disconnect` publishes an order on the control channel, in
the same atomic step that lists the live nodes (:data:`ORDER`); every node closes its
own connections it names (4403) and answers on the channel with the client ids it
closed; the caller waits for every listed node, at most ``disconnect_wait`` seconds.

**Nodes.** Every :data:`HEARTBEAT` seconds a node writes its summary (its name and
connections) to ``{realtime}:node:<id>`` with a TTL of three heartbeats (its lease),
and reads every live node's in the same call: the cluster view of
``/ws/stats?scope=cluster``, as of each node's last report. A node whose key expired
is gone: its claims no longer hold, and its seats are freed.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
import typing
import uuid
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote

import attrs
import coredis
import orjson
import trio

from protocol import CloseCode

from ._bus import PublishUnavailable
from ._hub import Hub
from ._outbox import Outbox

logger = logging.getLogger("realtime.cluster")

CLIENT_PREFIX: Final = "{realtime}:client:"
NODE_PREFIX: Final = "{realtime}:node:"
NODES_KEY: Final = "{realtime}:nodes"
USER_PREFIX: Final = "{realtime}:user:"
SEATS_PREFIX: Final = "{realtime}:seats:"
#: Seconds between two reports of a node; it counts as gone after three missed.
HEARTBEAT: Final = 2.0
#: Seconds a connection waits for Redis to count it; past it, the node's count decides.
ADMIT_TIMEOUT: Final = 1.0
#: Seconds ``POST /api/disconnect`` waits for every node to answer.
DISCONNECT_WAIT: Final = 2.0
#: Milliseconds a claim lasts unrefreshed, and seconds between two refreshes of all.
CLAIM_TTL_MS: Final = 24 * 3600 * 1000
REFRESH_INTERVAL: Final = 3600.0
#: Claims and releases sent in one script call at most.
BATCH: Final = 500

#: KEYS: the client keys, one per operation. ARGV: the control channel, the claims'
#: TTL in milliseconds, the node key prefix, then per key: ``c`` (claim) or ``r``
#: (release), the client id, the value ``MS NODE TOKEN USER``. Publishes
#: ``replaced|refused CLIENT_ID VALUE`` for each connection that loses its id.
CLAIM: Final = """
local channel, ttl, nodes = ARGV[1], ARGV[2], ARGV[3]
local function parts(value)
  local ms, node, token, user = string.match(value, '^(%d+) (%S+) (%S+) (%S*)$')
  return tonumber(ms), node, user
end
for i, key in ipairs(KEYS) do
  local op, id, value = ARGV[3 * i + 1], ARGV[3 * i + 2], ARGV[3 * i + 3]
  local old = redis.call('GET', key)
  if op == 'r' then
    if old == value then
      redis.call('DEL', key)
    end
  elseif old == value then
    redis.call('PEXPIRE', key, ttl)
  else
    local ms, node, user = parts(value)
    local old_ms, old_node, old_user
    if old then
      old_ms, old_node, old_user = parts(old)
      if old_node ~= node and redis.call('EXISTS', nodes .. old_node) == 0 then
        old = false
      end
    end
    if old and old_user ~= user then
      redis.call('PUBLISH', channel, 'refused ' .. id .. ' ' .. value)
    elseif old and old_ms > ms then
      redis.call('PUBLISH', channel, 'replaced ' .. id .. ' ' .. value)
    else
      redis.call('SET', key, value, 'PX', ttl)
      if old and old_node ~= node then
        redis.call('PUBLISH', channel, 'replaced ' .. id .. ' ' .. old)
      end
    end
  end
end
return 0
"""

#: KEYS: this node's key, the set of nodes. ARGV: this node's id, its summary (JSON),
#: the TTL in milliseconds, the node key prefix, the seats prefix, the users freed per
#: gone node at most, the user prefix. Writes the summary, frees the seats of nodes
#: that are gone (forgetting them once none is left), and returns Redis's time (ms),
#: 1 if this node's lease had lapsed (else 0), and every live node's summary.
REPORT: Final = """
local lapsed = 1 - redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
local now = redis.call('TIME')
local result = {tostring(now[1] * 1000 + math.floor(now[2] / 1000)), lapsed}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local summary = redis.call('GET', ARGV[4] .. node)
  if summary then
    result[#result + 1] = summary
  else
    local seats = ARGV[5] .. node
    for _, user in ipairs(redis.call('SPOP', seats, ARGV[6])) do
      local key = ARGV[7] .. user
      local held = tonumber(redis.call('HGET', key, node) or '0')
      redis.call('HDEL', key, node)
      if redis.call('HINCRBY', key, 'total', -held) <= 0 then
        redis.call('DEL', key)
      end
    end
    if redis.call('EXISTS', seats) == 0 then
      redis.call('SREM', KEYS[2], node)
    end
  end
end
return result
"""

#: KEYS: the user's key, this node's seats key, this node's key, the client key of the
#: connection's id. ARGV: this node's id, the user (percent-encoded), the limit, 1 if
#: the connection replaces one of this node (else 0), the node key prefix. Returns 1
#: when the seat is taken, 0 when the user holds the limit, -1 when this node's lease
#: lapsed (nothing taken: its seats may be being freed).
SEAT: Final = """
local node, user = ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[3]) == 0 then
  return -1
end
if tonumber(redis.call('HGET', KEYS[1], 'total') or '0') >= tonumber(ARGV[3]) then
  local replaces = ARGV[4] == '1'
  local held = redis.call('GET', KEYS[4])
  if not replaces and held then
    local holder, holder_user = string.match(held, '^%d+ (%S+) %S+ (%S*)$')
    replaces = holder_user == user and redis.call('EXISTS', ARGV[5] .. holder) == 1
  end
  if not replaces then
    return 0
  end
end
redis.call('HINCRBY', KEYS[1], node, 1)
redis.call('HINCRBY', KEYS[1], 'total', 1)
redis.call('SADD', KEYS[2], user)
return 1
"""

#: KEYS: this node's seats key, then the users' keys. ARGV: this node's id, ``free``
#: (each number is seats to free) or ``set`` (each is the node's seats), then per user
#: the user (percent-encoded) and the number.
SEATS: Final = """
local node, free = ARGV[1], ARGV[2] == 'free'
for i = 2, #KEYS do
  local key, user, n = KEYS[i], ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  local old = tonumber(redis.call('HGET', KEYS[i], node) or '0')
  local new = n
  if free then
    new = math.max(0, old - n)
  end
  if new > 0 then
    redis.call('HSET', key, node, new)
    redis.call('SADD', KEYS[1], user)
  else
    redis.call('HDEL', key, node)
    redis.call('SREM', KEYS[1], user)
  end
  if redis.call('HINCRBY', key, 'total', new - old) <= 0 then
    redis.call('DEL', key)
  end
end
return 0
"""

#: KEYS: the set of nodes. ARGV: the control channel, the order, the node key prefix.
#: Publishes the order and returns the summary of every live node, in one step.
ORDER: Final = """
local result = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local summary = redis.call('GET', ARGV[3] .. node)
  if summary then
    result[#result + 1] = summary
  end
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return result
"""


@attrs.frozen
class _Claim:
    """A connection of this node, as Redis knows it."""

    outbox: Outbox
    value: str


@attrs.define
class _Gathering:
    """The answers to one disconnect order of this node."""

    #: The live nodes when the order was published (id: name); None until known.
    expected: dict[str, str] | None = None
    answered: set[str] = attrs.Factory(set)
    closed: list[str] = attrs.Factory(list)
    done: trio.Event = attrs.Factory(trio.Event)

    def check(self) -> None:
        if self.expected is not None and self.answered.issuperset(self.expected):
            self.done.set()


#: Closes this node's connections a disconnect order names: ``Sessions.disconnect``.
Closer = Callable[..., list[str]]


def _close_nothing(*, user: str | None = None, client_id: str | None = None) -> list[str]:
    return []


class Membership:
    """A node's part in the cluster-wide rules (see the module doc).

    ``hub`` is watched from construction on. ``control`` is the pub/sub channel every
    node follows (``_redis_bus.control_channel``). ``wall_clock`` gives seconds since
    the epoch (the order of two connections on two nodes); ``clock`` is monotonic.
    ``heartbeat``, ``admit_timeout`` and ``disconnect_wait`` are seconds (see
    :data:`HEARTBEAT`, :data:`ADMIT_TIMEOUT`, :data:`DISCONNECT_WAIT`).
    """

    def __init__(
        self,
        hub: Hub,
        *,
        control: str,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = trio.current_time,
        heartbeat: float = HEARTBEAT,
        admit_timeout: float = ADMIT_TIMEOUT,
        disconnect_wait: float = DISCONNECT_WAIT,
    ) -> None:
        self.node = uuid.uuid4().hex
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._hub = hub
        self._control = control
        self._wall_clock = wall_clock
        self._clock = clock
        self._heartbeat = heartbeat
        self._admit_timeout = admit_timeout
        self._disconnect_wait = disconnect_wait
        self._tokens = itertools.count(1)
        #: This node's connections, by client id.
        self._claims: dict[str, _Claim] = {}
        #: What Redis is still to be told, per client id: ``(op, value)``.
        self._pending: dict[str, tuple[str, str]] = {}
        self._wake = trio.Event()
        self._view: dict[str, Any] = {"nodes": [], "total_connections": 0}
        #: Connections of this node closed because another node's holds their id.
        self.closed_elsewhere = 0
        #: The client of :meth:`run` while it runs, and its scripts.
        self._client: coredis.Redis[bytes] | None = None
        self._scripts: dict[str, Any] = {}
        #: Seats this node holds, per user (percent-encoded): what Redis is told.
        self._seats: dict[str, int] = {}
        #: Seats freed since the last call, per user, and the users whose seats Redis
        #: is to be told absolutely; until that is done after (re)connecting, the
        #: node admits by its own count (``_synced`` False).
        self._freed: dict[str, int] = {}
        self._unsynced: set[str] = set()
        self._synced = False
        #: Counts the calls that set seats absolutely: a seat taken meanwhile may have
        #: been counted before them, and is set again.
        self._set_calls = 0
        self._close: Closer = _close_nothing
        #: Answers to send on the control channel. Orders arrive only while the node
        #: follows Redis, and :meth:`run` sends their answers as they come.
        self._answers: list[bytes] = []
        self._gatherings: dict[str, _Gathering] = {}
        hub.watch_clients(self._registered, self._unregistered)

    @property
    def counting(self) -> bool:
        """Whether Redis counts this node's seats now: it follows Redis and has told it
        every seat since it (re)connected. Otherwise the node's own count decides."""
        return self._synced

    def on_disconnect(self, close: Closer) -> None:
        """Close with ``close(user=..., client_id=...)`` (``Sessions.disconnect``) the
        connections that disconnect orders name."""
        self._close = close

    # --- the hub's side (synchronous, never blocks) -----------------------------------

    def _registered(self, outbox: Outbox) -> None:
        user = quote(outbox.user, safe="") if outbox.user is not None else ""
        ms = round(self._wall_clock() * 1000)
        claim = _Claim(outbox, f"{ms} {self.node} {next(self._tokens)} {user}")
        self._claims[outbox.client_id] = claim
        self._send(outbox.client_id, "c", claim.value)

    def _unregistered(self, outbox: Outbox) -> None:
        claim = self._claims.get(outbox.client_id)
        if claim is not None and claim.outbox is outbox:
            del self._claims[outbox.client_id]
            self._send(outbox.client_id, "r", claim.value)

    def _send(self, client_id: str, op: str, value: str) -> None:
        self._pending[client_id] = (op, value)
        self._wake.set()

    def control(self, message: bytes) -> None:
        """Act on a message of the control channel: close this node's connection that
        lost its client id, or those a disconnect order names, or take an answer to
        this node's order (see the module doc); others are another node's business."""
        kind, _, rest = message.partition(b" ")
        try:
            if kind == b"disconnect":
                self._order(orjson.loads(rest))
            elif kind == b"disconnected":
                self._answer(orjson.loads(rest))
            else:
                client_id, value = rest.decode().split(" ", 1)
                self._lost(kind.decode(), client_id, value)
        except (ValueError, TypeError, KeyError):
            # Not ours to read (a node of another version): not ours to act on.
            logger.warning("Ignored a control message: %r", message[:100])

    def _lost(self, kind: str, client_id: str, value: str) -> None:
        claim = self._claims.get(client_id)
        if claim is None or claim.value != value:
            return
        outbox = claim.outbox
        if outbox.close_code is not None:
            return
        self.closed_elsewhere += 1
        if kind == "refused":
            reason = "Client id in use by another user: choose another"
        else:
            reason = "Replaced by a newer connection with the same client id"
        logger.info(
            "[WebSocket] %s %s: its client id is held on another node (4409)",
            "Refused" if kind == "refused" else "Replaced",
            client_id,
        )
        outbox.close(CloseCode.REPLACED, reason)

    def _order(self, order: dict[str, Any]) -> None:
        closed = self._close(user=order["user"], client_id=order["client_id"])
        answer = {"id": order["id"], "node": self.node, "closed": closed}
        self._answers.append(b"disconnected " + orjson.dumps(answer))
        self._wake.set()

    def _answer(self, answer: dict[str, Any]) -> None:
        gathering = self._gatherings.get(answer["id"])
        if gathering is None:
            return  # another node's order, or one that gave up waiting
        gathering.answered.add(answer["node"])
        gathering.closed += answer["closed"]
        gathering.check()

    # --- the sessions' side ------------------------------------------------------------

    async def take_seat(self, user: str, client_id: str, limit: int, *, replaces: bool) -> bool:
        """Whether a connection of ``user`` with ``client_id`` may open, at most
        ``limit`` of the user's being open across the cluster; if so, this node holds
        its seat until :meth:`free_seat`. ``replaces``: it replaces a connection of
        this node (then it adds none, as it adds none when it replaces one of another
        node). The caller has checked the node's own count.

        Blocks at most ``admit_timeout`` on Redis. When Redis cannot count it (the
        node does not follow Redis, has not told it its seats since it (re)connected,
        its lease lapsed, or no answer in time), the seat is taken by the node's own
        count, and every seat is told to Redis again once it can be."""
        key = quote(user, safe="")
        client, script = self._client, self._scripts.get("seat")
        if client is None or script is None or not self._synced:
            self._hold(key)
            return True
        set_calls = self._set_calls
        outcome = None
        try:
            with trio.move_on_after(self._admit_timeout):
                outcome = await script(
                    keys=[
                        USER_PREFIX + key,
                        SEATS_PREFIX + self.node,
                        NODE_PREFIX + self.node,
                        CLIENT_PREFIX + client_id,
                    ],
                    args=[self.node, key, limit, int(replaces), NODE_PREFIX],
                )
            if outcome is None:
                logger.warning(
                    "Redis did not count a connection of a user within %gs: counting by "
                    "this node's connections until it does",
                    self._admit_timeout,
                )
        except Exception as exc:  # Redis away or failing: the node's count decides
            logger.warning("Could not count a connection of a user in Redis: %s", exc)
        finally:
            if outcome not in (0, 1):
                # Counted or not, Redis is told every seat again; the node's own count
                # decides until then, rather than each connection waiting.
                self._sync_all()
            if outcome not in (0, 1) or set_calls != self._set_calls:
                # This one too (perhaps the user's first), or again if a set overtook it.
                self._unsynced.add(key)
                self._freed.pop(key, None)
                self._wake.set()
        if outcome == 0:
            return False
        self._seats[key] = self._seats.get(key, 0) + 1
        return True

    def free_seat(self, user: str) -> None:
        """Free the seat :meth:`take_seat` gave a connection of ``user``. Never blocks."""
        key = quote(user, safe="")
        left = self._seats[key] - 1
        if left:
            self._seats[key] = left
        else:
            del self._seats[key]
        if self._synced and key not in self._unsynced:
            self._freed[key] = self._freed.get(key, 0) + 1
        else:
            self._unsynced.add(key)
        self._wake.set()

    def _hold(self, key: str) -> None:
        self._seats[key] = self._seats.get(key, 0) + 1
        self._unsynced.add(key)
        self._freed.pop(key, None)
        self._wake.set()

    def _sync_all(self) -> None:
        """Tell Redis every seat of this node again, absolutely, admitting by the
        node's own count until that is done."""
        self._synced = False
        self._unsynced.update(self._seats, self._freed)
        self._freed.clear()
        self._wake.set()

    async def disconnect(
        self, *, user: str | None, client_id: str | None
    ) -> tuple[list[str], int, list[str]]:
        """Close with 4403, on every node, the connections of ``user`` or the one with
        ``client_id`` (both: that one if it is the user's), as
        ``Sessions.disconnect`` does on one. Returns the client ids closed, sorted,
        how many nodes answered, and the names of the live nodes that did not answer
        within ``disconnect_wait`` (they may or may not have closed theirs).

        Raises :exc:`PublishUnavailable`: ``sent`` False, at once, while the node does
        not follow Redis (nothing was ordered); True when the call failed (the order
        may have been published)."""
        client, script = self._client, self._scripts.get("order")
        if client is None or script is None:
            raise PublishUnavailable(
                "This node has lost its connection to Redis and is reconnecting: no "
                "connection was disconnected; retry later",
                sent=False,
            )
        order_id = uuid.uuid4().hex
        order = {"id": order_id, "user": user, "client_id": client_id}
        gathering = self._gatherings[order_id] = _Gathering()
        try:
            try:
                reply = typing.cast(
                    list[bytes],
                    await script(
                        keys=[NODES_KEY],
                        args=[self._control, b"disconnect " + orjson.dumps(order), NODE_PREFIX],
                    ),
                )
            except Exception as exc:
                raise PublishUnavailable(
                    f"Redis did not confirm the disconnect order ({type(exc).__name__}: "
                    f"{exc}): the nodes may or may not have closed the connections",
                    sent=True,
                ) from exc
            nodes = (orjson.loads(raw) for raw in reply)
            expected = gathering.expected = {node["node"]: node["name"] for node in nodes}
            gathering.check()
            with trio.move_on_after(self._disconnect_wait):
                await gathering.done.wait()
        finally:
            del self._gatherings[order_id]
        silent = [name for node, name in expected.items() if node not in gathering.answered]
        return sorted(gathering.closed), len(gathering.answered), sorted(silent)

    def view(self) -> dict[str, Any]:
        """The cluster as of each node's last report (``/ws/stats?scope=cluster``)."""
        return self._view

    # --- Redis's side ------------------------------------------------------------------

    async def run(self, client: coredis.Redis[bytes]) -> None:
        """Tell Redis, for as long as ``client``'s connection lasts: every connection
        and every seat of this node first, then each claim and release, each freed
        seat and each answer to a disconnect order as they come, every connection
        again every :data:`REFRESH_INTERVAL`, and this node's report every heartbeat.
        Seats and disconnects use ``client`` meanwhile. Raises what the client raises
        when Redis cannot be reached."""
        claim = client.register_script(CLAIM)
        report = client.register_script(REPORT)
        seats = client.register_script(SEATS)
        refreshed = self._clock()
        reported = -float("inf")
        self._claim_all()
        self._sync_all()  # Redis may have lost them, or freed them with a lapsed lease
        self._scripts = {
            "seat": client.register_script(SEAT),
            "order": client.register_script(ORDER),
        }
        self._client = client
        try:
            while True:
                now = self._clock()
                if now - reported >= self._heartbeat:
                    reported = now
                    if await self._report(report) and self._synced:
                        # Paused or cut off past its lease: another node may have
                        # freed this node's seats.
                        logger.warning(
                            "This node's lease in Redis lapsed: counting its seats again"
                        )
                        self._sync_all()
                if now - refreshed >= REFRESH_INTERVAL:
                    refreshed = now
                    self._claim_all()
                while self._pending:
                    await self._flush(claim)
                while self._answers:
                    answer = self._answers.pop(0)
                    await client.publish(self._control, answer)
                while self._freed or self._unsynced:
                    await self._flush_seats(seats)
                # Nothing awaited since the last call: every seat is in Redis.
                self._synced = True
                with trio.move_on_at(reported + self._heartbeat):
                    await self._wake.wait()
                self._wake = trio.Event()
        finally:
            self._client = None
            self._synced = False

    def _claim_all(self) -> None:
        for client_id, claim in self._claims.items():
            self._pending[client_id] = ("c", claim.value)

    async def _flush(self, script: Any) -> None:
        batch = dict(itertools.islice(self._pending.items(), BATCH))
        keys = [CLIENT_PREFIX + client_id for client_id in batch]
        args: list[str | int] = [self._control, CLAIM_TTL_MS, NODE_PREFIX]
        for client_id, (op, value) in batch.items():
            args += [op, client_id, value]
        await script(keys=keys, args=args)
        for client_id, sent in batch.items():
            if self._pending.get(client_id) == sent:  # not changed meanwhile
                del self._pending[client_id]

    async def _report(self, script: Any) -> bool:
        """Report this node, read the others'; whether its lease had lapsed."""
        summary = orjson.dumps(
            {
                "node": self.node,
                "name": self.name,
                "total_connections": self._hub.connection_count,
            }
        )
        reply = typing.cast(
            list[bytes],
            await script(
                keys=[NODE_PREFIX + self.node, NODES_KEY],
                args=[
                    self.node,
                    summary,
                    round(self._heartbeat * 3 * 1000),
                    NODE_PREFIX,
                    SEATS_PREFIX,
                    BATCH,
                    USER_PREFIX,
                ],
            ),
        )
        nodes = sorted((orjson.loads(raw) for raw in reply[2:]), key=lambda n: n["name"])
        self._view = {
            "scope": "cluster",
            "total_connections": sum(node["total_connections"] for node in nodes),
            "nodes": nodes,
            "heartbeat": self._heartbeat,
        }
        return bool(int(reply[1]))

    async def _flush_seats(self, script: Any) -> None:
        """Tell Redis one batch of seats: those freed, or else those it is to be told
        absolutely (then a seat taken meanwhile is set again, see :meth:`take_seat`)."""
        if self._freed:
            mode, batch = "free", dict(itertools.islice(self._freed.items(), BATCH))
            for key in batch:
                del self._freed[key]
        else:
            mode = "set"
            users = list(itertools.islice(self._unsynced, BATCH))
            self._unsynced.difference_update(users)
            batch = {key: self._seats.get(key, 0) for key in users}
            self._set_calls += 1
        args: list[str | int] = [self.node, mode]
        for key, count in batch.items():
            args += [key, count]
        try:
            await script(
                keys=[SEATS_PREFIX + self.node, *(USER_PREFIX + key for key in batch)],
                args=args,
            )
        except Exception:
            self._unsynced.update(batch)  # whatever Redis did, it is told absolutely
            raise
