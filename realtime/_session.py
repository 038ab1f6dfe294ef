"""WebSocket sessions: one per connection, its reader task, and the write path.

Theory of operation
-------------------
The listener hands each ``/ws/{client_id}`` upgrade to :meth:`Sessions.handle`,
which accepts it (or closes it at once with 4400 for a bad client id), registers
the connection's session -- an :class:`Outbox` -- with the hub, offers ``welcome``,
and then reads in the handler's own task: each inbound message passes the rate
limiter, is decoded by ``protocol`` and applied (subscription changes go to the hub
and the ack, snapshot or replay to the outbox, all without awaiting, so the hub
sees each request atomically). Bad input gets an ``error`` reply.

Writes need no task of their own while the socket takes them. A frame offered to
an idle connection is written at once with one non-blocking ``write``
(``WebSocketConnection.try_send_frames``), in whichever task offered it: for events,
the publisher's. Under load (see :class:`Flusher`), a connection written within the
last ``flush_delay``, or one that is streaming (its last write carried a batch),
queues its frames with the flusher instead, which writes them together once they
have waited that long: from the bus after a later event, or from the flusher's task
once the publishing task yields. So a loaded gateway pays a syscall per batch, not
per message. Only when a write cannot complete at once (the client reads slowly, or
a control frame is being written) does a writer task start for that connection; it
writes with ``send_all`` until the outbox is empty, then ends, and direct writes
resume. A TLS connection cannot be written directly: its writer, once started,
stays and waits for the next frames.

One watchdog task serves every connection (:meth:`Sessions.run`): each tick it
aborts a connection whose writer began a write more than the write deadline ago,
and every heartbeat interval it queues a ping frame for each connection that was
silent (no message, no pong) for an interval, and closes with 1011 those silent for
``heartbeat_misses + 1`` intervals. Deadlines are so kept to within one tick.

Every close the server decides (slow consumer, replaced, going away, rate limit,
heartbeat) is recorded on the outbox and ends the reader; the handler then writes
what a flushing close kept (bounded by the write deadline) and sends the close
frame, bounded by the close timeout. A write past its deadline aborts the
connection without a close frame.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from time import perf_counter
from typing import Final

import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from protocol import (
    CLIENT_ID_PATTERN,
    PROTOCOL_VERSION,
    Channel,
    ClientMessage,
    Codec,
    ErrorCode,
    ErrorReply,
    Limits,
    Ping,
    Pong,
    RemoteProtocolError,
    ServerMessage,
    Subscribe,
    Subscribed,
    Subscriptions,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    decode_client,
    encode,
)

from ._config import Config
from ._hub import Hub, utc_now
from ._outbox import SLOW_CONSUMER, Outbox, OutboxLimits
from ._websocket import (
    ConnectionClosed,
    RequestHead,
    WebSocketConnection,
    accept_websocket,
    build_frame,
    reject_websocket,
)

logger = logging.getLogger("realtime.websocket")

_CLIENT_ID: Final = re.compile(CLIENT_ID_PATTERN)
_PREFIX: Final = "/ws/"
_SUBPROTOCOLS: Final = (Codec.MSGPACK.subprotocol, Codec.JSON.subprotocol)
_STRIKE_WINDOW: Final = 60.0

GOING_AWAY: Final = 1001
INTERNAL_ERROR: Final = 1011
INVALID_CLIENT_ID: Final = 4400
RATE_LIMITED: Final = 4429


def client_id_from_path(path: str) -> str | None:
    """The client id of ``/ws/{client_id}`` (query string ignored), or None if invalid."""
    client_id = path.partition("?")[0].removeprefix(_PREFIX)
    return client_id if _CLIENT_ID.fullmatch(client_id) else None


class _RateLimiter:
    """A token bucket per connection, plus the recent breaches ("strikes")."""

    __slots__ = ("strikes", "tokens", "updated")

    def __init__(self, burst: int, now: float) -> None:
        self.tokens = float(burst)
        self.updated = now
        self.strikes: deque[float] | None = None  # allocated on the first breach

    def allow(self, now: float, rate: float, burst: int) -> bool:
        self.tokens = min(burst, self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def strike(self, now: float, limit: int) -> bool:
        """Record a breach; True when ``limit`` breaches fell within a minute."""
        if self.strikes is None:
            self.strikes = deque(maxlen=limit)
        self.strikes.append(now)
        return len(self.strikes) == limit and now - self.strikes[0] <= _STRIKE_WINDOW


#: Share of the time spent delivering events and writing above which frames coalesce,
#: judged every ``_LOAD_WINDOW`` seconds. Below it a write per message is affordable,
#: and each message goes out at once.
COALESCE_LOAD: Final = 0.25
_LOAD_WINDOW: Final = 0.1

#: Frames in one write that mark a connection as streaming: that many within the flush
#: delay is thousands a second. Two or three only mean that two events came close.
_STREAMING_BATCH: Final = 4

#: An unmasked ping frame with no payload; the peer's pong shows in ``ws.last_pong``.
_PING_FRAME: Final = b"\x89\x00"


class _Session(Outbox):
    """One connection: the outbox the hub offers to, the WebSocket it is written to,
    and the state its reader, the flusher, its writer and the watchdog share."""

    __slots__ = (
        "due",
        "heard",
        "last_write",
        "parked",
        "read_scope",
        "sessions",
        "streaming",
        "subscriptions",
        "write_timed_out",
        "writer",
        "writing_since",
        "ws",
    )

    def __init__(self, ws: WebSocketConnection, client_id: str, sessions: Sessions) -> None:
        super().__init__(client_id, Codec.for_subprotocol(ws.subprotocol), sessions.outbox_limits)
        self.ws = ws
        self.sessions = sessions
        self.subscriptions = Subscriptions(sessions.config.max_symbols)
        #: When the peer was last heard from (any message), on Trio's clock.
        self.heard = trio.current_time()
        #: Cancelled to end the reader: the connection is closing.
        self.read_scope = trio.CancelScope()
        #: The scope of this connection's writer task, while it has one.
        self.writer: trio.CancelScope | None = None
        #: The writer task, while it waits for frames (TLS connections keep theirs).
        self.parked: Task | None = None
        #: When the writer's write in progress began; None between writes.
        self.writing_since: float | None = None
        self.write_timed_out = False
        #: When the flusher last wrote, and when it should write what is pending
        #: (``time.perf_counter``; see :class:`Flusher`).
        self.last_write = -math.inf
        self.due = 0.0
        #: The last write carried a batch: frames come far faster than the flush
        #: delay, so even the first one after a pause waits to share a write.
        self.streaming = False

    def send_now(self, frame: bytes) -> bool:
        # The fast path of every delivery: one write, no queue, no task switch.
        flusher = self.sessions.flusher
        if self.writer is not None or (
            flusher.coalescing and (self.streaming or flusher.now - self.last_write < flusher.delay)
        ):
            return False  # a writer has the connection, or frames for it coalesce
        return self.write_now(frame, 1)

    def write_now(self, data: bytes, frames: int) -> bool:
        """Write ``data`` (``frames`` of them) with one non-blocking write: False if it
        could not be written at all. What the socket did not take goes on with a writer."""
        ws = self.ws
        if not ws.try_send_frames(data):
            return False
        sessions = self.sessions
        self.last_write = sessions.flusher.now
        sessions.messages_sent += frames
        sessions.writes += 1
        if ws.backlogged:
            sessions.start_writer(self, b"", 0)
        return True

    def ready(self) -> None:
        parked = self.parked
        if parked is not None:
            # A waiting writer takes it from here, the close included.
            self.parked = None
            reschedule(parked)
        elif self.close_code is not None:
            # The reader ends and the handler finishes the connection; a writer that
            # is still writing sees the close itself and leaves the rest to it.
            if self.writer is None:
                self.read_scope.cancel()
        elif self.writer is None:
            self.sessions.flusher.schedule(self)

    async def wait_ready(self) -> None:
        """Park the writer task until :meth:`ready`; cancellable."""
        self.parked = current_task()

        def abort(_: object) -> Abort:
            self.parked = None
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def reply(self, message: ServerMessage) -> None:
        codec = self.codec
        self.offer(build_frame(encode(message, codec), text=codec.is_text))


class Flusher:
    """Coalesces and writes frames for busy connections; see the module docstring.

    While the gateway spends less than ``COALESCE_LOAD`` of its time delivering
    events, every frame is written at once (``_Session.send_now``). Above it, a frame
    offered to a connection written less than ``delay`` seconds ago, or to a streaming
    one, is queued here with its session and written once it has waited ``delay``,
    so that the frames that arrive meanwhile share its write; as is a frame that
    could not be written at once, for the next flush. ``flush_due`` writes what is
    due; the bus calls it after each event. :meth:`run` writes everything queued
    whenever its task gets to run, i.e. once the task that published yields. A write
    the socket does not take at once goes to a writer task
    (:meth:`Sessions.start_writer`).
    """

    def __init__(self, sessions: Sessions, delay: float) -> None:
        self._sessions = sessions
        self.delay = delay
        #: ``time.perf_counter()`` as of the latest event or flush: one clock read per
        #: event, not one per delivery.
        self.now = perf_counter()
        self._now: deque[_Session] = deque()
        self._later: deque[_Session] = deque()  # ordered by ``due``
        self._task: Task | None = None
        #: Whether the gateway is loaded enough for frames to wait (see the class doc),
        #: from the time spent delivering events and flushing in the last window.
        self.coalescing = False
        self._busy = 0.0
        self._window = self.now

    def tick(self) -> None:
        """Read the clock; the bus calls it before it hands an event to the hub."""
        self.now = perf_counter()

    def schedule(self, session: _Session) -> None:
        now = self.now
        if not self.coalescing or (
            not session.streaming and now - session.last_write >= self.delay
        ):
            self._now.append(session)
        else:
            session.due = now + self.delay
            self._later.append(session)
        task = self._task
        if task is not None:
            self._task = None
            reschedule(task)

    def flush_due(self) -> None:
        """Write every queued session that is due now; the bus calls it after each
        event, which it timed from :meth:`tick`."""
        started = self.now
        now_queue, later = self._now, self._later
        write = self._write
        while now_queue:
            write(now_queue.popleft())
        if later:
            now = self.now = perf_counter()
            while later and later[0].due <= now:
                write(later.popleft())
        self._account(started)

    def _account(self, started: float) -> None:
        """Add the time since ``started`` to the busy time; decide on coalescing once
        per window."""
        end = perf_counter()
        self._busy += end - started
        elapsed = end - self._window
        if elapsed >= _LOAD_WINDOW:
            self.coalescing = self.delay > 0 and self._busy / elapsed >= COALESCE_LOAD
            self._busy = 0.0
            self._window = end

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write every queued session each time this task runs, until cancelled."""
        task_status.started()
        while True:
            if not self._now and not self._later:
                self._task = current_task()
                await wait_task_rescheduled(self._abort)
            started = self.now = perf_counter()
            for queue in (self._now, self._later):
                while queue:
                    self._write(queue.popleft())
            self._account(started)

    def _abort(self, _: object) -> Abort:
        self._task = None
        return Abort.SUCCEEDED

    def _write(self, session: _Session) -> None:
        if session.writer is not None or session.close_code is not None or session.ws.closed:
            return  # its writer task, or the handler closing it, has what is pending
        frames = session.take()
        if not frames:
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        session.streaming = len(frames) >= _STREAMING_BATCH
        if not session.write_now(data, len(frames)):
            self._sessions.start_writer(session, data, len(frames))


