"""Make `infra` (the Pulumi program's package) and the harness importable for these tests."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE.parents[2], HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
