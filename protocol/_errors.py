"""The two kinds of protocol error, split as h11 splits them."""

from __future__ import annotations

from ._codes import CloseCode, ErrorCode


class ProtocolError(Exception):
    """Base of the protocol's errors."""


class LocalProtocolError(ProtocolError):
    """We tried to build or send something the protocol does not allow: a bug on our side."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow.

    ``code`` is the machine-readable error code and ``message`` a sentence a person can
    act on; together they are the ``error`` reply. ``request_id`` is the request's ``id``
    when it could be read, so the reply can echo it. When ``close_code`` is set the
    input cannot be answered on the connection and the connection must be closed with
    that code instead (an oversized message is the one case).
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        request_id: str | int | None = None,
        close_code: CloseCode | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.close_code = close_code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value!r}, {self.message!r})"
