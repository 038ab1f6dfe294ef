"""A log that a flood cannot fill: refused origins, failed authentications, refused
HTTP API calls."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

#: Lines a :class:`ThrottledLog` writes per window, and the window's seconds.
LINES: Final = 10
WINDOW: Final = 10.0


class ThrottledLog:
    """Writes at most ``lines`` lines per ``window`` seconds of ``clock`` to ``logger``,
    at INFO (:meth:`info`) or WARNING (:meth:`warning`), one budget for both; past that
    it counts them, and the first line of the next window says how many were left
    out. Never blocks."""

    __slots__ = ("_clock", "_left_out", "_lines", "_logger", "_max_lines", "_start", "_window")

    def __init__(
        self,
        logger: logging.Logger,
        *,
        clock: Callable[[], float],
        lines: int = LINES,
        window: float = WINDOW,
    ) -> None:
        self._logger = logger
        self._clock = clock
        self._max_lines = lines
        self._window = window
        self._start = -window
        self._lines = 0
        self._left_out = 0

    def info(self, message: str, *args: object) -> None:
        self._write(logging.INFO, message, args)

    def warning(self, message: str, *args: object) -> None:
        self._write(logging.WARNING, message, args)

    def _write(self, level: int, message: str, args: tuple[object, ...]) -> None:
        now = self._clock()
        if now - self._start >= self._window:
            if self._left_out:
                self._logger.log(
                    level,
                    "%d more lines like these were left out of the log (at most %d per %g s)",
                    self._left_out,
                    self._max_lines,
                    self._window,
                )
            self._start, self._lines, self._left_out = now, 0, 0
        if self._lines < self._max_lines:
            self._lines += 1
            # The line names the caller's file and line, not this one's.
            self._logger.log(level, message, *args, stacklevel=3)
        else:
            self._left_out += 1
