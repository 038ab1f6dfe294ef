"""realtime.publish: the publish API's client, blocking and async, against the real
gateway and, for what a gateway will not easily do on cue (503, 429, dropped
connections), against httpx's MockTransport."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import trio
import trustme

from protocol import AlertData, Channel, PriceData, Severity
from realtime.publish import (
    AsyncPublishClient,
    PublishClient,
    PublishError,
    Retry,
    event,
    price,
)

from ..realtime.helpers import TIMEOUT, connect, start_gateway

KEY = "test-key-0123456789abcdef"
PRICE = PriceData(price=142.5, change=1.25, change_pct=0.88, volume=1200, bid=142.49, ask=142.51)
ALERT = AlertData(
    id="ext-1", symbol="ORCL", type="price_above", message="ORCL crossed", severity=Severity.INFO
)
#: Retries without waiting: the schedule is tested on its own.
QUICK = Retry(attempts=3, initial=0.001, max_delay=0.01)


def url_of(port: int) -> str:
    return f"http://127.0.0.1:{port}"


# --- against the gateway ------------------------------------------------------------


async def test_async_client_publishes_events_prices_and_batches(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False, universe="ORCL,SAP")
    with trio.fail_after(TIMEOUT):
        async with (
            connect(server) as subscriber,
            AsyncPublishClient(url_of(server.port), KEY) as gateway,
        ):
            await subscriber.request({"type": "subscribe", "channel": "prices"}, "subscribed")
            await subscriber.request({"type": "subscribe", "channel": "alerts"}, "subscribed")
            assert await gateway.publish_price("ORCL", PRICE) == {
                "status": "accepted",
                "channel": "prices",
            }
            update = await subscriber.next("price_update")
            assert (update["symbol"], update["data"]["price"]) == ("ORCL", 142.5)
            assert (await gateway.publish(Channel.ALERTS, ALERT))["channel"] == "alerts"
            assert (await subscriber.next("alert_triggered"))["data"]["severity"] == "info"
            batch = [price("SAP", PRICE), price("ORCL", {**_dict(PRICE), "price": 143.0})]
            assert await gateway.publish_batch(batch) == {"status": "accepted", "events": 2}
    assert server.publish_api.accepted == 4


def _dict(data: PriceData) -> dict[str, Any]:
    return {
        "price": data.price,
        "change": data.change,
        "change_pct": data.change_pct,
        "volume": data.volume,
        "bid": data.bid,
        "ask": data.ask,
    }


async def test_refusals_carry_status_code_and_the_gateways_sentence(
    nursery: trio.Nursery,
) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False, universe="ORCL")
    with trio.fail_after(TIMEOUT):
        async with AsyncPublishClient(url_of(server.port), KEY, retry=QUICK) as gateway:
            with pytest.raises(PublishError) as refused:
                await gateway.publish_price("MSFT", PRICE)
            error = refused.value
            assert (error.status, error.code, error.attempts) == (400, "unknown_symbol", 1)
            assert error.message.startswith("Unknown symbol: MSFT is not in the price universe")
            assert str(error).startswith("HTTP 400 unknown_symbol: Unknown symbol: MSFT")
            assert error.published is False
            bad = {**_dict(PRICE), "bid": 200.0}
            with pytest.raises(PublishError, match="must not be above 'ask'") as refused:
                await gateway.publish_price("ORCL", bad)
        async with AsyncPublishClient(url_of(server.port), "wrong-key-0123456789") as gateway:
            with pytest.raises(PublishError) as refused:
                await gateway.publish(Channel.ALERTS, ALERT)
            assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    assert server.hub.published == 0


async def test_the_blocking_client_from_a_thread(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, api_key=KEY, feeds=False, universe="ORCL")

    def publish() -> Any:
        with PublishClient(f"ws://127.0.0.1:{server.port}/ws", KEY) as gateway:
            gateway.publish_price("ORCL", PRICE)
            return gateway.publish_batch([event("alerts", ALERT), price("ORCL", PRICE)])

    with trio.fail_after(TIMEOUT):
        assert await trio.to_thread.run_sync(publish) == {"status": "accepted", "events": 2}
    assert server.publish_api.accepted == 3


def test_the_async_client_under_asyncio() -> None:
    """httpx runs on asyncio as on Trio: one client for both."""
    # The gateway answers from a MockTransport here: a Trio gateway cannot run in
    # this thread's asyncio loop (tests/client/test_loops.py runs one in a thread).
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"status": "accepted", "channel": "alerts"})

    async def main() -> Any:
        transport = httpx.MockTransport(answer)
        async with AsyncPublishClient("http://gw:8000", KEY, transport=transport) as gateway:
            return await gateway.publish(Channel.ALERTS, ALERT, to="client-1", user="alice")

    assert asyncio.run(main()) == {"status": "accepted", "channel": "alerts"}
    (request,) = seen
    assert request.url == "http://gw:8000/api/publish"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.read() == (
        b'{"channel":"alerts","data":{"id":"ext-1","symbol":"ORCL","type":"price_above",'
        b'"message":"ORCL crossed","severity":"info"},"to":"client-1","user":"alice"}'
    )


# --- retries ------------------------------------------------------------------------


def _scripted(*answers: httpx.Response | Exception) -> tuple[httpx.MockTransport, list[int]]:
    """A transport giving ``answers`` in turn (an exception is raised), and the list
    of request numbers it saw."""
    calls: list[int] = []
    remaining = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(len(calls) + 1)
        answer = remaining.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler), calls


def accepted() -> httpx.Response:
    return httpx.Response(202, json={"status": "accepted", "channel": "alerts"})


def _client(transport: httpx.MockTransport, sleeps: list[float], **kwargs: Any) -> PublishClient:
    kwargs.setdefault("retry", Retry(attempts=4))
    return PublishClient(
        "http://gw", KEY, transport=transport, sleep=sleeps.append, rand=lambda: 1.0, **kwargs
    )


def test_connection_errors_503_and_429_are_retried_with_retry_after() -> None:
    transport, calls = _scripted(
        httpx.ConnectError("Connection refused"),
        httpx.Response(503, headers={"Retry-After": "2"}, json={"error": "draining"}),
        httpx.Response(429, headers={"Retry-After": "0"}, json={"error": "slow down"}),
        accepted(),
    )
    sleeps: list[float] = []
    with _client(transport, sleeps) as gateway:
        assert gateway.publish("alerts", ALERT)["status"] == "accepted"
    assert calls == [1, 2, 3, 4]
    # The backoff's ceiling (rand 1.0) after the refused connection, then Retry-After.
    assert sleeps == [0.5, 2.0, 0.0]


def test_a_4xx_is_never_retried() -> None:
    for status, code in ((400, "invalid_message"), (401, "unauthorized"), (413, "too_large")):
        transport, calls = _scripted(
            httpx.Response(status, json={"error": "no", "code": code}), accepted()
        )
        sleeps: list[float] = []
        with _client(transport, sleeps) as gateway, pytest.raises(PublishError) as refused:
            gateway.publish("alerts", ALERT)
        assert (refused.value.status, refused.value.code, calls, sleeps) == (
            status,
            code,
            [1],
            [],
        )


def test_what_may_have_published_is_not_sent_again() -> None:
    for failure in (
        httpx.ReadError("reset"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.Response(500, text="<html>Internal Server Error</html>"),
        httpx.Response(504, text="Gateway Timeout"),
    ):
        transport, calls = _scripted(failure, accepted())
        with _client(transport, []) as gateway, pytest.raises(PublishError) as refused:
            gateway.publish("alerts", ALERT)
        assert calls == [1], failure
        assert refused.value.published is None
    assert refused.value.message == "Gateway Timeout"  # not JSON: the start of the text


def test_an_unconfirmed_publish_is_not_sent_again() -> None:
    """The gateway's bus failed while taking it (a node losing Redis): it may be out."""
    body = {"error": "Redis did not confirm the event ...", "code": "unconfirmed"}
    transport, calls = _scripted(httpx.Response(503, json=body), accepted())
    with _client(transport, []) as gateway, pytest.raises(PublishError) as refused:
        gateway.publish("alerts", ALERT)
    assert calls == [1]
    error = refused.value
    assert (error.status, error.code, error.published) == (503, "unconfirmed", None)


