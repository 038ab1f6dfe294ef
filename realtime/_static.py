"""Serving the built dashboard over the gateway's HTTP side.

Where it is: in a source checkout, ``web/dist``, where ``make install`` (``vite
build``) writes it; in an installed wheel, ``realtime/_dashboard``, where the wheel's
build (``setup.py``) copied ``web/dist``. The packaged copy exists only in wheels, so
a checkout always serves what the last build wrote.

A small ASGI app, mounted by :class:`~realtime._app.GatewayApp` for ``GET``/``HEAD``
requests that no other route claims. It serves regular files below one root and
nothing else:

- ``/`` is ``index.html``; any other path names a file relative to the root.
- Paths with ``..``, ``.``, empty or hidden (dot) segments, backslashes or NUL, and
  files that resolve outside the root (a symlink pointing out) are 404: the answer
  never says whether something exists outside the dashboard.
- Vite's content-hashed files under ``/assets/`` are cached for a year
  (``immutable``); everything else, ``index.html`` first, is ``no-cache`` so that a
  rebuilt dashboard is picked up on the next load. ETags make revalidation cheap.
- When the root has no ``index.html`` (a clone where ``make install`` has not built
  the dashboard yet, or a wheel built from one), ``/`` answers 503 with a page that
  says how to build it, and ``realtime serve`` logs the same at start.

Files are read in a worker thread (``trio.Path``), so a slow disk never stalls the
event loop that also carries the WebSocket traffic. Bodies are read whole: the
dashboard's files are a few hundred KiB, and ``max_file_size`` bounds what is read.
"""

from __future__ import annotations

import mimetypes
import os
import stat as stat_module
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import trio

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

#: ``web/dist`` beside the package, where ``make install`` (``vite build``) writes it.
SOURCE_ROOT: Final = Path(__file__).resolve().parent.parent / "web" / "dist"
#: The copy of ``web/dist`` inside an installed wheel (see ``setup.py``).
PACKAGED_ROOT: Final = Path(__file__).resolve().parent / "_dashboard"
#: What :class:`StaticFiles` serves by default: the packaged copy where there is one.
DEFAULT_ROOT: Final = PACKAGED_ROOT if PACKAGED_ROOT.is_dir() else SOURCE_ROOT
#: Whether this is a source checkout (with ``web/``), where ``make install`` builds it.
IN_SOURCE_TREE: Final = (SOURCE_ROOT.parent / "package.json").is_file()

#: Vite writes content-hashed file names here; a changed file gets a new name.
HASHED_PREFIX: Final = "assets/"
IMMUTABLE: Final = b"public, max-age=31536000, immutable"
REVALIDATE: Final = b"no-cache"
#: The dashboard's files are small; anything bigger is not ours to serve from memory.
MAX_FILE_SIZE: Final = 16 * 1024 * 1024

# Explicit types for what Vite emits: the platform's mimetypes table varies between
# machines (``.js`` as ``application/x-javascript`` on some), and browsers refuse a
# module script served with the wrong type.
_CONTENT_TYPES: Final[dict[str, str]] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
    ".wasm": "application/wasm",
}

#: Why a checkout has no dashboard, and what to do (the 503 page and the start-up log).
NOT_BUILT: Final = "web/dist is not built: run `make install` (npm ci and vite build in web/)"
#: The same for an installed wheel built from a checkout without the dashboard.
NOT_PACKAGED: Final = (
    "this installation was built from a checkout without web/dist: run `make install` "
    "there, then `make wheel` or `pip install .` again"
)

NOT_BUILT_PAGE: Final = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Dashboard not built</title></head>
<body><h1>Dashboard not built</h1>
<p>The gateway is running, but the browser dashboard has not been built.
Run <code>make install</code> (it runs <code>npm ci</code> and <code>vite build</code>
in <code>web/</code>), then reload this page.</p>
<p>The gateway itself works without it: connect a WebSocket to
<code>/ws/{client_id}</code>; see <a href="/health">/health</a>,
<a href="/ws/stats">/ws/stats</a> and <a href="/metrics">/metrics</a>.</p>
</body></html>
"""

NOT_PACKAGED_PAGE: Final = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Dashboard not built</title></head>
<body><h1>Dashboard not built</h1>
<p>The gateway is running, but this installation has no browser dashboard: its wheel
was built from a source checkout where the dashboard had not been built. In that
checkout, run <code>make install</code> (it runs <code>npm ci</code> and
<code>vite build</code> in <code>web/</code>), then build or install the package again
(<code>make wheel</code>, or <code>pip install .</code>).</p>
<p>The gateway itself works without it: connect a WebSocket to
<code>/ws/{client_id}</code>; see <a href="/health">/health</a>,
<a href="/ws/stats">/ws/stats</a> and <a href="/metrics">/metrics</a>.</p>
</body></html>
"""


