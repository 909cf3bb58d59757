"""Every code block in README.md and docs/ says whether it runs (tests/docblocks.py), and
the ones that need no server are checked here: Python compiles, JSON shapes parse,
TypeScript and JavaScript type-check against statebus.d.ts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests import docblocks
from tests.unit.test_typescript import TS_DIR, tsc

# Names a browser snippet takes from the page around it.
PRELUDE = """declare const token: string;
declare function render(snapshot: import("/statebus.js").Snapshot): void;
export {};
"""


def test_every_block_says_what_it_is() -> None:
    for path in docblocks.documents():
        assert docblocks.indented_code(path) == [], f"{path.name}: fence these blocks"
    kinds = docblocks.RUN | docblocks.TYPED | docblocks.SHOWN
    for block in docblocks.all_blocks():
        assert block.language in kinds, f"{block.where}: fence info {block.language!r}"
        assert block.mode in docblocks.MODES, f"{block.where}: mode {block.mode!r}"
        if block.mode == "until-stopped":
            assert block.language in {"sh", "python"}, block.where


def test_the_docs_run_something() -> None:
    running = [b for b in docblocks.all_blocks() if b.runs]
    assert sum(b.language == "python" for b in running) >= 3
    assert sum(b.language == "sql" for b in running) >= 5
    assert sum(b.path.name == "README.md" for b in running) >= 6


@pytest.mark.parametrize("block", docblocks.all_blocks(), ids=lambda b: b.where)
def test_python_compiles_and_json_parses(block: docblocks.Block) -> None:
    if block.language == "python":
        compile(block.code, block.where, "exec")
    elif block.language == "json" and "..." not in block.code and "<" not in block.code:
        try:
            json.loads(block.code)
        except json.JSONDecodeError:  # several messages, one per line
            for line in filter(str.strip, block.code.split("\n")):
                json.loads(line)


def test_browser_snippets_type_check(tmp_path: Path) -> None:
    typed = [b for b in docblocks.all_blocks() if b.language in docblocks.TYPED]
    assert typed, "no browser snippets found"
    files = []
    for n, block in enumerate(typed):
        target = tmp_path / f"block{n}.{'tsx' if block.language in {'tsx', 'jsx'} else 'ts'}"
        target.write_text(f"// {block.where}\n{PRELUDE}{block.code}", encoding="utf-8")
        files.append(str(target))
    config = json.loads((TS_DIR / "tsconfig.json").read_text())
    options = config["compilerOptions"]
    options["baseUrl"] = str(TS_DIR)  # the module paths keep meaning what they mean there
    options["typeRoots"] = [str(TS_DIR / "node_modules" / "@types")]
    config["files"] = [*files, str(docblocks.ROOT / "server/statebus/static/statebus.d.ts")]
    (tmp_path / "tsconfig.json").write_text(json.dumps(config), encoding="utf-8")
    result = subprocess.run(
        [str(tsc()), "-p", str(tmp_path / "tsconfig.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_sets_up_a_venv_and_enters_it_in_every_shell() -> None:
    readme = docblocks.ROOT / "README.md"
    first = docblocks.blocks(readme)[0].code.split("\n")
    # Two commands a person can paste: make and enter the venv, then install and run.
    assert first[0] == "python3 -m venv .venv && . .venv/bin/activate"
    assert first[1].startswith("pip install -e '.[dev]' && statebus serve --demo")
    assert first[2].startswith("pip install -e '.[dev]' && pytest")  # CI runs this one
    text = readme.read_text(encoding="utf-8")
    shells = [b for b in docblocks.blocks(readme) if b.code.startswith(". .venv/bin/activate\n")]
    assert len(shells) >= 2 and "each one starts with\n`. .venv/bin/activate`" in text
    assert "statebus reconcile" in text and "When Stripe and the database disagree" in text
