"""``test_websocket.py`` is the spec's acceptance script, run with ``python``, not a
pytest module: pytest must not import it (its checks need a running gateway and are
not tests). ``test_acceptance.py`` runs it as a script against a gateway it starts."""

from __future__ import annotations

collect_ignore = ["test_websocket.py"]
