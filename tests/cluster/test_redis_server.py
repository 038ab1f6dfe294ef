"""The test Redis itself: it starts, answers, keeps nothing, and stops."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .redis_server import RedisServer


def _cli(server: RedisServer, *command: str) -> str:
    args = ["redis-cli", "-h", "127.0.0.1", "-p", str(server.port), "--no-auth-warning"]
    if server.password:
        args += ["-a", server.password]
    result = subprocess.run([*args, *command], capture_output=True, text=True, timeout=10)
    return result.stdout.strip()


def test_the_fixture_answers_and_persists_nothing(redis_server: RedisServer) -> None:
    assert _cli(redis_server, "PING") == "PONG"
    assert _cli(redis_server, "CONFIG", "GET", "save") == "save"
    assert _cli(redis_server, "CONFIG", "GET", "maxmemory-policy").endswith("noeviction")
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"


def test_a_password_is_required_when_set(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="correct-horse")
    server.start()
    try:
        assert _cli(server, "PING") == "PONG"
        assert server.url == f"redis://:correct-horse@127.0.0.1:{server.port}/0"
        server.password = None
        assert "NOAUTH" in _cli(server, "PING")
    finally:
        server.stop()
    assert server.process is None