def content_type(path: Path) -> str:
    """The ``Content-Type`` for a file, by its suffix."""
    known = _CONTENT_TYPES.get(path.suffix.lower())
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def safe_relative_path(url_path: str) -> str | None:
    """The file a URL path names, relative to the root, or ``None`` if it is unsafe.

    ``url_path`` is the ASGI ``scope["path"]``: already percent-decoded, so an
    encoded ``%2e%2e`` arrives here as ``..`` and is refused like a literal one.
    """
    if url_path == "/":
        return "index.html"
    if not url_path.startswith("/") or "\\" in url_path or "\x00" in url_path:
        return None
    segments = url_path[1:].split("/")
    if any(not s or s.startswith(".") for s in segments):
        return None  # "", ".", "..", hidden files, and directory paths ending in "/"
    return "/".join(segments)


class StaticFiles:
    """ASGI app serving the files below ``root`` (default: :data:`DEFAULT_ROOT`).

    Never raises for a request: every outcome is a response (200, 304, 404, 405,
    or 503 for ``/`` when the dashboard is not built).
    """

    def __init__(self, root: Path | str = DEFAULT_ROOT, *, max_file_size: int = MAX_FILE_SIZE):
        self.root = Path(root)
        self.max_file_size = max_file_size

    @property
    def built(self) -> bool:
        """Whether the root holds a built dashboard (checked per call: builds come and go)."""
        return (self.root / "index.html").is_file()

    @property
    def missing(self) -> str:
        """Why there is no dashboard and how to build it, for a log line."""
        return NOT_BUILT if IN_SOURCE_TREE else NOT_PACKAGED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _respond(
                send, 405, b"text/plain; charset=utf-8", b"Use GET\n", [(b"allow", b"GET, HEAD")]
            )
            return
        head = method == "HEAD"
        relative = safe_relative_path(scope["path"])
        found = None if relative is None else await self._find(relative)
        if found is None:
            if relative == "index.html":
                page = NOT_BUILT_PAGE if IN_SOURCE_TREE else NOT_PACKAGED_PAGE
                await _respond(send, 503, b"text/html; charset=utf-8", page, [], head=head)
            else:
                await _respond(
                    send, 404, b"text/plain; charset=utf-8", b"Not found\n", [], head=head
                )
            return
        path, stat = found
        assert relative is not None
        etag = b'"%x-%x"' % (stat.st_size, stat.st_mtime_ns)
        cache = IMMUTABLE if relative.startswith(HASHED_PREFIX) else REVALIDATE
        headers: Headers = [(b"etag", etag), (b"cache-control", cache)]
        if etag in _if_none_match(scope):
            await _respond(send, 304, None, b"", headers, head=True)
            return
        try:
            body = b"" if head else await trio.Path(path).read_bytes()
        except OSError:  # removed or replaced between the stat and the read (a rebuild)
            await _respond(send, 404, b"text/plain; charset=utf-8", b"Not found\n", [], head=head)
            return
        await _respond(
            send,
            200,
            content_type(path).encode(),
            body,
            headers,
            head=head,
            # HEAD describes the body a GET would get; a GET counts what it read.
            length=stat.st_size if head else None,
        )

    async def _find(self, relative: str) -> tuple[Path, os.stat_result] | None:
        """The regular file ``relative`` names inside the root, with its stat, or ``None``."""
        try:
            root = await trio.Path(self.root).resolve(strict=True)
            path = await trio.Path(root / relative).resolve(strict=True)
            stat = await path.stat()
        except (OSError, RuntimeError):  # missing, unreadable, or a symlink loop
            return None
        if not Path(path).is_relative_to(Path(root)):
            return None  # a symlink pointing out of the root
        if not _is_regular(stat) or stat.st_size > self.max_file_size:
            return None
        return Path(path), stat


def _is_regular(stat: os.stat_result) -> bool:
    return stat_module.S_ISREG(stat.st_mode)


def _if_none_match(scope: Scope) -> list[bytes]:
    tags: list[bytes] = []
    for name, value in scope.get("headers", []):
        if name.lower() == b"if-none-match":
            tags += [tag.strip().removeprefix(b"W/") for tag in value.split(b",")]
    return tags


async def _respond(
    send: Send,
    status: int,
    content_type: bytes | None,
    body: bytes,
    headers: Headers,
    *,
    head: bool = False,
    length: int | None = None,
) -> None:
    all_headers: Headers = [(b"x-content-type-options", b"nosniff"), *headers]
    if content_type is not None:
        all_headers.append((b"content-type", content_type))
    if status != 304:
        all_headers.append((b"content-length", b"%d" % (len(body) if length is None else length)))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
