"""docs/architecture.md's file tables, held against the tree.

Every migration, every trigger file and every Python module of the package is named in
the doc's tables, and every `.sql` / `.py` file its tables or its data-path diagram
name exists: a file added, renamed or removed without the doc fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
SQL = ROOT / "sql"
PACKAGE = ROOT / "server" / "statebus"

TICKED = re.compile(r"`([^`\s]+\.(?:py|sql))`")
DIAGRAM_MODULE = re.compile(r"\b([a-z_]+\.py)\b")


def table_first_cells(text: str) -> list[str]:
    """The first cell of every table row (header and rule rows left out)."""
    cells = []
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith(("| file |", "| module |")):
            cells.append(line.split("|")[1])
    return cells


def named_files(text: str) -> set[str]:
    return {name for cell in table_first_cells(text) for name in TICKED.findall(cell)}


def data_path_diagram(text: str) -> str:
    section = text.split("## The data path", 1)[1]
    return section.split("```text", 1)[1].split("```", 1)[0]


def resolve(name: str) -> Path:
    """A named file as the doc's tables name it: `.sql` under sql/, `.py` under the package."""
    return (SQL if name.endswith(".sql") else PACKAGE) / name


def test_every_migration_trigger_file_and_module_is_named() -> None:
    named = named_files(DOC.read_text(encoding="utf-8"))
    expected = {
        *(f"migrations/{p.name}" for p in SQL.glob("migrations/*.sql")),
        *(f"triggers/{p.name}" for p in SQL.glob("triggers/*.sql")),
        *(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")),
    }
    missing = sorted(expected - named)
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_nothing_named_that_does_not_exist() -> None:
    text = DOC.read_text(encoding="utf-8")
    ghosts = sorted(name for name in named_files(text) if not resolve(name).is_file())
    assert not ghosts, f"docs/architecture.md names files that do not exist: {ghosts}"
    diagram = set(DIAGRAM_MODULE.findall(data_path_diagram(text)))
    assert {"listener.py", "hub.py", "supervisor.py"} <= diagram
    ghosts = sorted(name for name in diagram if not (PACKAGE / name).is_file())
    assert not ghosts, f"the data-path diagram names modules that do not exist: {ghosts}"


def test_the_checks_see_a_missing_and_a_ghost_file() -> None:
    table = "| file | concern |\n|---|---|\n| `migrations/0001_tables.sql`, `hub.py` | x |\n"
    assert named_files(table) == {"migrations/0001_tables.sql", "hub.py"}
    assert resolve("migrations/0001_tables.sql").is_file()
    assert not resolve("migrations/0004_privileges.sql").is_file()
    assert not resolve("stripe/nothing.py").is_file()
