"""The client stays out of the server's import graph, and rich stays in the viewer.

Each check runs a fresh interpreter: in this one, other tests have imported everything.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

#: The server's dependencies and modules: none of them may come with the client.
SERVER_ONLY = ("hypercorn", "prometheus_client", "jwt", "feeds", "rich")


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


def _top_level(modules: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


def test_the_client_loads_no_server_module() -> None:
    modules = _modules_after("import realtime.client")
    ours = {name for name in modules if name == "realtime" or name.startswith("realtime.")}
    assert ours == {
        "realtime",
        "realtime.client",
        "realtime.client._asyncio",
        "realtime.client._client",
        "realtime.client._tokens",
    }
    assert not _top_level(modules) & set(SERVER_ONLY)
    # What it does need: the protocol, and trio-websocket (which brings wsproto).
    assert {"protocol", "trio", "trio_websocket", "wsproto"} <= _top_level(modules)


def test_the_publish_client_loads_no_server_module() -> None:
    modules = _modules_after("import realtime.publish")
    ours = {name for name in modules if name == "realtime" or name.startswith("realtime.")}
    assert ours == {"realtime", "realtime.publish", "realtime.publish._client"}
    # Not rich's check: `import httpx` loads its command line (click, rich, pygments)
    # wherever click is installed, as the bench extras install it.
    assert not _top_level(modules) & (set(SERVER_ONLY) - {"rich"})
    # Nor the subscribe client's WebSocket stack, nor Trio: httpx runs on either loop.
    assert not _top_level(modules) & {"trio", "trio_websocket", "wsproto"}
    assert {"protocol", "httpx"} <= _top_level(modules)


def test_the_server_names_still_import_from_realtime() -> None:
    modules = _modules_after(
        "from realtime import Config, Event, Hub, HubStatistics, Server, __version__, serve"
    )
    assert {"realtime._config", "realtime._hub", "realtime._server"} <= modules


@pytest.mark.parametrize(
    "statement",
    [
        "import realtime._cli",
        "import contextlib, io\nfrom realtime._cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['serve', '--help'])",
    ],
    ids=["import", "serve --help"],
)
def test_the_command_loads_rich_only_to_listen(statement: str) -> None:
    modules = _modules_after(statement)
    assert "rich" not in _top_level(modules)
    assert "realtime.client._viewer" not in modules


def test_the_viewer_is_what_loads_rich() -> None:
    # Guards the test above: it would pass vacuously if rich were never imported at all.
    assert "rich" in _top_level(_modules_after("import realtime.client._viewer"))
