"""The pieces of ``--workers`` that need no process: names and the hidden option.
The processes themselves are tested in tests/cluster/test_workers.py (with Redis)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from realtime import Config
from realtime._logs import formatter
from realtime._workers import WorkerLink, worker_log_file


def test_each_worker_has_a_log_file_of_its_own() -> None:
    config = Config(log_file=Path("logs/websocket.log"))
    assert worker_log_file(config, 2).log_file == Path("logs/websocket.worker-2.log")
    assert worker_log_file(Config(), 2).log_file is None


def test_the_worker_option_is_index_and_descriptor() -> None:
    assert WorkerLink.parse("3:11") == WorkerLink(3, 11)
    for bad in ("3", "a:1", "1:", ":4", "1:2:3"):
        with pytest.raises(ValueError, match="--supervised-worker takes INDEX:FD"):
            WorkerLink.parse(bad)


def test_each_worker_marks_its_log_lines_in_either_format() -> None:
    record = logging.makeLogRecord(
        {"name": "realtime.websocket", "levelname": "INFO", "msg": "[WebSocket] Connected: c-1"}
    )
    text = formatter("text", worker=2).format(record)
    assert text.endswith(" INFO realtime.websocket [worker 2]: [WebSocket] Connected: c-1")
    assert json.loads(formatter("json", worker=2).format(record))["worker"] == 2
    assert "worker" not in json.loads(formatter("json").format(record))
