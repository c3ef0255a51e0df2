"""pyflakes over the code: an undefined name or a missing import fails here, not on a host."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_no_undefined_names_or_unused_imports():
    r = subprocess.run([sys.executable, "-m", "pyflakes", "ferry", "infra", "benchmarks", "examples"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
