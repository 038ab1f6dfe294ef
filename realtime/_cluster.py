"""Cluster-wide rules of a node: a client id is held once in the whole cluster, and
the cluster's view of itself (docs/cluster.md, "Cluster-wide rules").

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

**Nodes.** Every :data:`HEARTBEAT` seconds a node writes its summary (its name and
connections) to ``{realtime}:node:<id>`` with a TTL of three heartbeats, and reads
every live node's in the same call: the cluster view of ``/ws/stats?scope=cluster``,
as of each node's last report. A node whose key expired is gone: its claims no longer
hold.
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

from ._hub import Hub
from ._outbox import Outbox

logger = logging.getLogger("realtime.cluster")

CLIENT_PREFIX: Final = "{realtime}:client:"
NODE_PREFIX: Final = "{realtime}:node:"
NODES_KEY: Final = "{realtime}:nodes"
#: Seconds between two reports of a node; it counts as gone after three missed.
HEARTBEAT: Final = 2.0
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
#: the TTL in milliseconds, the node key prefix. Writes the summary, forgets nodes
#: that are gone, and returns Redis's time (ms) and every live node's summary.
REPORT: Final = """
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
local now = redis.call('TIME')
local result = {tostring(now[1] * 1000 + math.floor(now[2] / 1000))}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local summary = redis.call('GET', ARGV[4] .. node)
  if summary then
    result[#result + 1] = summary
  else
    redis.call('SREM', KEYS[2], node)
  end
end
return result
"""


@attrs.frozen
class _Claim:
    """A connection of this node, as Redis knows it."""

    outbox: Outbox
    value: str


class Membership:
    """A node's part in the cluster-wide rules (see the module doc).

    ``hub`` is watched from construction on. ``control`` is the pub/sub channel every
    node follows (``_redis_bus.control_channel``). ``wall_clock`` gives seconds since
    the epoch (the order of two connections on two nodes); ``clock`` is monotonic.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        control: str,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = trio.current_time,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.node = uuid.uuid4().hex
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._hub = hub
        self._control = control
        self._wall_clock = wall_clock
        self._clock = clock
        self._heartbeat = heartbeat
        self._tokens = itertools.count(1)
        #: This node's connections, by client id.
        self._claims: dict[str, _Claim] = {}
        #: What Redis is still to be told, per client id: ``(op, value)``.
        self._pending: dict[str, tuple[str, str]] = {}
        self._wake = trio.Event()
        self._view: dict[str, Any] = {"nodes": [], "total_connections": 0}
        #: Connections of this node closed because another node's holds their id.
        self.closed_elsewhere = 0
        hub.watch_clients(self._registered, self._unregistered)

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
        lost its client id (see the module doc); others are another node's business."""
        try:
            kind, client_id, value = message.decode().split(" ", 2)
        except ValueError:  # not ours to read (a node of another version): not ours to act on
            logger.warning("Ignored a control message: %r", message[:100])
            return
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

    def view(self) -> dict[str, Any]:
        """The cluster as of each node's last report (``/ws/stats?scope=cluster``)."""
        return self._view

    # --- Redis's side ------------------------------------------------------------------

    async def run(self, client: coredis.Redis[bytes]) -> None:
        """Tell Redis, for as long as ``client``'s connection lasts: every connection
        of this node first, then each claim and release as they come, every
        connection again every :data:`REFRESH_INTERVAL`, and this node's report every
        heartbeat. Raises what the client raises when Redis cannot be reached."""
        claim = client.register_script(CLAIM)
        report = client.register_script(REPORT)
        refreshed = self._clock()
        reported = -float("inf")
        self._claim_all()
        while True:
            now = self._clock()
            if now - reported >= self._heartbeat:
                reported = now
                await self._report(report)
            if now - refreshed >= REFRESH_INTERVAL:
                refreshed = now
                self._claim_all()
            while self._pending:
                await self._flush(claim)
            with trio.move_on_at(reported + self._heartbeat):
                await self._wake.wait()
            self._wake = trio.Event()

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

    async def _report(self, script: Any) -> None:
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
                ],
            ),
        )
        nodes = sorted((orjson.loads(raw) for raw in reply[1:]), key=lambda n: n["name"])
        self._view = {
            "scope": "cluster",
            "total_connections": sum(node["total_connections"] for node in nodes),
            "nodes": nodes,
            "heartbeat": self._heartbeat,
        }
