"""The Python client with tokens, against a gateway with ``--jwt-secret``.

Two kinds of gateway: ``realtime serve`` as a process (the flag, the real thing, real
time: tokens that live a few seconds and waits for conditions, never for durations),
and the gateway in this process under Trio's MockClock, whose jumps carry the client
and the gateway together past a refresh or an ``exp`` that lies minutes ahead. In
both, the client and the gateway read the real ``time.time()`` and turn the time
left until ``exp`` into a Trio deadline, so a jump of the Trio clock moves both past
it; tokens minted after a jump count the jump in (``Guard.now``), as a token issuer
would have when that much time had passed.
"""

from __future__ import annotations

import base64
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from protocol import Channel, ErrorCode, ErrorReply, PriceUpdate
from realtime import Config, serve
from realtime._auth import mint_token
from realtime.client import (
    AuthenticationError,
    Backoff,
    Reconnected,
    RequestError,
    open_client,
)
from realtime.client._tokens import REFRESH_MARGIN, TokenTimes, token_times

from ..realtime.helpers import drain_log, start_process
from .test_client import next_of

SECRET = "client-test-secret-0123456789abcdef"
OTHER_SECRET = "not-the-gateways-secret-0123456789abcdef"
TIMEOUT = 30.0  # a hang guard for a process start on a busy machine; nothing is timed
FAST = Backoff(initial=0.05, max_delay=0.2, max_attempts=5, reset_after=5.0)


def token(
    sub: str = "alice",
    ttl: float = 3600,
    secret: str = SECRET,
    now: float | None = None,
    **grants: Any,
) -> str:
    return mint_token(secret, sub=sub, now=time.time() if now is None else now, ttl=ttl, **grants)


class Provider:
    """A ``get_token`` that hands out ``tokens()`` in turn, and counts the calls."""

    def __init__(self, *tokens: Callable[[], str]) -> None:
        self._tokens = list(tokens)
        self.calls = 0
        self._called = trio.Event()

    async def __call__(self) -> str:
        make = self._tokens[min(self.calls, len(self._tokens) - 1)]
        self.calls += 1
        self._called.set()
        self._called = trio.Event()
        return make()

    async def wait_calls(self, n: int) -> None:
        while self.calls < n:
            await self._called.wait()


@asynccontextmanager
async def gateway_process(*args: str) -> AsyncIterator[str]:
    """``realtime serve`` with the secret (from the environment, as the docs advise)
    and without feeds but prices; yields its URL."""
    process, port, log = await start_process(
        "--tick-rate", "20", *args, env={"REALTIME_JWT_SECRET": SECRET}
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain_log, process, log)
        try:
            yield f"ws://127.0.0.1:{port}"
        finally:
            process.send_signal(signal.SIGTERM)
            await process.wait()


# --- the refresh rule -----------------------------------------------------------------------


def unsigned(payload: str) -> str:
    """A JWT-shaped string with this JSON payload (the client never checks signatures)."""
    return "e30." + base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=") + ".sig"


@pytest.mark.parametrize(
    ("payload", "times"),
    [
        ('{"exp": 4600, "iat": 1000}', TokenTimes(4600, 4570)),  # an hour: 30 s before
        ('{"exp": 1300, "iat": 1000}', TokenTimes(1300, 1270)),  # 5 min: 30 s = 10 %
        ('{"exp": 1060, "iat": 1000}', TokenTimes(1060, 1054)),  # 1 min: 10 %, 6 s
        ('{"exp": 1060}', TokenTimes(1060, 1054)),  # no iat: the lifetime counts from now
        ('{"exp": 1060, "iat": 2000}', TokenTimes(1060, 1054)),  # iat ahead: from now
        ('{"exp": 900}', TokenTimes(900, 900)),  # expired: at once
        ('{"exp": 1100.0, "iat": true}', TokenTimes(1100, 1090)),  # a boolean is no iat
        ('{"sub": "alice"}', None),
        ('{"exp": "1060"}', None),
        ('{"exp": true}', None),
        ('{"exp": NaN}', None),
        ("[1060]", None),
        ("not json", None),
    ],
)
def test_refresh_is_due_when_30_s_or_a_tenth_of_the_lifetime_is_left(
    payload: str, times: TokenTimes | None
) -> None:
    assert token_times(unsigned(payload), now=1000) == times


