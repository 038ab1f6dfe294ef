"""CORS over real HTTP against the real gateway: preflights, marked answers, refusals."""

from __future__ import annotations

import json

import pytest
import trio

from realtime import Config

from .helpers import TIMEOUT, http_requests, start_gateway

KEY = "k" * 24
DASHBOARD = "https://dash.example.com"
PREFLIGHT = [
    ("Access-Control-Request-Method", "POST"),
    ("Access-Control-Request-Headers", "authorization, content-type"),
]
NOTE = json.dumps(
    {"channel": "notifications", "data": {"id": "n1", "message": "Hello", "type": "info"}}
).encode()


async def test_by_default_no_other_origin_is_allowed(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False, api_key=KEY)
    with trio.fail_after(TIMEOUT):
        (preflight,) = await http_requests(
            server.port,
            [("OPTIONS", "/api/publish", b"")],
            headers=[("Origin", DASHBOARD), *PREFLIGHT],
        )
        (simple,) = await http_requests(
            server.port, [("GET", "/health", b"")], headers=[("Origin", DASHBOARD)]
        )
        (without_origin,) = await http_requests(server.port, [("GET", "/health", b"")])
    status, headers, body = preflight
    assert status == 403
    assert not any(name.startswith("access-control-") for name in headers)
    assert json.loads(body)["error"] == (
        f"Origin {DASHBOARD} may not call this API: the gateway allows no other origin "
        "(start it with --cors-origins ORIGIN to allow one)"
    )
    # The request itself is answered, without anything that lets a page read it.
    assert simple[0] == 200
    assert "access-control-allow-origin" not in simple[1]
    # Nothing changes for the same origin or for programs.
    assert without_origin[0] == 200
    assert "vary" not in without_origin[1]


async def test_an_allowed_origin_is_preflighted_and_marked(nursery: trio.Nursery) -> None:
    server = await start_gateway(
        nursery, feeds=False, api_key=KEY, cors_origins=f"{DASHBOARD}, http://localhost:5173"
    )
    with trio.fail_after(TIMEOUT):
        (preflight,) = await http_requests(
            server.port,
            [("OPTIONS", "/api/publish", b"")],
            headers=[("Origin", DASHBOARD), *PREFLIGHT],
        )
        (published, stats) = await http_requests(
            server.port,
            [("POST", "/api/publish", NOTE), ("GET", "/ws/stats", b"")],
            headers=[
                ("Origin", DASHBOARD),
                ("Authorization", f"Bearer {KEY}"),
                ("Content-Type", "application/json"),
            ],
        )
        (other_port,) = await http_requests(
            server.port,
            [("OPTIONS", "/api/alert-rules", b"")],
            headers=[("Origin", "http://localhost:5173"), ("Access-Control-Request-Method", "GET")],
        )
        (without_origin,) = await http_requests(server.port, [("GET", "/health", b"")])
    status, headers, body = preflight
    assert (status, body) == (204, b"")
    assert headers["access-control-allow-origin"] == DASHBOARD
    assert headers["access-control-allow-methods"] == "GET, HEAD, POST, DELETE"
    assert headers["access-control-allow-headers"] == "Authorization, Content-Type"
    assert headers["access-control-max-age"] == "600"
    assert headers["vary"] == "Origin"
    assert "access-control-allow-credentials" not in headers
    assert published[0] == 202
    assert published[1]["access-control-allow-origin"] == DASHBOARD
    assert published[1]["vary"] == "Origin"
    assert stats[0] == 200
    assert stats[1]["access-control-allow-origin"] == DASHBOARD
    assert other_port[0] == 204
    assert other_port[1]["access-control-allow-origin"] == "http://localhost:5173"
    # Once origins are allowed, every answer says it depends on the origin.
    assert without_origin[1]["vary"] == "Origin"
    assert "access-control-allow-origin" not in without_origin[1]


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        (
            [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")],
            "Origin https://evil.example may not call this API: the gateway allows only the "
            "origins of its --cors-origins",
        ),
        (
            # An origin differs by scheme and port too.
            [("Origin", "http://dash.example.com"), ("Access-Control-Request-Method", "GET")],
            "Origin http://dash.example.com may not call this API",
        ),
        (
            [("Origin", DASHBOARD), ("Access-Control-Request-Method", "PUT")],
            "Method 'PUT' is not allowed across origins; use GET, HEAD, POST, DELETE",
        ),
        (
            [
                ("Origin", DASHBOARD),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type,x-secret"),
            ],
            "Header 'x-secret' is not allowed across origins; the API reads Authorization "
            "and Content-Type",
        ),
    ],
)
async def test_other_preflights_are_refused_with_a_reason(
    nursery: trio.Nursery, headers: list[tuple[str, str]], error: str
) -> None:
    server = await start_gateway(nursery, feeds=False, cors_origins=DASHBOARD)
    with trio.fail_after(TIMEOUT):
        ((status, response, body),) = await http_requests(
            server.port, [("OPTIONS", "/api/publish", b"")], headers=headers
        )
    assert status == 403
    assert "access-control-allow-origin" not in response
    assert response["vary"] == "Origin"
    assert json.loads(body)["error"].startswith(error)


async def test_a_star_allows_any_origin(nursery: trio.Nursery) -> None:
    server = await start_gateway(nursery, feeds=False, cors_origins="*")
    with trio.fail_after(TIMEOUT):
        (preflight, simple) = await http_requests(
            server.port,
            [("OPTIONS", "/ws/stats", b""), ("GET", "/ws/stats", b"")],
            headers=[
                ("Origin", "https://anyone.example"),
                ("Access-Control-Request-Method", "GET"),
            ],
        )
        # OPTIONS that is no preflight (no Access-Control-Request-Method) is the app's.
        (options,) = await http_requests(
            server.port, [("OPTIONS", "/health", b"")], headers=[("Origin", "https://x.example")]
        )
    assert preflight[0] == 204
    assert preflight[1]["access-control-allow-origin"] == "*"
    assert simple[0] == 200
    assert simple[1]["access-control-allow-origin"] == "*"
    assert options[0] == 405


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("https://dash.example.com/", "is not an origin: write it as a browser sends it"),
        ("dash.example.com", "is not an origin"),
        ("https://Dash.example.com", "is not an origin"),
        ("ftp://dash.example.com", "is not an origin"),
        ("https://dash.example.com,", "'' is not an origin"),
        ("*, https://dash.example.com", "'*' allows every origin; give it alone"),
        ("https://dash.example.com:443", "leave out the default port, as browsers do"),
        ("http://localhost:99999", "the port must be 1-65535"),
    ],
)
def test_bad_origins_name_the_setting(value: str, error: str) -> None:
    with pytest.raises(ValueError, match=r"--cors-origins \(REALTIME_CORS_ORIGINS\)") as info:
        Config.from_env({"REALTIME_CORS_ORIGINS": value})
    assert error in str(info.value)


def test_origins_parse() -> None:
    assert Config().cors_allowed_origins == ()
    assert Config(cors_origins=" ").cors_allowed_origins == ()
    assert Config(cors_origins="*").cors_allowed_origins == ("*",)
    config = Config(cors_origins="http://localhost:5173, https://a.example,http://[::1]:8080")
    assert config.cors_allowed_origins == (
        "http://localhost:5173",
        "https://a.example",
        "http://[::1]:8080",
    )
