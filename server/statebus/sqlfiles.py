"""Reads statebus's SQL from the `sql/` folder: migrations, trigger files, named queries.

SQL stays in .sql files, read as SQL. Nothing here builds SQL from strings.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import LiteralString, cast

_PACKAGED = Path(__file__).parent / "sql"  # where the wheel puts it
_SOURCE = Path(__file__).parents[2] / "sql"  # an editable checkout (server/statebus/..)
SQL_DIR = _PACKAGED if _PACKAGED.is_dir() else _SOURCE

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_QUERY_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def read(name: str) -> str:
    """One file under sql/, e.g. `bootstrap.sql`."""
    return (SQL_DIR / name).read_text(encoding="utf-8")


def migrations() -> list[Migration]:
    """Numbered files of sql/migrations/, in order; a repeated number or a stray name is an
    error. Gaps are allowed: numbers are reserved per branch, and a branch may land before
    the one holding a lower number (their migrations touch separate objects)."""
    found: list[Migration] = []
    for path in sorted((SQL_DIR / "migrations").glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file name must look like 0001_name.sql: {path.name}")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    for before, migration in zip(found, found[1:], strict=False):
        if migration.version == before.version:
            raise ValueError(f"two migrations are numbered {migration.version:04d}")
    return found


def repair(migration: Migration, applied_checksum: str) -> str | None:
    """SQL that brings a database whose `migration` was applied from an earlier edit of
    the file (known by its checksum) to what the current file makes; None if unknown.
    sql/repairs/NNNN_name.<first 8 hex digits of the old checksum>.sql."""
    path = (
        SQL_DIR / "repairs" / f"{migration.version:04d}_{migration.name}.{applied_checksum[:8]}.sql"
    )
    return path.read_text(encoding="utf-8") if path.is_file() else None


def routines() -> list[tuple[str, str]]:
    """The files of sql/triggers/ as (name, sql), in name order."""
    return [
        (path.name, path.read_text(encoding="utf-8"))
        for path in sorted((SQL_DIR / "triggers").glob("*.sql"))
    ]


@cache
def queries() -> dict[str, LiteralString]:
    """Blocks of sql/queries*.sql, keyed by their `-- name:` header (unique across files)."""
    found: dict[str, LiteralString] = {}
    for path in sorted(SQL_DIR.glob("queries*.sql")):
        parts = _QUERY_HEADER.split(path.read_text(encoding="utf-8"))
        # split() gives [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in found:
                raise ValueError(f"query {name!r} is defined twice ({path.name})")
            found[name] = cast(LiteralString, body.strip())
    return found
