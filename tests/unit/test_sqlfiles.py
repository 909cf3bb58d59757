"""sqlfiles, the stage that reads sql/: migrations in order, repairs by checksum, trigger
files in name order, named query blocks; and a clear error for every malformed tree."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from statebus import sqlfiles


@pytest.fixture
def sql_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty sql/ tree read in place of the real one (the query cache cleared around)."""
    for sub in ("migrations", "triggers", "repairs"):
        (tmp_path / sub).mkdir()
    monkeypatch.setattr(sqlfiles, "SQL_DIR", tmp_path)
    sqlfiles.queries.cache_clear()
    yield tmp_path
    sqlfiles.queries.cache_clear()


def test_the_real_migrations_are_in_order_with_their_checksums() -> None:
    found = sqlfiles.migrations()
    versions = [m.version for m in found]
    assert versions == sorted(set(versions)) and versions[0] == 1
    names = sorted(p.name for p in (sqlfiles.SQL_DIR / "migrations").glob("*.sql"))
    assert [f"{m.version:04d}_{m.name}.sql" for m in found] == names
    first = found[0]
    assert first.checksum == hashlib.sha256(first.sql.encode()).hexdigest()


def test_gaps_are_allowed_but_a_repeated_number_or_a_stray_name_is_refused(
    sql_dir: Path,
) -> None:
    (sql_dir / "migrations" / "0001_a.sql").write_text("SELECT 1;")
    (sql_dir / "migrations" / "0003_c.sql").write_text("SELECT 3;")
    assert [(m.version, m.name) for m in sqlfiles.migrations()] == [(1, "a"), (3, "c")]
    (sql_dir / "migrations" / "0003_again.sql").write_text("SELECT 3;")
    with pytest.raises(ValueError, match="two migrations are numbered 0003"):
        sqlfiles.migrations()
    (sql_dir / "migrations" / "0003_again.sql").unlink()
    (sql_dir / "migrations" / "4_Bad-Name.sql").write_text("SELECT 4;")
    with pytest.raises(ValueError, match="must look like 0001_name.sql: 4_Bad-Name.sql"):
        sqlfiles.migrations()


def test_a_repair_is_found_by_the_applied_checksum_prefix(sql_dir: Path) -> None:
    (sql_dir / "repairs" / "0002_b.abcdef12.sql").write_text("ALTER TABLE x ADD y int;")
    migration = sqlfiles.Migration(2, "b", "CREATE TABLE x ();")
    assert sqlfiles.repair(migration, "abcdef12" + "0" * 56) == "ALTER TABLE x ADD y int;"
    assert sqlfiles.repair(migration, "12345678" + "0" * 56) is None


def test_the_real_repairs_name_real_migrations() -> None:
    migrations = {f"{m.version:04d}_{m.name}" for m in sqlfiles.migrations()}
    for path in (sqlfiles.SQL_DIR / "repairs").glob("*.sql"):
        stem, checksum = path.stem.split(".")
        assert stem in migrations and len(checksum) == 8, path.name


def test_trigger_files_come_in_name_order_privileges_last() -> None:
    names = [name for name, _ in sqlfiles.routines()]
    assert names == sorted(names)
    assert names[-1] == "90_privileges.sql" and "10_capture.sql" in names


def test_query_blocks_are_named_stripped_and_unique(sql_dir: Path) -> None:
    (sql_dir / "queries.sql").write_text(
        "-- preamble, not a query\n-- name: one\nSELECT 1;\n\n-- name: two\nSELECT 2\nFROM t;\n"
    )
    (sql_dir / "queries_more.sql").write_text("-- name: three\nSELECT 3;\n")
    assert sqlfiles.queries() == {
        "one": "SELECT 1;",
        "two": "SELECT 2\nFROM t;",
        "three": "SELECT 3;",
    }
    sqlfiles.queries.cache_clear()
    (sql_dir / "queries_more.sql").write_text("-- name: one\nSELECT 11;\n")
    with pytest.raises(ValueError, match="query 'one' is defined twice"):
        sqlfiles.queries()


def test_every_real_query_has_a_body() -> None:
    found = sqlfiles.queries()
    assert "envelopes" in found
    assert all(body for body in found.values())
