"""The subscribe client on both event loops: ``open_client`` under Trio,
``open_asyncio_client`` under asyncio, the same scenarios against a real gateway.

The gateway runs in a thread of its own (its own ``trio.run``): under asyncio it
cannot share the test's loop. Each scenario is written once with anyio's timeouts,
and run by ``anyio.run`` on the loop under test.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
import trustme

from protocol import (
    AlertTriggered,
    Channel,
    ErrorCode,
    Notification,
    Pong,
    PriceUpdate,
    Severity,
)
from realtime import Config, Server, serve
from realtime._auth import mint_token
from realtime.client import (
    Backoff,
    ConnectError,
    Item,
    RequestError,
    TLSError,
    open_asyncio_client,
    open_client,
)
from realtime.publish import AsyncPublishClient, event

TIMEOUT = 10.0
KEY = "test-key-0123456789abcdef"
LOOPS = ["trio", "asyncio"]
FAST = Backoff(initial=0.05, max_delay=0.2, max_attempts=40, reset_after=5.0)


class Gateway:
    """A gateway running in a thread: its port, and a way to stop it."""

    def __init__(self, server: Server, token: trio.lowlevel.TrioToken) -> None:
        self.server = server
        self.token = token

    @property
    def port(self) -> int:
        return self.server.port


@contextmanager
def gateway_thread(**settings: Any) -> Iterator[Gateway]:
    """The real gateway on 127.0.0.1 in a thread, for the block; drained at its end."""
    settings.setdefault("port", 0)
    settings.setdefault("seed", 7)
    settings.setdefault("tick_rate", 20.0)
    settings.setdefault("demo_events", False)
    settings.setdefault("shutdown_grace", 3.0)
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        try:
            async with trio.open_nursery() as nursery:
                server: Server = await nursery.start(serve, Config(**settings))
                box["gateway"] = Gateway(server, trio.lowlevel.current_trio_token())
                ready.set()
        except BaseException as exc:
            box["error"] = exc
            raise
        finally:
            ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(TIMEOUT)
    if "error" in box:
        raise box["error"]
    gateway: Gateway = box["gateway"]
    try:
        yield gateway
    finally:
        trio.from_thread.run_sync(gateway.server.shutdown, trio_token=gateway.token)
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def opener(loop: str) -> Callable[..., AbstractAsyncContextManager[Any]]:
    return open_client if loop == "trio" else open_asyncio_client


def run_on(loop: str, scenario: Callable[[], Awaitable[None]]) -> None:
    anyio.run(scenario, backend=loop)


async def next_of(client: AsyncIterator[Item], kind: type[Any]) -> Any:
    async for item in client:
        if isinstance(item, kind):
            return item
    raise AssertionError(f"iteration ended before any {kind}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.parametrize("loop", LOOPS)
def test_subscribe_receive_ping_and_close(loop: str) -> None:
    alert = {
        "id": "a1",
        "symbol": "AAPL",
        "type": "custom",
        "message": "Risk limit",
        "severity": "warning",
    }

    with gateway_thread(api_key=KEY) as gateway:

        async def scenario() -> None:
            url = f"ws://127.0.0.1:{gateway.port}"
            with anyio.fail_after(TIMEOUT):
                async with opener(loop)(url, f"agent-{loop}") as client:
                    assert client.welcome is not None
                    assert "AAPL" in client.welcome.symbols
                    ack = await client.subscribe(Channel.PRICES, ["AAPL"])
                    assert ack.symbols == ("AAPL",)
                    await client.subscribe(Channel.ALERTS)
                    update: PriceUpdate = await next_of(client, PriceUpdate)
                    assert update.symbol == "AAPL"
                    # Published over HTTP on the same loop: realtime.publish runs on both.
                    async with AsyncPublishClient(url, KEY) as publisher:
                        await publisher.publish(Channel.ALERTS, alert)
                    fired: AlertTriggered = await next_of(client, AlertTriggered)
                    assert fired.data.severity is Severity.WARNING
                    assert isinstance(await client.ping(), Pong)
                    with pytest.raises(RequestError) as refused:
                        await client.subscribe(Channel.PRICES, ["NOPE"])
                    assert refused.value.code is ErrorCode.UNKNOWN_SYMBOL
                    await client.unsubscribe(Channel.PRICES)
                    assert client.subscriptions == {Channel.ALERTS: None}
                    assert client.statistics().connected
                # Closed with 1000: the gateway forgets the client.
                while gateway.server.hub.connection_count:
                    await anyio.sleep(0.01)

        run_on(loop, scenario)


class _Retrying(logging.Handler):
    """Sets ``event`` when the client logs that it will retry its first connection."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if "cannot connect yet" in record.getMessage():
            self.event.set()


