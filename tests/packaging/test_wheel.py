"""The wheel works anywhere: built from a clean copy of this checkout, installed into
a fresh venv and started from another folder, ``realtime serve`` serves the dashboard
and the sample replay; a wheel built without the dashboard says so.

About 20 s: two wheels, two venvs. pip resolves the dependencies from the configured
index (PyPI), through its cache after the first run. The dashboard must be built first
(``make install``; ``make test`` does it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from ..realtime.helpers import TIMEOUT, drain_log, http_get, open_ws

ROOT = Path(__file__).resolve().parents[2]
#: What pip may take to build the wheel or install it with its dependencies.
PIP_TIMEOUT = 180


def _clean_copy(destination: Path, *, dashboard: bool) -> Path:
    """The checkout as a fresh clone would be: the files git tracks or would (edits
    and new files included), and web/dist if ``dashboard``. (Built in place, the wheel
    would also take whatever an earlier build left in build/lib.)"""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # not deleted in the working tree
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    if dashboard:
        shutil.copytree(ROOT / "web" / "dist", destination / "web" / "dist")
    return destination


def _build(factory: pytest.TempPathFactory, *, dashboard: bool) -> Path:
    source = _clean_copy(factory.mktemp("source"), dashboard=dashboard)
    folder = factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", folder, source],
        check=True,
        timeout=PIP_TIMEOUT,
    )
    (built,) = folder.glob("realtime_gateway-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / "web" / "dist" / "index.html").is_file():
        pytest.fail("web/dist is not built: run `make install` first")
    return _build(tmp_path_factory, dashboard=True)


@asynccontextmanager
async def _installed_gateway(
    wheel: Path, folder: Path, *args: str
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """``realtime serve`` from ``wheel`` installed into a fresh venv, started in another
    folder: its port and its log so far. Stopped with SIGTERM on exit (status 0)."""
    venv, elsewhere = folder / "venv", folder / "elsewhere"
    elsewhere.mkdir()
    await trio.run_process([sys.executable, "-m", "venv", "--without-pip", venv])
    # The test's own pip installs into the fresh venv (which has none of its own).
    pip: list[str | Path] = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python"]
    await trio.run_process([*pip, "install", "--quiet", "--disable-pip-version-check", wheel])
    # Nothing of the checkout or of this venv leaks in: no REALTIME_* settings, no path.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REALTIME_", "PYTHON"))}
    process = await trio.lowlevel.open_process(
        [venv / "bin" / "realtime", "serve", "--port", "0", *args],
        cwd=elsewhere,
        env=env,
        stderr=subprocess.PIPE,
    )
    try:  # a failure or a timeout anywhere below must not leave the gateway running
        assert process.stderr is not None
        log: list[bytes] = []
        while (match := re.search(rb"Listening on 127\.0\.0\.1:(\d+)", b"".join(log))) is None:
            chunk = await process.stderr.receive_some()
            assert chunk, b"".join(log).decode()
            log.append(bytes(chunk))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_log, process, log)
            yield int(match[1]), log
            while b"WebSocket endpoint:" not in b"".join(log):  # past the ready line
                await trio.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        process.kill()
    # It ran the installed package, not this checkout.
    assert str(ROOT) not in b"".join(log).decode()


def test_the_wheel_holds_the_dashboard_the_sample_and_the_licence(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        index = archive.read("realtime/_dashboard/index.html")
    # Every asset index.html loads is in the wheel, and only the built files are.
    assets = re.findall(rb'(?:src|href)="/(assets/[^"]+)"', index)
    assert assets
    assert {f"realtime/_dashboard/{a.decode()}" for a in assets} <= names
    assert not [name for name in names if "/." in name]  # web/dist/.built stays out
    assert {"feeds/data/stocks-2007-2009.csv", "feeds/data/README.md"} <= names
    assert [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]


async def test_installed_anywhere_it_serves_the_dashboard_and_the_sample(
    wheel: Path, tmp_path: Path
) -> None:
    with trio.fail_after(PIP_TIMEOUT + TIMEOUT):
        async with _installed_gateway(wheel, tmp_path, "--feed", "replay:sample") as (port, log):
            status, body = await http_get(port, "/")
            assert status == 200, body
            assert b"<title>Realtime dashboard</title>" in body
            (script,) = re.findall(rb'<script type="module" crossorigin src="(/[^"]+)"', body)
            assert (await http_get(port, script.decode()))[0] == 200
            async with open_ws(f"ws://127.0.0.1:{port}/ws/wheel") as ws:
                welcome = json.loads(await ws.get_message())
            assert welcome["symbols"] == ["AAPL", "AMZN", "GOOG", "IBM", "MSFT"]
    text = b"".join(log).decode()
    assert "ready: dashboard at http://127.0.0.1:" in text, text


async def test_a_wheel_built_without_the_dashboard_says_so(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    bare = _build(tmp_path_factory, dashboard=False)
    with trio.fail_after(PIP_TIMEOUT + TIMEOUT):
        async with _installed_gateway(bare, tmp_path, "--feeds", "false") as (port, log):
            status, body = await http_get(port, "/")
    assert status == 503
    assert b"this installation has no browser dashboard" in body
    text = b"".join(log).decode()
    assert re.search(r"WARNING realtime: Gateway \S+ ready at http://127\.0\.0\.1:\d+/,", text), (
        text
    )
    assert "without its dashboard: this installation was built from a checkout without" in text
