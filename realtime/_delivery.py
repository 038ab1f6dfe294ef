"""Delivery: the write path, from every connection's outbox to its socket.

Theory of operation
-------------------
The hub offers frames to outboxes and never waits (``_outbox``). Each connection's
outbox is an :class:`Outlet`: an outbox with the WebSocket it drains into. When an
outlet goes from empty to pending it asks :class:`Delivery` to write it, and the
delivery decides when and how:

* **Burst coalescing** (``flush_delay > 0``, the default). The outlet joins the
  flusher's queue and the flusher task is woken. It runs once the task that offered
  (a feed, the publish API, a reader answering a request) yields, and then writes
  each queued outlet's pending frames with one non-blocking ``write``. So the frames
  a publisher hands over without yielding -- one feed tick's hundred price updates,
  a replay -- go out as one write per connection, at the cost of one task switch per
  burst, not one per message or per connection. A burst that goes on for
  ``flush_delay`` is written there and then, from the publisher's task, after the
  event that took it past (the hub calls :meth:`Delivery.fanned_out` after each):
  no frame waits longer than that for its burst to end.
* **Wide events are written at once.** An event that alone made ``WIDE_EVENT``
  outlets pending (a price with a hundred subscribers, a notification to everyone)
  is written right after its fan-out, with what the burst left pending before it.
  Its own writes already take about the flush delay, and every frame of a burst waits
  for every write of it: coalescing the next events with it would cut the number of
  writes but make each of its subscribers wait for all of them. Latency wins here;
  under load the time-window rule below still merges such writes.
* **Time-window coalescing under load.** While the gateway spends at least
  ``COALESCE_LOAD`` of its time delivering (the :class:`LoadMeter`, judged per
  ``LOAD_WINDOW``), an outlet written less than ``flush_delay`` ago waits that long
  before its next write, so that the bursts meanwhile share it. Below the threshold
  nothing waits beyond the end of its burst.
* **No coalescing** (``flush_delay == 0``). Every frame offered to an idle outlet is
  written at once, in the task that offered it (:meth:`Outlet.send_now`).

Every write is first tried without blocking (``WebSocketConnection.try_send_frames``).
What the socket does not take at once goes to a *writer task* started for that
connection alone: it writes with ``send_all`` until the outlet is empty, then ends,
and the flusher writes the connection again. Each write of a writer has a deadline
(``write_timeout``): past it the connection is aborted without a close frame. A TLS
stream cannot be written without blocking, so a TLS connection's writer, once
started, stays and waits for the next frames instead of ending.

A close the server decides is recorded on the outlet (``Outbox.close``), which then
cancels ``read_scope``: the connection's reader ends, and its owner calls
:meth:`Delivery.finish` to write what a flushing close kept and the close frame.

The delivery reads time only from the injected ``clock`` (``trio.current_time`` in the
server), so Trio's ``MockClock`` drives the flush delay, the load meter and the write
deadline in tests.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Final

import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from protocol import Codec

from ._latency import LatencyHistogram
from ._outbox import Outbox, OutboxLimits
from .ws import ConnectionClosed, WebSocketConnection

logger = logging.getLogger("realtime.websocket")

#: Share of the time spent delivering above which frames wait ``flush_delay`` to share a
#: write, judged every ``LOAD_WINDOW`` seconds. Below it, only bursts are coalesced.
COALESCE_LOAD: Final = 0.25
LOAD_WINDOW: Final = 0.1

#: The shortest wait a timer keeps to: epoll counts whole milliseconds, so a wait for
#: a frame due sooner would outlast the flush delay (``Delivery(timer_resolution=0)``
#: under a MockClock, whose timers are exact).
TIMER_RESOLUTION: Final = 0.001

#: Outlets an event must make pending to be written right after its own fan-out: at
#: several µs a write, its writes alone last about the default flush delay.
WIDE_EVENT: Final = 64


class LoadMeter:
    """The share of time spent busy, judged once per window; pure.

    :meth:`busy` is told each busy interval, in the same clock's seconds; ``loaded``
    says whether the last complete window was busy at least ``threshold`` of its time.
    A threshold of 0 means always loaded (coalescing forced on); above 1, never.
    """

    __slots__ = ("_busy", "_start", "loaded", "threshold", "window")

    def __init__(
        self, *, now: float, threshold: float = COALESCE_LOAD, window: float = LOAD_WINDOW
    ) -> None:
        self.threshold = threshold
        self.window = window
        self.loaded = threshold <= 0
        self._busy = 0.0
        self._start = now

    def busy(self, started: float, ended: float) -> None:
        """Count ``ended - started`` as busy; close the window once it is complete."""
        self._busy += ended - started
        elapsed = ended - self._start
        if elapsed >= self.window:
            self.loaded = self._busy >= self.threshold * elapsed
            self._busy = 0.0
            self._start = ended


async def _park(owner: object, slot: str) -> None:
    """Sleep until ``reschedule(getattr(owner, slot))``, the current task being kept in
    that slot meanwhile (and cleared if cancelled): cheaper than an Event per wait."""
    setattr(owner, slot, current_task())

    def abort(_: object) -> Abort:
        setattr(owner, slot, None)
        return Abort.SUCCEEDED

    await wait_task_rescheduled(abort)


class Outlet(Outbox):
    """One connection's outbox and the WebSocket it drains into.

    ``read_scope`` is the connection's reader's scope: cancelled when the connection
    must end (a close was decided, or a write failed).
    """

    __slots__ = (
        "aborted",
        "delivery",
        "due",
        "finisher",
        "last_write",
        "parked",
        "read_scope",
        "writer",
        "ws",
    )

    def __init__(
        self, ws: WebSocketConnection, client_id: str, limits: OutboxLimits, delivery: Delivery
    ) -> None:
        super().__init__(client_id, Codec.for_subprotocol(ws.subprotocol), limits)
        self.ws = ws
        self.delivery = delivery
        self.read_scope = trio.CancelScope()
        #: The scope of this connection's writer task, while it has one.
        self.writer: trio.CancelScope | None = None
        #: The writer task, while it waits for frames (TLS connections keep theirs).
        self.parked: Task | None = None
        #: The owner's task, while it waits for the writer to end (see ``finish``).
        self.finisher: Task | None = None
        #: When the flusher last wrote this outlet, and when it may write it next.
        self.last_write = -math.inf
        self.due = 0.0
        #: Why the delivery cut the connection without a close frame, if it did.
        self.aborted: str | None = None

    def send_now(self, frame: bytes) -> bool:
        delivery = self.delivery
        if delivery.flush_delay or self.writer is not None:
            return False  # frames wait for the end of the burst, or a writer has them
        return delivery.write_now(self, frame, 1)

    def ready(self) -> None:
        parked = self.parked
        if parked is not None:
            # A waiting writer takes it from here, the close included.
            self.parked = None
            reschedule(parked)
        elif self.close_code is not None:
            # The reader ends and the owner finishes the connection; a writer that is
            # still writing sees the close itself and ends the reader when done.
            if self.writer is None:
                self.read_scope.cancel()
        elif self.writer is None:
            self.delivery.schedule(self)

    async def wait_ready(self) -> None:
        """Park the writer task until :meth:`ready`; cancellable."""
        await _park(self, "parked")


class Delivery:
    """Writes every connection's outbox to its socket; see the module docstring.

    Start :meth:`run` before the first connection. Counters (plain integers, read by
    the metrics): ``messages_sent``, ``writes`` (``messages_sent / writes`` is the
    coalescing factor), ``blocked_writes`` (writes handed to a writer task),
    ``writers`` (writer tasks now) and ``write_timeouts``; and ``latency``, one
    observation per flush of the flusher: the seconds from the first offer of the
    oldest frame it wrote (the hub offers as it publishes) to the end of its writes.
    """

    def __init__(
        self,
        *,
        flush_delay: float,
        write_timeout: float,
        clock: Callable[[], float] = trio.current_time,
        meter: LoadMeter | None = None,
        timer_resolution: float = TIMER_RESOLUTION,
        wide_event: int = WIDE_EVENT,
    ) -> None:
        self.flush_delay = flush_delay
        self.wide_event = wide_event
        self.timer_resolution = timer_resolution
        self.write_timeout = write_timeout
        self._clock = clock
        self.meter = meter if meter is not None else LoadMeter(now=clock())
        #: Outlets to write as soon as the flusher runs, and those waiting out the flush
        #: delay (in order of ``due``: each waits the same delay from when it came).
        self._now: deque[Outlet] = deque()
        self._later: deque[Outlet] = deque()
        #: When the burst now being offered began: one clock read per burst.
        self._burst_started: float | None = None
        #: Outlets queued to write now as of the end of the last event's fan-out.
        self._queued_before = 0
        self._flusher: Task | None = None
        self._writers: trio.Nursery | None = None
        self.messages_sent = 0
        self.writes = 0
        self.blocked_writes = 0
        self.writers = 0
        self.write_timeouts = 0
        #: Publish to write: per flush, how long its oldest frame waited (see ``_metrics``).
        self.latency = LatencyHistogram()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the flusher and the writer tasks, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._writers = nursery
            task_status.started()
            await self._flush_forever()

    # --- the flusher ----------------------------------------------------------------

    def schedule(self, outlet: Outlet) -> None:
        """Queue ``outlet``, which has frames pending and no writer, for the flusher."""
        started = self._burst_started
        if started is None:
            started = self._burst_started = self._clock()
        if self.meter.loaded and started - outlet.last_write < self.flush_delay:
            outlet.due = started + self.flush_delay
            self._later.append(outlet)
        else:
            self._now.append(outlet)
        task = self._flusher
        if task is not None:
            self._flusher = None
            reschedule(task)

    def fanned_out(self) -> None:
        """Called after each published event: write what the burst so far left pending
        if this event was wide, or once the burst has gone on for ``flush_delay``."""
        started = self._burst_started
        if started is None:
            return
        queued = len(self._now)
        if (
            queued - self._queued_before >= self.wide_event
            or self._clock() - started >= self.flush_delay
        ):
            self._flush_queued()
        else:
            self._queued_before = queued

    async def _flush_forever(self) -> None:
        while True:
            later = self._later
            if not self._now and (
                not later or later[0].due - self._clock() >= self.timer_resolution
            ):
                if later:
                    with trio.move_on_at(later[0].due):
                        await _park(self, "_flusher")
                else:
                    await _park(self, "_flusher")
            # A wait shorter than a timer can measure would last longer than asked:
            # what is due that soon is written now.
            self._flush_queued(self._clock() + self.timer_resolution)

    def _flush_queued(self, until: float | None = None) -> None:
        """Write every queued outlet, and those waiting out the flush delay that are due
        by ``until`` (default: now); count the burst's time as busy, and the wait of
        the oldest frame written in the ``latency`` histogram."""
        clock, now_queue, later = self._clock, self._now, self._later
        started = self._burst_started
        self._burst_started = None
        self._queued_before = 0
        now = clock()
        due = now if until is None else until
        # Outlets queued now were offered their first frame since the burst began;
        # those waiting out the delay, since their due time less the delay (the
        # first of them, in order of due, the earliest).
        oldest = started if now_queue else None
        while now_queue:
            self._flush(now_queue.popleft(), now)
        if later and later[0].due <= due:
            waited = later[0].due - self.flush_delay
            oldest = waited if oldest is None or waited < oldest else oldest
            while later and later[0].due <= due:
                self._flush(later.popleft(), now)
        ended = clock()
        self.meter.busy(now if started is None else started, ended)
        if oldest is not None:
            self.latency.observe(ended - oldest)

    def _flush(self, outlet: Outlet, now: float) -> None:
        if outlet.writer is not None or outlet.close_code is not None or outlet.ws.closed:
            return  # its writer task, or its owner closing it, has what is pending
        frames = outlet.take()
        if not frames:
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        if self.write_now(outlet, data, len(frames)):
            outlet.last_write = now
        else:
            self._start_writer(outlet, data, len(frames))

    def write_now(self, outlet: Outlet, data: bytes, frames: int) -> bool:
        """Write ``data`` (``frames`` of them) with one non-blocking write: False if
        nothing could be written. What the socket did not take goes on with a writer."""
        ws = outlet.ws
        if not ws.try_send_frames(data):
            return False
        self.messages_sent += frames
        self.writes += 1
        if ws.backlogged:
            self._start_writer(outlet, b"", 0)
        return True

    # --- writer tasks ---------------------------------------------------------------

    def _start_writer(self, outlet: Outlet, data: bytes, frames: int) -> None:
        if self._writers is None:
            raise RuntimeError("Delivery.run is not running")
        outlet.writer = trio.CancelScope()
        self.blocked_writes += 1
        self.writers += 1
        self._writers.start_soon(self._write, outlet, data, frames)

    async def _write(self, outlet: Outlet, data: bytes, frames: int) -> None:
        """Write ``data``, then whatever the outlet holds, until it is empty; then the
        flusher writes this connection again (a TLS connection's writer waits for the
        next frames instead). Each write must end within ``write_timeout``: past it
        the transport is closed. Ends the reader if the connection failed or closes."""
        ws, scope = outlet.ws, outlet.writer
        assert scope is not None
        ended = True
        try:
            with scope:
                while True:
                    scope.deadline = self._clock() + self.write_timeout
                    await ws.send_frames(data)
                    scope.deadline = math.inf
                    self.messages_sent += frames
                    self.writes += 1
                    if outlet.close_code is not None:
                        break  # the owner writes what a flushing close kept
                    pending = outlet.take()
                    if not pending:
                        if ws.direct:
                            ended = False
                            return
                        await outlet.wait_ready()  # TLS: the next frames, or the close
                        if outlet.close_code is not None:
                            break
                        pending = outlet.take()
                    data, frames = b"".join(pending), len(pending)
            if scope.cancelled_caught and self._clock() >= scope.deadline:
                self._timed_out(outlet)
        except ConnectionClosed:
            pass
        finally:
            self.writers -= 1
            outlet.writer = None
            outlet.parked = None
            if ended:
                outlet.read_scope.cancel()
            finisher = outlet.finisher
            if finisher is not None:
                outlet.finisher = None
                reschedule(finisher)

    # --- closing --------------------------------------------------------------------

    async def finish(self, outlet: Outlet) -> None:
        """End the connection once its reader has ended: let a writer finish the write
        in progress if the server decided the close (else stop it), write what a
        flushing close kept (e.g. the messages before a 1001) within the write
        deadline, then close with the outlet's code (or 1000), bounded by the
        connection's close timeout. Never raises for the peer's behaviour."""
        writer = outlet.writer
        if writer is not None:
            if outlet.close_code is None or outlet.parked is not None:
                writer.cancel()  # the peer is gone, or the writer is only waiting
            else:
                # A close the server decided: the write in progress ends first (within
                # its deadline), so that the close frame follows it instead of tearing it.
                await _park(outlet, "finisher")
        ws, code = outlet.ws, outlet.close_code
        frames = outlet.take() if code is not None else []
        if (frames or ws.backlogged) and not ws.closed:
            with trio.move_on_after(self.write_timeout) as deadline:
                try:
                    await ws.send_frames(b"".join(frames))
                    self.messages_sent += len(frames)
                    self.writes += 1
                except ConnectionClosed:
                    pass
            if deadline.cancelled_caught:
                self._timed_out(outlet)
        # Shielded and bounded by the close timeout: runs even when cancelled.
        if code is None:
            await ws.aclose()
        else:
            await ws.aclose(code, outlet.close_reason)

    def _timed_out(self, outlet: Outlet) -> None:
        self.write_timeouts += 1
        outlet.aborted = f"a write took longer than the write deadline ({self.write_timeout:g} s)"
