"""The live failover demo (`bash .ci/demo`).

Placeholder until the demo issue lands: the engine and failover are built
first.  It says so instead of pretending.
"""

from __future__ import annotations

import sys


def main() -> int:
    print("hbd demo: not built yet. It arrives with the demo issue (a live two-node failover in "
          "network namespaces). Meanwhile try: .venv/bin/hbd --check-config --config-dir "
          "tests/data/capture --node n1", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
