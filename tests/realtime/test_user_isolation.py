"""Per-user isolation, as a property: random publishes addressed to users and client
ids, random connections of several users (several each, some reusing client ids), and
resumes; every message delivered live or replayed is addressed to its receiver, and
every receiver gets every message addressed to it while it is subscribed.

The hub is driven the way the sessions drive it (register, apply each subscription
change, offer a replay before the live stream), without sockets; the real gateway's
sessions are exercised over sockets in ``test_users``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
import orjson
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from protocol import (
    AlertData,
    Channel,
    Codec,
    NotificationData,
    NotificationType,
    PriceData,
    Severity,
    Subscriptions,
)
from realtime._hub import ClientIdTaken, Event, Hub
from realtime._outbox import Outbox, OutboxLimits

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
USERS = ("alice", "bob", "carol")
#: Client ids drawn from one small pool, so that users collide on them.
CLIENT_IDS = ("c0", "c1", "c2", "c3", "c4")
CHANNELS = (Channel.NOTIFICATIONS, Channel.ALERTS, Channel.PRICES)
HISTORY = (Channel.NOTIFICATIONS, Channel.ALERTS)
UNIVERSE = ("AAPL",)

_users = st.sampled_from(USERS)
_ids = st.sampled_from(CLIENT_IDS)


@attrs.frozen
class Sent:
    """What the model knows of one published message."""

    channel: Channel
    seq: int
    to: str | None
    user: str | None

    def for_(self, client_id: str, user: str) -> bool:
        return self.to in (None, client_id) and self.user in (None, user)


@attrs.define(eq=False)
class Connection:
    outbox: Outbox
    user: str
    state: Subscriptions
    #: Message numbers it should have been offered and has not been checked for yet.
    expected: list[int] = attrs.Factory(list)


def _payload(frame: bytes) -> dict[str, Any]:
    length = frame[1] & 0x7F
    decoded: dict[str, Any] = orjson.loads(frame[2 if length < 126 else 4 :])
    return decoded


class IsolationMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.hub = Hub(
            universe=UNIVERSE, clock=lambda: 0.0, history_messages=10_000, history_seconds=1e9
        )
        self.open: dict[str, Connection] = {}
        #: Every message published, by number (the id in its data).
        self.sent: list[Sent] = []

    # --- connections -------------------------------------------------------------

    @rule(user=_users, client_id=_ids)
    def connect(self, user: str, client_id: str) -> None:
        outbox = Outbox(client_id, Codec.JSON, OutboxLimits(max_messages=100_000), user=user)
        holder = self.open.get(client_id)
        try:
            older = self.hub.register(outbox)
        except ClientIdTaken:
            assert holder is not None
            assert holder.user != user
            return
        if holder is not None:  # replaced within the user: 4409 to the older one
            assert holder.user == user
            assert older is holder.outbox
            assert older.close_code == 4409
            self._leave(holder)
        self.open[client_id] = Connection(outbox, user, Subscriptions(10))

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        connection = self.open.pop(data.draw(st.sampled_from(sorted(self.open))))
        self._leave(connection)

    def _leave(self, connection: Connection) -> None:
        self.open.pop(connection.outbox.client_id, None)
        self._check(connection)  # what it was offered before it left
        state = connection.state
        self.hub.unregister(connection.outbox, [state.unsubscribe(c) for c, _ in list(state)])

    # --- subscriptions and resumes -------------------------------------------------------

    @precondition(lambda self: self.open)
    @rule(data=st.data(), channel=st.sampled_from(CHANNELS), resume=st.booleans())
    def subscribe(self, data: st.DataObject, channel: Channel, resume: bool) -> None:
        connection = self.open[data.draw(st.sampled_from(sorted(self.open)))]
        if channel in connection.state:
            return
        outbox, user = connection.outbox, connection.user
        if resume and channel is not Channel.PRICES:
            since = data.draw(st.integers(0, self.hub.position(channel)))
            replay = self.hub.replay(channel, since, self.hub.epoch, outbox.client_id, user)
            for frames in replay:
                outbox.offer(frames.get(outbox.codec))
            connection.expected += [
                number
                for number, sent in enumerate(self.sent)
                if sent.channel is channel
                and sent.seq > since
                and sent.for_(outbox.client_id, user)
            ]
        self.hub.apply(outbox, connection.state.subscribe(channel, None, universe=UNIVERSE))

    @precondition(lambda self: self.open)
    @rule(data=st.data(), channel=st.sampled_from(CHANNELS))
    def unsubscribe(self, data: st.DataObject, channel: Channel) -> None:
        connection = self.open[data.draw(st.sampled_from(sorted(self.open)))]
        if channel in connection.state:
            self.hub.apply(connection.outbox, connection.state.unsubscribe(channel))

    # --- publishing -------------------------------------------------------------------

    @rule(
        channel=st.sampled_from(CHANNELS),
        to=st.none() | _ids,
        user=st.none() | _users,
    )
    def publish(self, channel: Channel, to: str | None, user: str | None) -> None:
        number = len(self.sent)
        if channel is Channel.PRICES:
            data: Any = PriceData(
                price=100.0 + number, change=0, change_pct=0, volume=number, bid=1, ask=2
            )
            message = self.hub.publish(Event(channel, data, NOW, "AAPL", to, user))
        else:
            data = (
                NotificationData(id=str(number), message="m", type=NotificationType.INFO)
                if channel is Channel.NOTIFICATIONS
                else AlertData(
                    id=str(number), symbol="AAPL", type="t", message="m", severity=Severity.INFO
                )
            )
            message = self.hub.publish(Event(channel, data, NOW, None, to, user))
        self.sent.append(Sent(channel, message.seq, to, user))
        for client_id, connection in self.open.items():
            if channel in connection.state and self.sent[-1].for_(client_id, connection.user):
                connection.expected.append(number)

    # --- the property ---------------------------------------------------------------------

    def _check(self, connection: Connection) -> None:
        """Everything offered to ``connection`` since the last check is addressed to it,
        and is exactly what the model expects, in order."""
        outbox = connection.outbox
        got = []
        for frame in outbox.take():
            message = _payload(frame)
            number = (
                int(message["data"]["volume"])
                if message["type"] == "price_update"
                else int(message["data"]["id"])
            )
            sent = self.sent[number]
            assert sent.for_(outbox.client_id, connection.user), (outbox, sent)
            got.append(number)
        assert got == connection.expected, (outbox.client_id, connection.user)
        connection.expected.clear()

    @invariant()
    def every_message_is_its_receiver_s(self) -> None:
        for connection in self.open.values():
            assert connection.outbox.close_code is None
            self._check(connection)


TestIsolation = IsolationMachine.TestCase
TestIsolation.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
