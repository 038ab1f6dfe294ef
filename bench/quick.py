"""The quick benchmark: every scenario against every server, reduced (``make bench-quick``).

    python -m bench.quick [--servers gateway,node-ws] [--scenarios s1,s2]

Same as ``python -m bench.run --quick``; kept for the old entry point.
"""

from __future__ import annotations

import sys

from bench.run import main

if __name__ == "__main__":
    sys.argv.insert(1, "--quick")
    main()