@pytest.mark.parametrize("garbage", ["", "a.b", "a.!!!.c", "a.b.c.d", "x" * 100])
def test_a_token_that_is_not_a_jwt_is_never_refreshed_ahead(garbage: str) -> None:
    assert token_times(garbage, now=1000) is None


def test_after_a_refresh_without_a_newer_token_ask_again_half_way() -> None:
    times = TokenTimes(exp=1100, refresh_at=1070)
    assert times.retry(now=1070) == TokenTimes(1100, 1085)
    assert times.retry(now=1099) == TokenTimes(1100, 1100)  # at least 1 s later
    assert times.retry(now=1100) is None  # expired: the gateway closes with 4401


# --- against the gateway process ----------------------------------------------------------


async def test_a_token_authenticates_and_its_grants_hold() -> None:
    with trio.fail_after(TIMEOUT):
        async with gateway_process() as url:
            granted = token(channels=[Channel.PRICES, Channel.ALERTS], symbols=["AAPL", "MSFT"])
            async with open_client(url, "granted", token=granted) as client:
                assert client.welcome is not None
                assert client.welcome.channels == (Channel.PRICES, Channel.ALERTS)
                with pytest.raises(RequestError) as refused:
                    await client.subscribe(Channel.SIGNALS)
                assert refused.value.code is ErrorCode.FORBIDDEN
                with pytest.raises(RequestError) as refused:
                    await client.subscribe(Channel.PRICES, ["TSLA"])
                assert refused.value.code is ErrorCode.FORBIDDEN
                await client.subscribe(Channel.PRICES, ["AAPL"])
                update = await next_of(client, PriceUpdate)
                assert update.symbol == "AAPL"


async def test_without_a_token_the_client_says_one_is_needed() -> None:
    with trio.fail_after(TIMEOUT):
        async with gateway_process("--auth-timeout", "0.5") as url:
            with pytest.raises(AuthenticationError) as failed:
                async with open_client(url, "anonymous"):
                    pass  # pragma: no cover
    message = str(failed.value)
    assert "requires a token" in message
    assert "no token" in message  # the gateway's own reason
    assert "token= or get_token=" in message


async def test_get_token_refreshes_ahead_of_exp_on_the_open_connection() -> None:
    """Tokens of 8 s: refreshed 0.8 s before exp (10 % of the lifetime), so the
    connection outlives the first token; the gateway would close it at exp."""
    provider = Provider(lambda: token(ttl=8))
    with trio.fail_after(TIMEOUT):
        async with gateway_process() as url, open_client(url, "fresh", get_token=provider) as c:
            assert provider.calls == 1
            assert c._token is not None
            first = token_times(c._token, time.time())
            assert first is not None
            await provider.wait_calls(2)
            assert time.time() < first.exp  # ahead of exp
            while time.time() < first.exp + 0.5:  # past the first token's exp
                await trio.sleep(0.1)
            await c.ping()
            assert c.statistics().reconnects == 0


async def test_a_refused_token_is_answered_with_one_new_token() -> None:
    forged = token(secret=OTHER_SECRET)
    provider = Provider(token)
    with trio.fail_after(TIMEOUT):
        async with (
            gateway_process() as url,
            open_client(url, "retried", token=forged, get_token=provider) as client,
        ):
            await client.ping()
            assert provider.calls == 1
            assert client.statistics().reconnects == 0


async def test_a_provider_whose_new_token_is_refused_too_is_fatal() -> None:
    provider = Provider(lambda: token(secret=OTHER_SECRET))
    with trio.fail_after(TIMEOUT):
        async with gateway_process() as url:
            with pytest.raises(AuthenticationError) as failed:
                async with open_client(url, "forger", get_token=provider):
                    pass  # pragma: no cover
    assert provider.calls == 2  # the first token, and one new one
    assert "refused the new token from get_token too" in str(failed.value)
    assert "bad signature" in str(failed.value)


async def test_a_fixed_token_that_expires_ends_the_client() -> None:
    async def listen(url: str) -> None:
        async with open_client(url, "fixed", token=token(ttl=4)) as client:
            await client.subscribe(Channel.PRICES, ["AAPL"])
            async for _ in client:
                pass

    with trio.fail_after(TIMEOUT):
        async with gateway_process() as url:
            with pytest.raises(AuthenticationError) as failed:
                await listen(url)
    assert "expired" in str(failed.value)
    assert "pass get_token= to fetch new ones" in str(failed.value)


