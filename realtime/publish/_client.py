"""A client of the gateway's ``POST /api/publish``, on httpx: sync and async.

Theory of operation
-------------------
Both clients build the same request (:func:`_body`: one event, or ``{"events": [...]}``
for a batch; payloads are ``protocol`` classes or plain dicts) and judge each answer
the same way (:func:`_judge`); they differ only in how they send and sleep. A request
is sent again only when it certainly published nothing:

* the connection could not be made (refused, no route, connect timeout, the pool of
  connections full): the gateway is not there yet, or is restarting;
* 429 (a limit) and 503 (draining, at capacity, a cluster node away from Redis), and
  502 (a proxy in front could not reach the gateway): the gateway, or its proxy,
  answered without publishing. Not the gateway's 503 ``unconfirmed``: its bus failed
  while taking the events, which may have been published.

The wait before retry ``n`` is the answer's ``Retry-After`` if it sent one, else
exponential backoff with full jitter (``Retry``); a ``Retry-After`` longer than
``Retry.max_delay`` is not waited for: the client gives up at once and the error
carries it. Nothing else is retried: any other 4xx (a bad event, a wrong key) would
be refused again; a connection lost after the request was sent, a read timeout, a 500
or a 504 may have published it, and a retry could publish it twice. Each ends in a
:class:`PublishError` with the status and the gateway's ``code`` and sentence. A TLS
certificate the client does not trust is not retried either: it says so.

Importing this module loads httpx and the protocol, nothing of the server (a test
checks it), so any service can publish with ``pip install realtime-gateway``.
"""

from __future__ import annotations

import os
import random
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Final, TypeAlias

import anyio
import attrs
import httpx
import orjson

from protocol import Channel, EventData

#: Where the gateway listens unless told (``REALTIME_URL``, ``REALTIME_PORT``).
DEFAULT_URL: Final = "http://127.0.0.1:8000"
#: Seconds one attempt (connect, send, answer) may take.
DEFAULT_TIMEOUT: Final = 10.0
PATH: Final = "/api/publish"
#: Answers that published nothing and may succeed later.
RETRY_STATUSES: Final = frozenset({429, 502, 503})
#: The gateway's 503 for a bus that failed while taking the events: they may have
#: been published, so it is not retried (docs/feeds.md).
UNCONFIRMED: Final = "unconfirmed"

#: An event of a batch: what :func:`event` and :func:`price` build.
Event: TypeAlias = dict[str, Any]
#: A payload: a ``protocol`` class (``PriceData``, ``AlertData``, ...) or its dict.
Payload: TypeAlias = EventData | Mapping[str, Any]


class PublishError(Exception):
    """The gateway did not take the events.

    ``status`` is the HTTP status (``None`` when no answer came: the connection failed
    or was lost), ``code`` the gateway's error code (``invalid_message``,
    ``unknown_symbol``, ``unauthorized``, ...; ``None`` without a JSON error body),
    ``message`` its sentence, or what went wrong. ``retry_after`` is the wait the
    gateway asked for, when it was too long to wait; ``attempts`` how many requests
    were sent. ``published`` says whether the events may have been published anyway
    (``None``: unknown, after a connection lost mid-request or a 5xx).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
        published: bool | None = False,
    ) -> None:
        prefix = f"HTTP {status}" + (f" {code}" if code else "") + ": " if status else ""
        super().__init__(prefix + message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.attempts = attempts
        self.published = published


@attrs.frozen(kw_only=True)
class Retry:
    """When to send a request again (see the module doc).

    Retry ``n`` (1-based) waits ``Retry-After`` when the answer had one, else a random
    time in ``[0, min(max_delay, initial * multiplier ** (n - 1))]``. ``attempts`` is
    the most requests sent in all: 1 never retries.
    """

    attempts: int = 5
    initial: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 10.0

    def __attrs_post_init__(self) -> None:
        if self.attempts < 1 or not 0 < self.initial <= self.max_delay or self.multiplier < 1:
            raise ValueError(f"invalid retry policy: {self!r}")

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before retry ``retry`` without a ``Retry-After``."""
        ceiling = self.initial
        for _ in range(retry - 1):
            ceiling = min(self.max_delay, ceiling * self.multiplier)
        return rand() * ceiling


def event(
    channel: Channel | str, data: Payload, *, to: str | None = None, user: str | None = None
) -> Event:
    """One event of a batch on ``channel`` (not prices: :func:`price`): to every
    subscriber, or to one client id (``to``), or to every connection of one user
    (``user``, a token's ``sub``), or to that client id if it is that user's (both;
    with authentication on, ``to`` needs ``user``)."""
    body: Event = {"channel": str(channel), "data": _payload(data)}
    if to is not None:
        body["to"] = to
    if user is not None:
        body["user"] = user
    return body


