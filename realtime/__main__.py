"""``python -m realtime``: the same as the ``realtime`` command."""

from __future__ import annotations

from ._cli import main

main()