def test_giving_up_says_how_often_it_tried() -> None:
    transport, calls = _scripted(*[httpx.ConnectError("Connection refused")] * 4)
    sleeps: list[float] = []
    with _client(transport, sleeps) as gateway, pytest.raises(PublishError) as refused:
        gateway.publish("alerts", ALERT)
    assert calls == [1, 2, 3, 4]
    assert sleeps == [0.5, 1.0, 2.0]
    error = refused.value
    assert (error.status, error.attempts) == (None, 4)
    assert str(error) == "cannot reach http://gw: Connection refused (gave up after 4 attempts)"
    assert isinstance(error.__cause__, httpx.ConnectError)


def test_a_retry_after_beyond_max_delay_is_left_to_the_caller() -> None:
    transport, calls = _scripted(
        httpx.Response(503, headers={"Retry-After": "120"}, json={"error": "Draining"}), accepted()
    )
    with _client(transport, []) as gateway, pytest.raises(PublishError) as refused:
        gateway.publish("alerts", ALERT)
    assert (calls, refused.value.retry_after, refused.value.status) == ([1], 120.0, 503)


def test_the_backoff_doubles_to_its_cap() -> None:
    retry = Retry(attempts=10, initial=0.5, max_delay=3.0)
    assert [retry.delay(n, lambda: 1.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="invalid retry policy"):
        Retry(attempts=0)


async def test_async_retries_the_same_way() -> None:
    calls: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("Connection refused")
        return accepted()

    transport = httpx.MockTransport(handler)
    async with AsyncPublishClient("http://gw", KEY, transport=transport, retry=QUICK) as gateway:
        with trio.fail_after(TIMEOUT):
            assert (await gateway.publish("alerts", ALERT))["status"] == "accepted"
    assert len(calls) == 2


# --- settings -------------------------------------------------------------------------


def test_url_and_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REALTIME_URL", "REALTIME_PORT", "REALTIME_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="no API key: pass api_key= or set REALTIME_API_KEY"):
        PublishClient()
    monkeypatch.setenv("REALTIME_API_KEY", KEY)
    assert PublishClient().url == "http://127.0.0.1:8000"
    monkeypatch.setenv("REALTIME_PORT", "9001")
    assert PublishClient().url == "http://127.0.0.1:9001"
    monkeypatch.setenv("REALTIME_URL", "wss://gw.example.com/ws")
    assert PublishClient().url == "https://gw.example.com"
    assert PublishClient("http://gw:81/base/").url == "http://gw:81/base"
    with pytest.raises(ValueError, match="not an http"):
        PublishClient("ftp://gw")


# --- TLS ------------------------------------------------------------------------------


async def test_an_untrusted_certificate_is_reported_as_such(
    nursery: trio.Nursery, tmp_path: Any
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    server = await start_gateway(
        nursery, api_key=KEY, feeds=False, certfile=certfile, keyfile=keyfile
    )
    url = f"https://127.0.0.1:{server.port}"
    with trio.fail_after(TIMEOUT):
        async with AsyncPublishClient(url, KEY, retry=QUICK) as gateway:
            with pytest.raises(PublishError) as refused:
                await gateway.publish(Channel.ALERTS, ALERT)
        assert refused.value.attempts == 1  # a certificate does not fix itself
        assert "TLS with" in refused.value.message
        assert "CERTIFICATE_VERIFY_FAILED" in refused.value.message
        trusted = trustme_context(ca)
        async with AsyncPublishClient(url, KEY, verify=trusted) as gateway:
            assert (await gateway.publish(Channel.ALERTS, ALERT))["status"] == "accepted"


def trustme_context(ca: trustme.CA) -> Any:
    import ssl

    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context
