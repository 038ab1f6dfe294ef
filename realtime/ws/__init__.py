"""The WebSocket side of the gateway's port: one listener, request heads, limits per
source IP, the opening handshake, prepared data frames and open connections (Trio
streams with wsproto underneath). Everything that is not a WebSocket upgrade is
handed to hypercorn by the listener."""

from __future__ import annotations

from ._connection import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_INBOUND_LIMITS,
    ConnectionClosed,
    InboundLimits,
    WebSocketConnection,
)
from ._frames import PING_FRAME, build_frame
from ._handshake import accept_websocket, check_websocket_upgrade, reject_websocket
from ._head import BadRequest, RequestHead, parse_request_head
from ._listener import Listener, ListenerStatistics, WebSocketHandler, bind_shared, serve
from ._sources import SourceLimits, SourceStatistics, SourceTable, parse_networks

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_INBOUND_LIMITS",
    "PING_FRAME",
    "BadRequest",
    "ConnectionClosed",
    "InboundLimits",
    "Listener",
    "ListenerStatistics",
    "RequestHead",
    "SourceLimits",
    "SourceStatistics",
    "SourceTable",
    "WebSocketConnection",
    "WebSocketHandler",
    "accept_websocket",
    "bind_shared",
    "build_frame",
    "check_websocket_upgrade",
    "parse_networks",
    "parse_request_head",
    "reject_websocket",
    "serve",
]
