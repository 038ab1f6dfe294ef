"""Server-to-client data frames, built once and shared by every subscriber.

A server frame is never masked (RFC 6455 section 5.1), so a message's frame is
the same bytes for every client that uses the same codec: the hub builds it once
per codec and every outbox holds a reference to it. Data frames never pass
through wsproto; its state only ever sees control frames.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["PING_FRAME", "build_frame"]

#: An unmasked ping frame with no payload, for the server's heartbeat.
PING_FRAME: Final = b"\x89\x00"

_HEADER_16: Final = struct.Struct("!BBH").pack
_HEADER_64: Final = struct.Struct("!BBQ").pack


def build_frame(payload: bytes, *, text: bool) -> bytes:
    """Build one complete server-to-client frame: FIN, opcode, length, payload.

    Unmasked and unfragmented, so the same bytes can be written to every
    client that uses the same codec. Pure; copies ``payload`` once.
    """
    first = 0x81 if text else 0x82
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return _HEADER_16(first, 126, length) + payload
    return _HEADER_64(first, 127, length) + payload
