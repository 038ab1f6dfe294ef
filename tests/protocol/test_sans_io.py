"""protocol/ is sans-IO: no trio, no sockets, no clock reads (STYLE.md rule 1)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol"
FORBIDDEN_MODULES = {
    "trio",
    "asyncio",
    "anyio",
    "socket",
    "ssl",
    "select",
    "selectors",
    "time",
    "threading",
    "wsproto",
    "hypercorn",
    "realtime",
    "feeds",
    "random",
}
CLOCK_READS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}


@pytest.mark.parametrize("path", sorted(PROTOCOL.glob("*.py")), ids=lambda p: p.name)
def test_no_io_imports_or_clock_reads(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            names = []
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
        if isinstance(node, ast.Attribute) and node.attr in CLOCK_READS:
            pytest.fail(f"{path.name}:{node.lineno} reads the clock (.{node.attr})")


def test_importing_protocol_pulls_in_no_io_library() -> None:
    code = (
        "import sys, protocol\n"
        "bad = sorted({'trio', 'asyncio', 'wsproto', 'hypercorn', 'realtime', 'feeds'}"
        " & set(sys.modules))\n"
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