def price(symbol: str, data: Payload) -> Event:
    """One price of a batch: ``data`` (a ``PriceData``) for ``symbol``."""
    return {"channel": str(Channel.PRICES), "symbol": symbol, "data": _payload(data)}


def _payload(data: Payload) -> Any:
    if attrs.has(type(data)):
        # Enums are str subclasses: orjson writes their values.
        return attrs.asdict(data)  # type: ignore[arg-type]  # an attrs instance
    return dict(data)  # type: ignore[arg-type]  # a Mapping


def _body(events: list[Event]) -> bytes:
    if len(events) == 1:
        return orjson.dumps(events[0])
    return orjson.dumps({"events": events})


def _base_url(url: str | None) -> str:
    """``url``, else ``REALTIME_URL``, else 127.0.0.1 on ``REALTIME_PORT``; ``ws(s)://``
    read as ``http(s)://``, so one variable serves the subscriber and the publisher."""
    if url is None:
        url = os.environ.get("REALTIME_URL") or None
    if url is None:
        port = os.environ.get("REALTIME_PORT")
        url = f"http://127.0.0.1:{port}" if port else DEFAULT_URL
    parts = urllib.parse.urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s):// or ws(s):// URL: {url!r}")
    path = parts.path.rstrip("/")
    path = path.removesuffix("/ws")  # a subscriber's URL: the API is beside it
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, "", ""))


def _api_key(api_key: str | None) -> str:
    key = api_key if api_key is not None else os.environ.get("REALTIME_API_KEY")
    if not key:
        raise ValueError(
            "no API key: pass api_key= or set REALTIME_API_KEY (the gateway's --api-key)"
        )
    return key


@attrs.frozen
class _Wait:
    """Retry after ``seconds``; ``error`` is what to raise if no retry is left."""

    seconds: float
    error: PublishError


def _judge(response: httpx.Response, retry: Retry, attempt: int, rand: Callable[[], float]) -> Any:
    """The body of a 202; raises :class:`PublishError` for an answer not worth a retry;
    returns a :class:`_Wait` for one that is."""
    if response.status_code == 202:
        return response.json()
    code, message = _error_of(response)
    status = response.status_code
    if status not in RETRY_STATUSES or code == UNCONFIRMED:
        published = None if status >= 500 else False
        raise PublishError(message, status=status, code=code, attempts=attempt, published=published)
    retry_after = _retry_after(response.headers.get("retry-after"))
    error = PublishError(
        message, status=status, code=code, retry_after=retry_after, attempts=attempt
    )
    if retry_after is not None and retry_after > retry.max_delay:
        raise error  # the caller decides whether to wait that long
    return _Wait(retry_after if retry_after is not None else retry.delay(attempt, rand), error)


