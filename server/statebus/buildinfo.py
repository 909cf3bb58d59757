"""Which build is running: the installed version and, when known, the git commit.

The commit comes from STATEBUS_BUILD_COMMIT (set it when building an image), else from
the source checkout an editable install runs from, else it is "unknown".
"""

from __future__ import annotations

import os
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2]  # the checkout, for an editable install


@cache
def version() -> str:
    try:
        return installed_version("statebus")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0+unknown"


@cache
def commit() -> str:
    given = os.environ.get("STATEBUS_BUILD_COMMIT", "").strip()
    if given:
        return given[:40]
    if not (SOURCE / ".git").exists():
        return "unknown"
    try:
        found = subprocess.run(
            ["git", "-C", str(SOURCE), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return found.stdout.strip() or "unknown"
