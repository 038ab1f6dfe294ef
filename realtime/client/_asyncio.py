"""The client under asyncio: the Trio client, run in a thread of its own, bridged.

Theory of operation
-------------------
The client is Trio code on trio-websocket, which is Trio-only; anyio would run our
half on asyncio but not trio-websocket, so an anyio client means another WebSocket
library and a second client to keep right. Instead :func:`open_asyncio_client`
starts a thread that runs ``trio.run``, opens the very same :func:`open_client` there,
and hands asyncio an :class:`AsyncioClient` whose methods are calls into that thread:

* asyncio → Trio: each call is scheduled with the Trio run's token
  (``TrioToken.run_sync_soon``, thread-safe and non-blocking), which starts a task in
  the thread's nursery; the caller awaits an asyncio future.
* Trio → asyncio: the task settles the future with ``loop.call_soon_threadsafe``.
* Cancellation: cancelling the awaiting asyncio task cancels the Trio task's scope
  (again through the token), except for ``receive``: one Trio ``receive`` at a time
  is in flight, and a caller cancelled while it waits leaves it running for the next
  ``receive`` to take over. So an item is never lost between the threads, nor
  overtaken by the next one.
* Nothing is buffered on the asyncio side but that one item: a ``receive`` asks the
  Trio client for one item, so the Trio client's bounded, conflating inbox stays the
  only buffer, and a slow asyncio consumer is reported with ``Lagged`` as under Trio.
* Closing: leaving the block tells the thread to leave ``open_client`` (closing with
  1000 within ``close_timeout``) and waits, without blocking the event loop, for the
  thread to end. The thread is a daemon: a process that exits without closing is
  not held up.

The cost: one OS thread per client, and a round trip between threads (a few tens of
microseconds) per call and per item received. Signals, the GIL and time are shared
as with any thread; the client's own work is small.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import trio

from protocol import Channel, Pong, Subscribed, Unsubscribed, Welcome

from ._client import Client, ClientStatistics, Item, open_client

T = TypeVar("T")


class _Call:
    """One call into the Trio thread: its cancel scope once the task runs."""

    __slots__ = ("cancelled", "scope")

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None
        self.cancelled = False

    def cancel(self) -> None:  # in the Trio thread
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


class AsyncioClient:
    """The :class:`realtime.client.Client` for asyncio code, from
    :func:`open_asyncio_client`: the same methods, awaited the same way, raising the
    same errors, yielding the same items.

    ``statistics()``, ``subscriptions`` and ``welcome`` read the Trio client's
    current values (snapshots). Use it from the event loop that opened it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._client: Client | None = None
        #: Set by the thread as soon as its Trio run starts.
        self._token: trio.lowlevel.TrioToken | None = None
        #: The thread's whole run: cancelled to end it (leaving open_client closes).
        self._scope: trio.CancelScope | None = None
        self._abandoned = False
        #: Set once connected: leaving ``open_client`` by its front door closes with
        #: 1000 while trio-websocket's reader still runs for the server's reply.
        self._stop: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        #: The Trio ``receive`` in flight, which a cancelled caller left to the next.
        self._receiving: asyncio.Future[Item] | None = None
        self._receive_lock = asyncio.Lock()

    # --- the Trio client's API --------------------------------------------------------

    @property
    def client(self) -> Client:
        """The Trio client in its thread: read its attributes, never await it here."""
        assert self._client is not None
        return self._client

    @property
    def client_id(self) -> str:
        return self.client.client_id

    @property
    def url(self) -> str:
        return self.client.url

    @property
    def welcome(self) -> Welcome | None:
        """The ``welcome`` of the current (or last) connection."""
        return self.client.welcome

    @property
    def subscriptions(self) -> dict[Channel, frozenset[str] | None]:
        """As :attr:`Client.subscriptions`."""
        return self.client.subscriptions

    def statistics(self) -> ClientStatistics:
        return self.client.statistics()

    async def subscribe(
        self, channel: Channel | str, symbols: Sequence[str] | None = None
    ) -> Subscribed:
        """As :meth:`Client.subscribe`."""
        return await self._call(self.client.subscribe, channel, symbols)

    async def unsubscribe(
        self, channel: Channel | str, symbols: Sequence[str] | None = None
    ) -> Unsubscribed:
        """As :meth:`Client.unsubscribe`."""
        return await self._call(self.client.unsubscribe, channel, symbols)

    async def ping(self) -> Pong:
        """As :meth:`Client.ping`."""
        return await self._call(self.client.ping)

    async def receive(self) -> Item:
        """As :meth:`Client.receive`: the next item; blocks until there is one.
        Receives from several tasks take turns (each item goes to one of them)."""
        async with self._receive_lock:
            if self._receiving is None:
                self._receiving, _ = self._start(self.client.receive)
            # Shielded: a cancelled caller leaves the call, done or not (cancelled after
            # it settled, before this task resumed), to the next receive.
            item = await asyncio.shield(self._receiving)
            self._receiving = None
            return item

    def __aiter__(self) -> AsyncIterator[Item]:
        return self

    async def __anext__(self) -> Item:
        return await self.receive()

    async def aclose(self) -> None:
        """As :meth:`Client.aclose`."""
        await self._call(self.client.aclose)

    # --- the bridge ---------------------------------------------------------------------

    def _end_thread(self) -> None:
        """Make the thread leave ``open_client`` and end, whether it got there or is
        still connecting. Never blocks. The flag is written before the token is read,
        and the thread writes the token before it reads the flag: one of the two sees
        the other's write, so the thread always ends."""
        self._abandoned = True
        token = self._token
        if token is not None:
            with suppress(trio.RunFinishedError):  # over already
                token.run_sync_soon(self._cancel_run)

    def _cancel_run(self) -> None:  # in the Trio thread
        if self._stop is not None:
            self._stop.set()
        elif self._scope is not None:  # still connecting: stop trying
            self._scope.cancel()

    def _start(
        self, fn: Callable[..., Awaitable[T]], *args: Any
    ) -> tuple[asyncio.Future[T], _Call]:
        """Start ``await fn(*args)`` in the Trio thread; its future, settled in this
        loop, and the call, to cancel it."""
        assert self._token is not None
        assert self._nursery is not None
        future: asyncio.Future[T] = self._loop.create_future()
        call = _Call()
        nursery = self._nursery

        def start() -> None:  # in the Trio thread
            nursery.start_soon(self._run, call, future, fn, args)

        try:
            self._token.run_sync_soon(start)
        except trio.RunFinishedError:
            raise RuntimeError("the client's thread has ended") from None
        return future, call

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` in the Trio thread; cancelled with its caller."""
        future, call = self._start(fn, *args)
        try:
            return await future
        except asyncio.CancelledError:
            assert self._token is not None
            with suppress(trio.RunFinishedError):  # nothing left to cancel
                self._token.run_sync_soon(call.cancel)
            raise

    async def _run(
        self,
        call: _Call,
        future: asyncio.Future[T],
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
    ) -> None:
        """In the Trio thread: run one call and settle its future in the loop's."""
        with trio.CancelScope() as scope:
            call.scope = scope
            if call.cancelled:
                scope.cancel()
            try:
                result = await fn(*args)
            except Exception as exc:
                self._settle(future, None, exc)
            else:
                self._settle(future, result, None)

    def _settle(
        self,
        future: asyncio.Future[Any],
        result: object,
        error: BaseException | None,
    ) -> None:
        def settle() -> None:  # in the event loop's thread
            if future.cancelled():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        with suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(settle)


@asynccontextmanager
async def open_asyncio_client(
    url: str, client_id: str, **options: Any
) -> AsyncIterator[AsyncioClient]:
    """:func:`realtime.client.open_client` for asyncio: the same arguments, the same
    behaviour (retries, reconnects, tokens; ``get_token`` may be an asyncio coroutine
    function: it is awaited in the event loop), yielding an :class:`AsyncioClient`.

    Blocks until the first ``welcome`` (raising what ``open_client`` raises); leaving
    the block closes the connection with 1000 and ends the client's thread.
    """
    loop = asyncio.get_running_loop()
    get_token = options.pop("get_token", None)
    if get_token is not None:
        options["get_token"] = _in_loop(get_token, loop)
    client = AsyncioClient(loop)
    started: asyncio.Future[None] = loop.create_future()
    ended: asyncio.Future[None] = loop.create_future()

    def report(future: asyncio.Future[None], error: BaseException | None) -> None:
        def settle() -> None:  # in the event loop's thread
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        with suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle)

    async def run() -> None:  # the thread's trio.run
        client._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            client._scope = scope
            if client._abandoned:
                scope.cancel()
            try:
                async with (
                    open_client(url, client_id, **options) as trio_client,
                    trio.open_nursery() as nursery,
                ):
                    client._client = trio_client
                    client._nursery = nursery
                    client._stop = stop = trio.Event()
                    if client._abandoned:  # cancelled while connecting, just too late
                        stop.set()
                    report(started, None)
                    await stop.wait()  # until _end_thread
                    nursery.cancel_scope.cancel()
            except Exception as exc:
                # Raised by open_asyncio_client; once started, ends are the client's.
                report(started, exc)

    def thread() -> None:
        try:
            trio.run(run)
        finally:
            report(ended, None)

    worker = threading.Thread(target=thread, name=f"realtime-client {client_id}", daemon=True)
    worker.start()
    try:
        await started
    except BaseException:  # cancelled while connecting: the thread stops trying
        client._end_thread()
        raise
    try:
        yield client
    finally:
        client._end_thread()
        # Bounded by the Trio side's close_timeout; shielded so that a cancelled caller
        # still leaves the thread to finish its closing handshake.
        await asyncio.shield(ended)


def _in_loop(
    get_token: Callable[[], Awaitable[str]], loop: asyncio.AbstractEventLoop
) -> Callable[[], Awaitable[str]]:
    """``get_token`` as the Trio thread calls it: awaited in the event loop."""

    async def from_loop() -> str:
        future = asyncio.run_coroutine_threadsafe(_awaited(get_token), loop)
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()
        future.add_done_callback(lambda _: token.run_sync_soon(done.set))
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()

    return from_loop


async def _awaited(get_token: Callable[[], Awaitable[str]]) -> str:
    return await get_token()
