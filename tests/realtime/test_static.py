"""The built dashboard's file server: what it serves, what it refuses, how it caches."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h11
import pytest
import trio

from realtime import _static
from realtime._static import (
    DEFAULT_ROOT,
    IMMUTABLE,
    NOT_BUILT,
    NOT_BUILT_PAGE,
    NOT_PACKAGED,
    NOT_PACKAGED_PAGE,
    PACKAGED_ROOT,
    REVALIDATE,
    StaticFiles,
    content_type,
    safe_relative_path,
)
from realtime.ws import Listener

from .conftest import HOST, StartListener

INDEX = b"<!doctype html><title>dash</title>"
SCRIPT = b"console.log('hi')"


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """A built dashboard, plus a secret next to it that must never be served."""
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "assets" / "index-AbC123.js").write_bytes(SCRIPT)
    (root / "assets" / "index-AbC123.css").write_bytes(b"body{}")
    (root / "favicon.svg").write_bytes(b"<svg/>")
    (root / ".env").write_bytes(b"SECRET=1")
    (tmp_path / "secret.txt").write_bytes(b"outside the root")
    return root


class Response:
    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


async def call(
    app: StaticFiles, path: str, method: str = "GET", headers: Sequence[tuple[bytes, bytes]] = ()
) -> Response:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
    await app(scope, receive, send)
    start, body = sent
    assert start["type"] == "http.response.start"
    assert body["type"] == "http.response.body"
    return Response(start["status"], dict(start["headers"]), body["body"])


async def test_index_for_root(dist: Path) -> None:
    response = await call(StaticFiles(dist), "/")
    assert response.status == 200
    assert response.body == INDEX
    assert response.headers[b"content-type"] == b"text/html; charset=utf-8"
    assert response.headers[b"cache-control"] == REVALIDATE
    assert response.headers[b"content-length"] == b"%d" % len(INDEX)
    assert response.headers[b"x-content-type-options"] == b"nosniff"


@pytest.mark.parametrize(
    ("path", "body", "kind"),
    [
        ("/assets/index-AbC123.js", SCRIPT, b"text/javascript; charset=utf-8"),
        ("/assets/index-AbC123.css", b"body{}", b"text/css; charset=utf-8"),
    ],
)
async def test_hashed_assets_are_immutable(dist: Path, path: str, body: bytes, kind: bytes) -> None:
    response = await call(StaticFiles(dist), path)
    assert (response.status, response.body) == (200, body)
    assert response.headers[b"content-type"] == kind
    assert response.headers[b"cache-control"] == IMMUTABLE


async def test_other_files_revalidate(dist: Path) -> None:
    response = await call(StaticFiles(dist), "/favicon.svg")
    assert response.status == 200
    assert response.headers[b"content-type"] == b"image/svg+xml"
    assert response.headers[b"cache-control"] == REVALIDATE


@pytest.mark.parametrize(
    "path",
    [
        "/missing.js",
        "/assets/",  # a directory
        "/assets",
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/./index.html",
        "//etc/passwd",
        "/.env",  # hidden files
        "/assets/..",
        "/..\\secret.txt",
        "/index.html\x00.js",
        "relative.js",
    ],
)
async def test_refuses_what_is_not_a_dashboard_file(dist: Path, path: str) -> None:
    response = await call(StaticFiles(dist), path)
    assert response.status == 404
    assert b"outside" not in response.body


async def test_symlink_out_of_the_root_is_404(dist: Path) -> None:
    (dist / "escape.txt").symlink_to(dist.parent / "secret.txt")
    (dist / "inside.js").symlink_to(dist / "assets" / "index-AbC123.js")
    app = StaticFiles(dist)
    assert (await call(app, "/escape.txt")).status == 404
    assert (await call(app, "/inside.js")).body == SCRIPT


async def test_oversized_files_are_not_served(dist: Path) -> None:
    assert (await call(StaticFiles(dist, max_file_size=4), "/favicon.svg")).status == 404


async def test_head_has_headers_and_no_body(dist: Path) -> None:
    response = await call(StaticFiles(dist), "/assets/index-AbC123.js", method="HEAD")
    assert response.status == 200
    assert response.body == b""
    assert response.headers[b"content-length"] == b"%d" % len(SCRIPT)


async def test_other_methods_are_405(dist: Path) -> None:
    response = await call(StaticFiles(dist), "/", method="POST")
    assert response.status == 405
    assert response.headers[b"allow"] == b"GET, HEAD"


async def test_etag_revalidation(dist: Path) -> None:
    app = StaticFiles(dist)
    first = await call(app, "/")
    etag = first.headers[b"etag"]
    again = await call(app, "/", headers=[(b"if-none-match", b'"nope", ' + etag)])
    assert (again.status, again.body) == (304, b"")
    assert again.headers[b"etag"] == etag
    # A rebuilt file gets a new tag.
    index = dist / "index.html"
    index.write_bytes(INDEX + b"<!-- v2 -->")
    os.utime(index, ns=(1, 1))
    changed = await call(app, "/", headers=[(b"if-none-match", etag)])
    assert changed.status == 200
    assert changed.headers[b"etag"] != etag


async def test_not_built(tmp_path: Path) -> None:
    app = StaticFiles(tmp_path / "no-dist")
    assert not app.built
    response = await call(app, "/")
    assert response.status == 503
    assert response.body == NOT_BUILT_PAGE
    assert b"make install" in response.body
    assert response.headers[b"content-type"] == b"text/html; charset=utf-8"
    assert (await call(app, "/assets/index-AbC123.js")).status == 404


def test_default_root_is_web_dist() -> None:
    # In a checkout; a wheel has realtime/_dashboard instead (tests/packaging).
    assert DEFAULT_ROOT.parts[-2:] == ("web", "dist")
    assert (DEFAULT_ROOT.parent / "package.json").is_file()
    assert not PACKAGED_ROOT.exists()  # only the wheel's build makes it
    assert StaticFiles(DEFAULT_ROOT / "nowhere").missing == NOT_BUILT


async def test_not_packaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Installed from a wheel built without web/dist: build it there, then reinstall.
    monkeypatch.setattr(_static, "IN_SOURCE_TREE", False)
    app = StaticFiles(tmp_path / "no-dist")
    assert app.missing == NOT_PACKAGED
    response = await call(app, "/")
    assert (response.status, response.body) == (503, NOT_PACKAGED_PAGE)
    assert b"pip install ." in response.body


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.html", "text/html; charset=utf-8"),
        ("a.MJS", "text/javascript; charset=utf-8"),
        ("a.woff2", "font/woff2"),
        ("a.unknown-suffix", "application/octet-stream"),
    ],
)
def test_content_types(name: str, expected: str) -> None:
    assert content_type(Path(name)) == expected


@pytest.mark.parametrize(
    ("url", "relative"),
    [("/", "index.html"), ("/a/b.js", "a/b.js"), ("/a//b.js", None), ("/a/", None)],
)
def test_safe_relative_path(url: str, relative: str | None) -> None:
    assert safe_relative_path(url) == relative


async def test_served_over_a_real_socket(dist: Path, start_listener: StartListener) -> None:
    """Through the gateway's listener and hypercorn, as a browser would fetch it."""

    async def refuse(*args: Any) -> None:
        raise AssertionError("no WebSocket expected")

    listener: Listener = await start_listener(refuse, asgi_app=StaticFiles(dist))
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(HOST, listener.port)
        async with stream:
            connection = h11.Connection(h11.CLIENT)
            request = h11.Request(
                method="GET",
                target="/assets/index-AbC123.js?v=1",
                headers=[("Host", "localhost"), ("Connection", "close")],
            )
            await stream.send_all(connection.send(request) + connection.send(h11.EndOfMessage()))
            events: list[Any] = []
            while not events or not isinstance(events[-1], h11.EndOfMessage):
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await stream.receive_some(65536))
                else:
                    events.append(event)
    response = events[0]
    assert response.status_code == 200
    assert dict(response.headers)[b"cache-control"] == IMMUTABLE
    assert b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data)) == SCRIPT
