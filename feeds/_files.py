"""Reading the feeds' input files: TOML tables checked field by field, with errors
that name the file, the entry and the field."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

#: Largest input file (rules, portfolio) the feeds read: far above any hand-written one.
MAX_FILE_BYTES: Final = 4 * 1024 * 1024


def read_text(path: Path, *, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of ``path``; :exc:`ValueError` naming the file when it cannot be
    read, is larger than ``limit`` bytes or is not UTF-8."""
    try:
        with path.open("rb") as file:
            raw = file.read(limit + 1)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise ValueError(f"{path}: larger than {limit} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None


def load_toml(path: Path) -> dict[str, Any]:
    """Parse the TOML file ``path``; :exc:`ValueError` naming the file on any problem."""
    try:
        return tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None


class Fields:
    """Typed access to one table of an input file; every error names ``where``."""

    def __init__(self, table: object, where: str) -> None:
        if not isinstance(table, Mapping):
            raise ValueError(f"{where} must be a table, got {type(table).__name__}")
        self._table: Mapping[str, Any] = table
        self.where = where

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(set(self._table) - allowed)
        if unknown:
            names = ", ".join(sorted(allowed))
            raise ValueError(f"{self.where}: unknown field {unknown[0]!r} (allowed: {names})")

    def has(self, key: str) -> bool:
        return key in self._table

    def string(self, key: str, default: str | None = None) -> str:
        value = self._table.get(key, default)
        if value is None:
            raise ValueError(f"{self.where}: missing field {key!r}")
        if not isinstance(value, str):
            raise ValueError(f"{self.where}.{key} must be a string, got {value!r}")
        return value

    def number(self, key: str, default: float | None = None) -> float:
        value = self._table.get(key, default)
        if value is None:
            raise ValueError(f"{self.where}: missing field {key!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{self.where}.{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{self.where}.{key} must be finite, got {value!r}")
        return float(value)

    def raw(self, key: str) -> Any:
        return self._table.get(key)