@pytest.mark.parametrize("loop", LOOPS)
def test_an_agent_that_starts_before_the_gateway_waits_for_it(loop: str) -> None:
    port = free_port()
    retrying = threading.Event()
    handler = _Retrying(retrying)
    logging.getLogger("realtime.client").addHandler(handler)
    up = threading.Event()
    done = threading.Event()

    def gateway_once_the_client_retries() -> None:
        if retrying.wait(TIMEOUT):
            with gateway_thread(port=port):
                up.set()
                done.wait(TIMEOUT)

    starter = threading.Thread(target=gateway_once_the_client_retries, daemon=True)
    starter.start()

    async def scenario() -> None:
        url = f"ws://127.0.0.1:{port}"
        with anyio.fail_after(TIMEOUT):
            async with opener(loop)(url, "early-bird", backoff=FAST) as client:
                assert isinstance(await client.ping(), Pong)

    try:
        run_on(loop, scenario)
        assert retrying.is_set()
        assert up.is_set()
    finally:
        done.set()
        starter.join(TIMEOUT)
        logging.getLogger("realtime.client").removeHandler(handler)


@pytest.mark.parametrize("loop", LOOPS)
def test_the_first_connect_gives_up_with_its_own_error(loop: str) -> None:
    port = free_port()

    async def scenario() -> None:
        url = f"ws://127.0.0.1:{port}"
        few = Backoff(initial=0.01, max_delay=0.02, max_attempts=2)
        with anyio.fail_after(TIMEOUT), pytest.raises(ConnectError) as refused:
            async with opener(loop)(url, "nobody-home", backoff=few):
                pass  # pragma: no cover
        assert "(gave up after 3 attempts)" in str(refused.value)

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_untrusted_certificate_is_a_tls_error_not_a_timeout(loop: str, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    with gateway_thread(certfile=certfile, keyfile=keyfile) as gateway:

        async def scenario() -> None:
            url = f"wss://127.0.0.1:{gateway.port}"
            # Well under the 10 s that a timeout would take: not retried either.
            with anyio.fail_after(TIMEOUT / 2), pytest.raises(TLSError) as refused:
                async with opener(loop)(url, "wary", backoff=FAST):
                    pass  # pragma: no cover
            message = str(refused.value)
            assert message.startswith(f"TLS handshake with {url} failed: the gateway's certificate")
            assert (
                "certificate verify failed" in message
                or "self-signed" in message
                or ("unable to get local issuer certificate" in message)
            )
            import ssl

            trusted = ssl.create_default_context()
            ca.configure_trust(trusted)
            with anyio.fail_after(TIMEOUT):
                async with opener(loop)(url, "trusting", ssl_context=trusted) as client:
                    assert isinstance(await client.ping(), Pong)

        run_on(loop, scenario)


def test_cancelled_receives_lose_no_item() -> None:
    """Under asyncio: receives cancelled while they wait, over and over, while events
    arrive; what one had taken when cancelled is the next one's, so every seq comes."""
    count = 200
    with gateway_thread(api_key=KEY) as gateway:

        async def scenario() -> None:
            url = f"ws://127.0.0.1:{gateway.port}"
            notes = [
                event(Channel.NOTIFICATIONS, {"id": f"n{n}", "message": "x", "type": "info"})
                for n in range(count)
            ]
            async with asyncio.timeout(TIMEOUT), open_asyncio_client(url, "impatient") as client:
                await client.subscribe(Channel.NOTIFICATIONS)
                async with AsyncPublishClient(url, KEY) as publisher:
                    await publisher.publish_batch(notes)
                seqs: list[int] = []
                cancelled = 0
                # Timeouts around a round trip between the threads: cancelled at every
                # stage of a call, yet often enough in time to make progress.
                waits = itertools.cycle([0.00005, 0.0002, 0.0005, 0.001, 0.005, 0.05])
                while len(seqs) < count:
                    try:
                        async with asyncio.timeout(next(waits)):
                            item = await client.receive()
                    except TimeoutError:
                        cancelled += 1
                        continue
                    assert isinstance(item, Notification)
                    seqs.append(item.seq)
            # From where the subscription started (the feeds announced themselves first).
            assert seqs == list(range(seqs[0], seqs[0] + count))
            assert cancelled  # the test did cancel some

        asyncio.run(scenario())


SECRET = "loops-test-secret-0123456789abcdef"


def test_get_token_may_be_an_asyncio_coroutine_function() -> None:
    """Awaited in the event loop, where the application's identity client lives."""
    with gateway_thread(jwt_secret=SECRET) as gateway:

        async def scenario() -> None:
            loop = asyncio.get_running_loop()
            asked: list[asyncio.AbstractEventLoop] = []

            async def get_token() -> str:
                asked.append(asyncio.get_running_loop())
                await asyncio.sleep(0)
                return mint_token(SECRET, sub="alice", now=time.time(), ttl=60)

            url = f"ws://127.0.0.1:{gateway.port}"
            async with asyncio.timeout(TIMEOUT):
                async with open_asyncio_client(url, "alice-1", get_token=get_token) as client:
                    assert isinstance(await client.ping(), Pong)
            assert asked == [loop]

        asyncio.run(scenario())


def test_open_client_under_asyncio_says_what_to_use() -> None:
    async def scenario() -> None:
        with pytest.raises(RuntimeError, match=r"under asyncio use .*open_asyncio_client"):
            async with open_client("ws://127.0.0.1:1", "x"):
                pass  # pragma: no cover

    asyncio.run(scenario())
