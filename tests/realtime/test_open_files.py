"""How many connections the open files limit leaves room for."""

from __future__ import annotations

import resource

import pytest

from realtime._open_files import RESERVED_FILES, connection_cap


@pytest.mark.parametrize(
    ("max_connections", "open_files", "cap"),
    [
        (50_000, 20_000, 20_000 - RESERVED_FILES),  # room kept for the gateway's own
        (50_000, 200, 200 - RESERVED_FILES),
        (1_000, 20_000, 1_000),  # the configured figure when the limit leaves room
        (50_000, 10, 1),  # a limit too small for the reserve still takes one
        (50_000, resource.RLIM_INFINITY, 50_000),
    ],
)
def test_the_cap_keeps_room_for_the_gateway(
    max_connections: int, open_files: int, cap: int
) -> None:
    assert connection_cap(max_connections, open_files) == cap
