"""``python -m benchmarks``: the benchmark command line, the same as ``lossagent``.

``python -m benchmarks bench ...`` is ``lossagent bench ...``.
"""

from __future__ import annotations

import sys

from benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main())