def _error_of(response: httpx.Response) -> tuple[str | None, str]:
    """The gateway's code and sentence, or the start of whatever else answered (a
    proxy's HTML page)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        code = body.get("code")
        return (code if isinstance(code, str) else None), body["error"]
    text = " ".join(response.text.split())[:200]
    return None, text or response.reason_phrase


def _retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


#: Failures before the request was sent: retried.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _connection_failure(
    exc: httpx.TransportError, url: str, attempt: int, retry: Retry, rand: Callable[[], float]
) -> _Wait:
    """What to do after a transport error: a :class:`_Wait` if it is worth a retry;
    raises :class:`PublishError` if not."""
    tls = _tls_error(exc)
    if tls is not None:
        raise PublishError(
            f"TLS with {url} failed: {tls} (the gateway's certificate is not trusted by "
            "this client: pass verify= an SSLContext or CA file that trusts it)",
            attempts=attempt,
        ) from exc
    if isinstance(exc, _NOT_SENT):
        error = PublishError(f"cannot reach {url}: {exc or type(exc).__name__}", attempts=attempt)
        error.__cause__ = exc
        return _Wait(retry.delay(attempt, rand), error)
    raise PublishError(
        f"connection to {url} lost before its answer ({type(exc).__name__}: {exc}): "
        "the events may or may not have been published, so it was not sent again",
        attempts=attempt,
        published=None,
    ) from exc


def _tls_error(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _gave_up(error: PublishError, attempts: int) -> PublishError:
    error.attempts = attempts
    if attempts > 1:
        error.args = (f"{error.args[0]} (gave up after {attempts} attempts)",)
    return error


class _Base:
    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        retry: Retry | None,
        rand: Callable[[], float] | None,
    ) -> None:
        self.url = _base_url(url)
        self._endpoint = self.url + PATH
        self._headers = {
            "Authorization": f"Bearer {_api_key(api_key)}",
            "Content-Type": "application/json",
        }
        self.retry = retry or Retry()
        self._rand = rand or random.random


class PublishClient(_Base):
    """Publishes to the gateway at ``url`` (default: ``REALTIME_URL``, else
    ``http://127.0.0.1:$REALTIME_PORT``, else ``http://127.0.0.1:8000``; ``ws://`` URLs
    are read as ``http://``) with ``api_key`` (default: ``REALTIME_API_KEY``; with the
    gateway's authentication on, a token with the admin role is taken too).

    Blocking; safe to share between threads (httpx's pool). Each call blocks for at
    most ``retry.attempts`` requests of ``timeout`` seconds each plus the waits
    between them, and returns the gateway's answer (``{"status": "accepted", ...}``)
    or raises :class:`PublishError`. ``verify`` is httpx's: ``True`` (the system's
    CAs), an ``ssl.SSLContext``, or ``False``. ``transport`` replaces the network
    (tests). Close it, or use it as a context manager.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        retry: Retry | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.BaseTransport | None = None,
        rand: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(url, api_key, retry, rand)
        self._sleep = sleep
        self._http = httpx.Client(timeout=timeout, verify=verify, transport=transport)

    def publish(
        self,
        channel: Channel | str,
        data: Payload,
        *,
        to: str | None = None,
        user: str | None = None,
    ) -> Any:
        """Publish ``data`` on ``channel`` (prices: :meth:`publish_price`), addressed as
        :func:`event` says."""
        return self._send([event(channel, data, to=to, user=user)])

    def publish_price(self, symbol: str, data: Payload) -> Any:
        """Publish the price ``data`` of ``symbol`` (in the gateway's universe)."""
        return self._send([price(symbol, data)])

    def publish_batch(self, events: Iterable[Event]) -> Any:
        """Publish ``events`` (of :func:`event` and :func:`price`; 1 to 1,000) in one
        request: all are published, in order, or none."""
        return self._send(list(events))

    def _send(self, events: list[Event]) -> Any:
        content = _body(events)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.post(self._endpoint, content=content, headers=self._headers)
            except httpx.TransportError as exc:
                wait = _connection_failure(exc, self.url, attempt, self.retry, self._rand)
            else:
                outcome = _judge(response, self.retry, attempt, self._rand)
                if not isinstance(outcome, _Wait):
                    return outcome
                wait = outcome
            if attempt >= self.retry.attempts:
                raise _gave_up(wait.error, attempt)
            self._sleep(wait.seconds)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PublishClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncPublishClient(_Base):
    """:class:`PublishClient` for async code, under asyncio or Trio (httpx runs on
    both): the same arguments, and ``await`` on each method. Cancellation is honoured
    during a request and between retries. Close it with ``await aclose()``, or use it
    as an async context manager."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        retry: Retry | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        rand: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(url, api_key, retry, rand)
        self._http = httpx.AsyncClient(timeout=timeout, verify=verify, transport=transport)

    async def publish(
        self,
        channel: Channel | str,
        data: Payload,
        *,
        to: str | None = None,
        user: str | None = None,
    ) -> Any:
        """Publish ``data`` on ``channel`` (prices: :meth:`publish_price`), addressed as
        :func:`event` says."""
        return await self._send([event(channel, data, to=to, user=user)])

    async def publish_price(self, symbol: str, data: Payload) -> Any:
        """Publish the price ``data`` of ``symbol`` (in the gateway's universe)."""
        return await self._send([price(symbol, data)])

    async def publish_batch(self, events: Iterable[Event]) -> Any:
        """Publish ``events`` in one request: all, in order, or none."""
        return await self._send(list(events))

    async def _send(self, events: list[Event]) -> Any:
        content = _body(events)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.post(
                    self._endpoint, content=content, headers=self._headers
                )
            except httpx.TransportError as exc:
                wait = _connection_failure(exc, self.url, attempt, self.retry, self._rand)
            else:
                outcome = _judge(response, self.retry, attempt, self._rand)
                if not isinstance(outcome, _Wait):
                    return outcome
                wait = outcome
            if attempt >= self.retry.attempts:
                raise _gave_up(wait.error, attempt)
            # anyio's sleep: the same code under asyncio and Trio.
            await anyio.sleep(wait.seconds)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPublishClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
