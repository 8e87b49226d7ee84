"""Refresh the README's screenshots: ``python docs/screenshots/make.py`` from the repository root.

Runs the screenshot test against the real application (it needs what the test suite needs: a
PostgreSQL server, Debian's chromium and the playwright package) and writes the PNGs here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def main() -> int:
    env = {**os.environ, "PROVISIONER_SCREENSHOTS": str(HERE)}
    command = [sys.executable, "-m", "pytest", "-q", "tests/web/test_screenshots.py"]
    return subprocess.call(command, cwd=ROOT, env=env)  # noqa: S603 (our own interpreter)


if __name__ == "__main__":
    sys.exit(main())
