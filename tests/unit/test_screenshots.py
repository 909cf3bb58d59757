"""docs/demo.png and docs/demo-disconnected.png show the page as it is: the hash of the
page's files that scripts/screenshots.py wrote with them must still match."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def screenshots_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("screenshots", ROOT / "scripts/screenshots.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("screenshots", module)
    spec.loader.exec_module(module)
    return module


def test_screenshots_were_taken_of_the_page_as_it_is() -> None:
    script = screenshots_script()
    for name in ("demo.png", "demo-disconnected.png"):
        assert (ROOT / "docs" / name).stat().st_size > 10_000, name
    recorded = script.HASH_FILE.read_text(encoding="utf-8")
    assert recorded == script.hash_line(), (
        "the demo page changed since docs/demo.png and docs/demo-disconnected.png were"
        " taken: run `python scripts/screenshots.py` and commit what it writes"
    )
