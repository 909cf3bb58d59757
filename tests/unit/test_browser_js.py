"""The browser client's backoff and the demo page's wording, run in Node (no browser)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "js" / "words.test.mjs"


def test_backoff_and_wording() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs Node.js (CI installs it)")
    result = subprocess.run([node, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"