async def test_a_provider_that_raises_fails_the_first_connection_at_once() -> None:
    async def broken() -> str:
        raise OSError("identity provider unreachable")

    with trio.fail_after(TIMEOUT):
        async with gateway_process() as url:
            with pytest.raises(AuthenticationError) as failed:
                async with open_client(url, "broken", get_token=broken):
                    pass  # pragma: no cover
    assert "get_token failed" in str(failed.value)
    assert "identity provider unreachable" in str(failed.value)
    assert isinstance(failed.value.__cause__, OSError)


# --- under MockClock, the gateway in this process ------------------------------------------


class Guard:
    """A hang guard on Trio's clock that the test's jumps do not trip."""

    def __init__(self, clock: trio.testing.MockClock, scope: trio.CancelScope) -> None:
        self.clock = clock
        self.scope = scope
        self.jumped = 0.0

    def now(self) -> float:
        """Unix time as it would be had the jumps taken real time."""
        return time.time() + self.jumped

    async def jump(self, seconds: float) -> None:
        """Let everything settle, move the clock, and let what woke up run."""
        await trio.testing.wait_all_tasks_blocked()
        self.scope.deadline += seconds
        self.jumped += seconds
        self.clock.jump(seconds)
        await trio.testing.wait_all_tasks_blocked()


@asynccontextmanager
async def mocked(mock_clock: trio.testing.MockClock) -> AsyncIterator[tuple[Guard, str]]:
    """The gateway (no feeds: nothing ticks through a jump) with the secret; the clock
    runs at real speed between jumps, so sockets and the guard behave."""
    mock_clock.rate = 1.0
    config = Config(
        port=0, jwt_secret=SECRET, feeds=False, demo_events=False, heartbeat_interval=3600.0
    )
    with trio.fail_after(TIMEOUT) as scope:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve, config)
            try:
                yield Guard(mock_clock, scope), f"ws://127.0.0.1:{server.port}"
            finally:
                server.shutdown()


async def test_refresh_comes_at_exp_less_the_margin(mock_clock: trio.testing.MockClock) -> None:
    async with mocked(mock_clock) as (guard, url):
        provider = Provider(lambda: token(ttl=600, now=guard.now()))
        async with open_client(url, "mocked", get_token=provider) as client:
            assert client._token is not None
            times = token_times(client._token, time.time())
            assert times is not None
            assert times.refresh_at == times.exp - REFRESH_MARGIN  # 30 s < 10 % of 600 s
            await guard.jump(times.refresh_at - time.time() - 5)
            assert provider.calls == 1  # not yet
            await guard.jump(10)
            await provider.wait_calls(2)
            await guard.jump(60)  # past the first token's exp: the refresh holds
            await client.ping()
            assert client.statistics().reconnects == 0
            assert provider.calls == 2


@pytest.mark.parametrize("recovers", [True, False])
async def test_a_refused_refresh_then_4401_then_one_new_token(
    mock_clock: trio.testing.MockClock, recovers: bool
) -> None:
    """The refresh is refused (another user's token): the consumer is told, the old
    token holds until its exp, the gateway closes with 4401, and the client asks for
    one more token: if that one is refused too, the client ends."""
    async with mocked(mock_clock) as (guard, url):
        secret = SECRET if recovers else OTHER_SECRET
        provider = Provider(
            lambda: token(ttl=600, now=guard.now()),
            lambda: token(sub="mallory", now=guard.now()),
            lambda: token(secret=secret, now=guard.now()),
        )
        async with open_client(url, "refused", get_token=provider, backoff=FAST) as client:
            await client.subscribe(Channel.NOTIFICATIONS)
            await guard.jump(580)
            refused = await next_of(client, ErrorReply)
            assert refused.code == ErrorCode.UNAUTHORIZED
            assert "another user" in refused.error
            await guard.jump(30)  # past exp: 4401
            if recovers:
                reconnected = await next_of(client, Reconnected)
                assert reconnected.welcome is not None
                assert client.subscriptions == {Channel.NOTIFICATIONS: None}
                await client.ping()
            else:
                with pytest.raises(AuthenticationError) as failed:
                    async for _ in client:
                        pass
                assert "bad signature" in str(failed.value)
            assert provider.calls == 3
