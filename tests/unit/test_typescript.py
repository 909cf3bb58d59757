"""The browser client's TypeScript declarations and the React example in docs/.

tsc (pinned in tests/typescript/package.json; CI runs `npm ci` there) type-checks
docs/react-example.tsx against server/statebus/static/statebus.d.ts with React's own
types, so the example in the docs cannot drift from the declarations.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TS_DIR = ROOT / "tests" / "typescript"
STATIC = ROOT / "server" / "statebus" / "static"
TSC = TS_DIR / "node_modules" / ".bin" / "tsc"


def tsc() -> Path:
    if not TSC.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("needs Node.js and npm (CI installs them; `npm ci` in tests/typescript)")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TS_DIR, check=True, timeout=600)
    return TSC


def test_react_example_type_checks_against_the_declarations() -> None:
    result = subprocess.run(
        [str(tsc()), "-p", str(TS_DIR / "tsconfig.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_declarations_name_every_export_of_the_client() -> None:
    js = (STATIC / "statebus.js").read_text()
    dts = (STATIC / "statebus.d.ts").read_text()
    exported = set(re.findall(r"^export function (\w+)", js, re.MULTILINE))
    declared = set(re.findall(r"^export function (\w+)", dts, re.MULTILINE))
    assert exported == declared
    assert exported >= {"connect", "decodeJwt"}
