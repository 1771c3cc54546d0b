"""``python -m benchmarks.cli`` is ``lossagent``."""

import sys

from benchmarks.cli import main

sys.exit(main())