class Sessions:
    """Serves every WebSocket connection of the gateway against one hub."""

    def __init__(self, config: Config, hub: Hub, *, server_version: str) -> None:
        self.config = config
        self.hub = hub
        self.server_version = server_version
        self.draining = False
        self._limits = Limits(
            max_message_size=config.max_message_size, max_symbols=config.max_symbols
        )
        self.outbox_limits = OutboxLimits(config.outbox_messages, config.outbox_bytes)
        self.flusher = Flusher(self, config.flush_delay)
        self._writers: trio.Nursery | None = None
        self._sessions: set[_Session] = set()
        self._idle = trio.Event()
        self._idle.set()
        self.messages_sent = 0
        #: Writes to sockets: ``messages_sent / writes`` is the coalescing factor.
        self.writes = 0
        self.rate_limited = 0
        self.write_timeouts = 0
        #: Writes handed to a writer task, and writer tasks running now.
        self.blocked_writes = 0
        self.writers = 0
        self.heartbeat_timeouts = 0

    # --- lifecycle ------------------------------------------------------------------

    def drain(self) -> None:
        """Refuse new connections and close every open one with 1001 after its
        pending messages. Never blocks; see :meth:`wait_idle`."""
        self.draining = True
        for outbox in self.hub.outboxes():
            outbox.close(GOING_AWAY, "Server shutting down; reconnect", flush=True)

    async def wait_idle(self) -> None:
        """Block until no connection is open."""
        await self._idle.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the flusher, the watchdog and the writer tasks, until cancelled.

        Start it before connections arrive. The watchdog ticks every
        ``min(1 s, write_timeout / 4, heartbeat_interval / 4)``, so each deadline holds
        to within a quarter of itself.
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self.flusher.run)
            self._writers = nursery
            task_status.started()
            await self._watch()

    async def _watch(self) -> None:
        config = self.config
        tick = min(1.0, config.write_timeout / 4, config.heartbeat_interval / 4)
        next_ping = trio.current_time() + config.heartbeat_interval
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            for session in list(self._sessions):
                since = session.writing_since
                if since is not None and now - since > config.write_timeout:
                    session.write_timed_out = True
                    # The cancelled write closes the transport; the writer then ends
                    # the connection, or the handler's own final write gives up.
                    if session.writer is not None:
                        session.writer.cancel()
                    session.read_scope.cancel()
            if now >= next_ping:
                next_ping = now + config.heartbeat_interval
                self._heartbeat(now)

    def start_writer(self, session: _Session, data: bytes, frames: int) -> None:
        """Hand ``session`` to a writer task: ``data`` (``frames`` of them) could not be
        written at once, or the connection has a backlog to write."""
        if self._writers is None:
            raise RuntimeError("Sessions.run is not running")
        session.writer = trio.CancelScope()
        self.blocked_writes += 1
        self.writers += 1
        self._writers.start_soon(self._write, session, data, frames)

    def _heartbeat(self, now: float) -> None:
        interval, timeout = self.config.heartbeat_interval, self.config.heartbeat_timeout
        for session in list(self._sessions):
            silent = now - max(session.heard, session.ws.last_pong or 0.0)
            if silent > timeout:
                if session.close_code is None:
                    self.heartbeat_timeouts += 1
                    session.close(INTERNAL_ERROR, "Heartbeat timeout: no pong received")
            elif silent >= interval:
                # Only a peer that said nothing for a whole interval is asked: one heard
                # from since is alive, and a ping it does not need can cross its close.
                session.offer(_PING_FRAME)

    async def handle(self, stream: trio.abc.Stream, request: RequestHead) -> None:
        """Serve one upgrade request until the connection ends. Never raises for the
        peer's behaviour; the listener closes ``stream`` afterwards in any case."""
        if self.draining:
            await reject_websocket(
                stream, 503, "Server is shutting down; reconnect", headers=[(b"Retry-After", b"1")]
            )
            return
        ws = await self._accept(stream, request)
        if ws is None:
            return
        client_id = client_id_from_path(request.path)
        if client_id is None:
            logger.info("[WebSocket] Refused invalid client id in %r", request.path[:100])
            await ws.aclose(
                INVALID_CLIENT_ID,
                "Invalid client id: use 1-64 characters of A-Z a-z 0-9 _ . : -",
            )
            return
        session = self._open(ws, client_id)
        # The read loop is inlined here: an idle connection's task waits in it, and
        # each coroutine frame on that stack costs every connection about 250 bytes.
        limiter = _RateLimiter(self.config.rate_burst, trio.current_time())
        try:
            with session.read_scope:
                while session.close_code is None:
                    # No local keeps the frame or its decoded message while this task
                    # waits for the next one: idle connections hold only their state.
                    self._on_message(session, limiter, await ws.receive_message())
        except ConnectionClosed:
            pass  # the peer is gone
        finally:
            await self._close(session)

    async def _accept(
        self, stream: trio.abc.Stream, request: RequestHead
    ) -> WebSocketConnection | None:
        # A function of its own so the handshake's cancel scope does not live on in
        # the handler's frame for the whole connection.
        with trio.move_on_after(self.config.write_timeout):
            try:
                return await accept_websocket(
                    stream,
                    request,
                    subprotocols=_SUBPROTOCOLS,
                    max_message_size=self.config.max_message_size,
                )
            except ConnectionClosed:
                return None
        return None

    def _open(self, ws: WebSocketConnection, client_id: str) -> _Session:
        """Register the connection with the hub and offer its welcome."""
        config, hub = self.config, self.hub
        session = _Session(ws, client_id, self)
        if hub.register(session) is not None:
            logger.info("[WebSocket] Replaced older connection of %s (4409)", client_id)
        logger.info("[WebSocket] Connected: %s", client_id)
        session.reply(
            Welcome(
                client_id=client_id,
                protocol=PROTOCOL_VERSION,
                server=self.server_version,
                channels=tuple(Channel),
                symbols=hub.symbols,
                heartbeat_interval=config.heartbeat_interval,
                epoch=hub.epoch,
                timestamp=utc_now(),
            )
        )
        if not self._sessions:
            self._idle = trio.Event()
        self._sessions.add(session)
        return session

    async def _close(self, session: _Session) -> None:
        """Leave the hub and close the connection, once its reader has ended."""
        if session.writer is not None:
            # The peer is gone (or the server stops): nothing more can be written.
            session.writer.cancel()
        self.hub.unregister(
            session, [session.subscriptions.unsubscribe(c) for c, _ in session.subscriptions]
        )
        try:
            await self._finish(session)
            self._log_close(session)
        finally:
            # Idle only once every session has finished closing, not when the last
            # one left the hub: a drain must not end while closes are in flight.
            self._sessions.discard(session)
            if not self._sessions:
                self._idle.set()

    async def _finish(self, session: _Session) -> None:
        """Write what a flushing close kept (e.g. the rate_limited errors before a
        4429, or the messages before a 1001), within the write deadline, then close."""
        ws, code = session.ws, session.close_code
        frames = session.take() if code is not None else []
        try:
            if (frames or ws.backlogged) and not ws.closed and not session.write_timed_out:
                with trio.move_on_after(self.config.write_timeout) as deadline:
                    try:
                        await ws.send_frames(b"".join(frames))
                        self.messages_sent += len(frames)
                        self.writes += 1
                    except ConnectionClosed:
                        pass
                if deadline.cancelled_caught:
                    session.write_timed_out = True
        finally:
            if session.write_timed_out:
                self.write_timeouts += 1
                logger.warning(
                    "[WebSocket] Write timed out after %ss: %s; aborted",
                    self.config.write_timeout,
                    session.client_id,
                )
            # Shielded and bounded by the close timeout: runs even when cancelled.
            if code is None:
                await ws.aclose()
            else:
                await ws.aclose(code, session.close_reason)

    def _log_close(self, session: _Session) -> None:
        if session.close_code == SLOW_CONSUMER:
            logger.warning(
                "[WebSocket] Slow consumer closed: %s (%s)",
                session.client_id,
                session.close_reason,
            )
        code, reason = session.ws.close_code, session.ws.close_reason
        logger.info(
            "[WebSocket] Disconnected: %s (code %s%s)",
            session.client_id,
            code,
            f", {reason}" if reason else "",
        )

    # --- writer -----------------------------------------------------------------------

    async def _write(self, session: _Session, data: bytes, frames: int) -> None:
        """Write ``data``, then whatever the outbox holds, until it is empty; then the
        flusher writes this connection again. A TLS connection, which the flusher
        cannot write, keeps its writer: it waits for the next frames instead of
        ending (a task per burst would cost more than the write). Ends the connection
        if the transport fails or the write deadline passes, and leaves a close to
        the handler."""
        ws, scope = session.ws, session.writer
        assert scope is not None
        ended = True
        try:
            with scope:
                while True:
                    session.writing_since = trio.current_time()
                    await ws.send_frames(data)
                    session.writing_since = None
                    self.messages_sent += frames
                    self.writes += 1
                    if session.close_code is not None:
                        break  # the handler writes what a flushing close kept
                    pending = session.take()
                    if not pending:
                        if ws.direct:
                            ended = False
                            return
                        await session.wait_ready()  # TLS: the next frames, or the close
                        if session.close_code is not None:
                            break
                        pending = session.take()
                    data, frames = b"".join(pending), len(pending)
        except ConnectionClosed:
            pass
        finally:
            self.writers -= 1
            session.writing_since = None
            session.writer = None
            session.parked = None
            if ended:
                session.read_scope.cancel()

    # --- reader -----------------------------------------------------------------------

    def _on_message(self, session: _Session, limiter: _RateLimiter, data: str | bytes) -> None:
        config = self.config
        now = session.heard = trio.current_time()
        if not limiter.allow(now, config.rate_limit, config.rate_burst):
            self.rate_limited += 1
            if limiter.strike(now, config.rate_strikes):
                # Flushed: the client sees the rate_limited errors that led here.
                session.close(RATE_LIMITED, "Rate limit exceeded repeatedly", flush=True)
                return
            session.reply(
                _error(
                    ErrorCode.RATE_LIMITED,
                    f"Rate limit exceeded: at most {config.rate_limit:g} messages per "
                    f"second (burst {config.rate_burst}); this message was dropped",
                    None,
                )
            )
            return
        try:
            message = decode_client(data, session.codec, self._limits)
        except RemoteProtocolError as exc:
            if exc.close_code is not None:
                session.close(exc.close_code, exc.message)
            else:
                session.reply(_error(exc.code, exc.message, exc.request_id))
            return
        try:
            self._apply(session, message)
        except RemoteProtocolError as exc:  # refused by the subscription state or history
            session.reply(_error(exc.code, exc.message, message.id))

    def _apply(self, session: _Session, message: ClientMessage) -> None:
        """Apply one request; synchronous, so the hub sees it whole."""
        hub = self.hub
        if isinstance(message, Ping):
            session.reply(Pong(id=message.id, timestamp=utc_now()))
        elif isinstance(message, Subscribe):
            channel = message.channel
            replay = None
            if message.since is not None and channel is not Channel.PRICES:
                replay = hub.replay(channel, message.since, message.epoch or "", session.client_id)
            change = session.subscriptions.subscribe(
                channel, hub.canonical(message.symbols), universe=hub.universe
            )
            hub.apply(session, change)
            session.reply(
                Subscribed(
                    channel=channel, symbols=change.ack_symbols, id=message.id, timestamp=utc_now()
                )
            )
            if channel is Channel.PRICES:
                hub.offer_snapshot(session, message.symbols)
            elif replay:
                for frames in replay:
                    session.offer(frames.get(session.codec))
            logger.info("[WebSocket] Client %s subscribed to %s", session.client_id, channel)
        elif isinstance(message, Unsubscribe):
            change = session.subscriptions.unsubscribe(message.channel, message.symbols)
            hub.apply(session, change)
            session.reply(
                Unsubscribed(
                    channel=message.channel,
                    symbols=change.ack_symbols,
                    id=message.id,
                    timestamp=utc_now(),
                )
            )
            logger.info(
                "[WebSocket] Client %s unsubscribed from %s", session.client_id, message.channel
            )


def _error(code: ErrorCode, text: str, request_id: str | int | None) -> ErrorReply:
    return ErrorReply(error=text, code=code.value, id=request_id, timestamp=utc_now())
