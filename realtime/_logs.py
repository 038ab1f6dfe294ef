"""The log's two formats (``--log-format``) and how a connection's peer is named in it.

Text, the default, is the line the spec's ``tail -f logs/websocket.log`` shows::

    ... INFO realtime.websocket: [WebSocket] Connected: client-123 from 127.0.0.1:51234

JSON is one object per line, for log pipelines: ``time`` (UTC, ISO 8601 with
milliseconds), ``level``, ``logger``, ``message`` (the same text), then the fields
the line was logged with (``extra=``: ``client_id``, ``peer``, ``client_ip``,
``status``, ...) and ``exception`` with the traceback when there is one. A message
that spans lines stays one line of JSON.

The peer of a connection is the TCP peer (``ip:port``); behind a proxy listed in
``--forwarded-allow-ips`` the client is the address its ``X-Forwarded-For`` names,
found as the per-IP limits find it (``SourceTable.forwarded_for``), and the line
says ``from CLIENT via PROXY:PORT``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from .ws import SourceTable

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: What every LogRecord has: anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES: Final = frozenset(
    {*vars(logging.makeLogRecord({})), "message", "asctime", "taskName"}
)


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line; see the module docstring. ``worker``
    (of ``--workers``) is added to every object."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._worker is not None:
            entry["worker"] = self._worker
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES:
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a field of another type is written as its text, never dropped.
        return orjson.dumps(entry, default=str).decode()


def formatter(log_format: str, *, worker: int | None = None) -> logging.Formatter:
    """The formatter of ``--log-format`` (``text`` or ``json``). The lines of worker
    ``worker`` of ``--workers`` say which: ``realtime.websocket [worker 2]: ...`` in
    text, ``"worker": 2`` in JSON."""
    if log_format == "json":
        return JSONFormatter(worker)
    if worker is None:
        return logging.Formatter(TEXT_FORMAT)
    return logging.Formatter(TEXT_FORMAT.replace("%(name)s", f"%(name)s [worker {worker}]"))


def peer_fields(
    sources: SourceTable, client: tuple[str, int] | None, forwarded: str | None
) -> dict[str, str]:
    """The log fields naming who is at the other end of a connection from ``client``
    (the TCP peer) with ``X-Forwarded-For`` ``forwarded``: ``peer`` (``ip:port``) and
    ``client_ip`` (the forwarded client's behind a trusted proxy, else the peer's)."""
    if client is None:
        return {"peer": "unknown", "client_ip": "unknown"}
    host, port = client
    peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {"peer": peer, "client_ip": sources.forwarded_for(host, forwarded) or host}


def describe_peer(fields: dict[str, str]) -> str:
    """``peer_fields`` as the text line shows them: ``203.0.113.7 via 10.0.0.2:41234``
    behind a trusted proxy, else the peer, ``127.0.0.1:51234``."""
    peer, client_ip = fields["peer"], fields["client_ip"]
    if client_ip == "unknown" or peer.rpartition(":")[0].strip("[]") == client_ip:
        return peer
    return f"{client_ip} via {peer}"
