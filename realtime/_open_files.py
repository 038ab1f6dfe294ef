"""The open files limit, and how many connections it leaves room for.

Every connection is a file descriptor. A gateway allowed more connections than its
process may open files hangs the ones past the limit (accept fails with EMFILE, so
they wait unanswered) and can no longer answer ``/health``. So at start the soft
limit is raised to the hard one where the system allows it, and the connections the
gateway accepts are capped below the limit, keeping room for its own files (logs,
the dashboard's files, HTTP requests, the listening sockets): a connection past the
cap is answered 503 with ``Retry-After``, like one past ``--max-connections``.
"""

from __future__ import annotations

import resource
from typing import Final

#: Descriptors kept for the gateway's own files (about 30: the event loop, logs, the
#: listening sockets) and for HTTP requests such as ``/health`` at the cap.
RESERVED_FILES: Final = 64


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard one, where allowed; return the
    soft limit (before, after). An unlimited hard limit raises it no further than
    the system's maximum allows, and a refusal leaves it as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or soft == resource.RLIM_INFINITY:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # e.g. a hard limit of RLIM_INFINITY above fs.nr_open
        return soft, soft
    return soft, hard


def connection_cap(max_connections: int, open_files: int) -> int:
    """The most connections to accept at once: ``max_connections``, or fewer when the
    open files limit leaves no room for that many plus the gateway's own."""
    if open_files == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, open_files - RESERVED_FILES))
