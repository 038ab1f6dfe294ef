"""The Autobahn|Testsuite cases against our WebSocket layer, run by kosoku.

kosoku (PyPI) drives Autobahn's own case files from a Rust runner, so no Python 2
is needed. The server under test is ``echo.py``: the gateway's listener and
``accept_websocket`` behind an echo handler, in a process of its own (kosoku
runs on asyncio). docs/conformance.md lists the verdicts that are not OK and why.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

kosoku = pytest.importorskip("kosoku", reason="kosoku runs the Autobahn cases: pip install kosoku")

ROOT: Final = Path(__file__).resolve().parents[2]

#: Framing (1, 2: pings and pongs, 3: reserved bits, 4: opcodes), fragmentation (5),
#: UTF-8 (6), close handling (7) and 10 (auto-fragmentation): about 250 cases, 2 s.
CORE_CASES: Final = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"]
#: Limits and performance: messages up to 16 MiB, 54 cases, several seconds.
LIMIT_CASES: Final = ["9.*"]
#: Verdicts other than OK that are expected, with the reason (docs/conformance.md).
EXPECTED: Final = {
    # The case sends a ping after its close frame: what the peer does is up to it.
    "7.1.6": "INFORMATIONAL",
    # Close codes 5000 and 65535 are invalid; we answer 1002, which Autobahn only notes.
    "7.13.1": "INFORMATIONAL",
    "7.13.2": "INFORMATIONAL",
}
PARALLEL: Final = 8


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", "from tests.autobahn.echo import main; main()", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening "), line
        yield f"ws://127.0.0.1:{int(line.split()[1])}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def run_cases(url: str, cases: list[str]) -> dict[str, str]:
    """Each case's verdict (its behaviour, or its close behaviour when that is worse)."""

    async def run() -> list[Any]:
        try:
            results: list[Any] = await kosoku.run_fuzzingclient(url, cases, concurrency=PARALLEL)
        except kosoku.FailureError as failure:
            results = failure.results
        return results

    verdicts = {}
    for result in asyncio.run(run()):
        behaviour, close = result.behavior.value, result.behavior_close.value
        verdicts[result.case_id] = behaviour if behaviour != "OK" else close
    return verdicts


def test_framing_pings_reserved_bits_opcodes_fragmentation_utf8_and_close(echo_url: str) -> None:
    verdicts = run_cases(echo_url, CORE_CASES)
    assert len(verdicts) > 240
    not_ok = {case: verdict for case, verdict in verdicts.items() if verdict != "OK"}
    assert not_ok == EXPECTED


def test_limits_and_performance(echo_url: str) -> None:
    verdicts = run_cases(echo_url, LIMIT_CASES)
    assert len(verdicts) == 54
    assert {case: v for case, v in verdicts.items() if v != "OK"} == {}
