"""The previous release, built from its tag into a throwaway venv, for the upgrade drills.

RELEASES lists each release's tag and full commit. The previous release is the newest one
that is not this checkout's version. It is built from its tag when the clone has it, else
from the recorded commit; a clone with neither (a shallow one) fails the test saying so,
because a drill that silently did not run proves nothing.

The venv has no pip and no dependencies of its own: a .pth line lends it this venv's
site-packages (pip, hatchling, asyncpg, ...), and the release is installed into it without
its dependencies and without a build venv. About 2 s instead of about 15 s with build
isolation. The previous release's own `statebus` comes first on its path, so it never
imports this checkout's code.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
from dataclasses import dataclass
from pathlib import Path

from statebus import __version__

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Release:
    tag: str
    commit: str


def releases() -> list[Release]:
    lines = (ROOT / "RELEASES").read_text().splitlines()
    return [Release(*line.split()) for line in lines if line.strip() and not line.startswith("#")]


def previous() -> Release:
    older = [r for r in releases() if r.tag != f"v{__version__}"]
    assert older, f"RELEASES names no release before this one ({__version__})"
    return older[-1]


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=False)


def resolve(release: Release) -> str:
    """The commit to build: the tag's, else the recorded one; fails when the clone has neither."""
    for ref in (f"refs/tags/{release.tag}", release.commit):
        found = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if found.returncode == 0:
            commit = found.stdout.decode().strip()
            assert commit == release.commit, (
                f"tag {release.tag} names {commit}, RELEASES says {release.commit}"
            )
            return commit
    raise AssertionError(
        f"cannot build the previous release {release.tag}: this clone has neither the tag "
        f"nor commit {release.commit} (a shallow clone?). Fetch it: "
        f"git fetch --unshallow --tags, or git fetch origin {release.commit}"
    )


def build(release: Release, into: Path) -> Path:
    """Builds `release` under `into`; returns the venv's python."""
    archive = _git("archive", "--format=tar", resolve(release))
    assert archive.returncode == 0, archive.stderr.decode()
    source = into / "source"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(source, filter="data")
    venv = into / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "statebus_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
        + ["--no-build-isolation", "--disable-pip-version-check", str(source)],
        cwd=into,  # not this checkout: its sources must not shadow the release's
        check=True,
        capture_output=True,
    )
    return python


def migrate(python: Path, dsn: str, cwd: Path) -> None:
    """`statebus migrate` of the release whose venv `python` is."""
    done = subprocess.run(
        [str(python), "-m", "statebus.cli", "migrate"],
        env={"PATH": os.environ.get("PATH", ""), "STATEBUS_DATABASE_URL": dsn},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def queries(source: Path) -> dict[str, str]:
    """The named queries of a release's sql/queries*.sql (as statebus.sqlfiles reads them)."""
    found: dict[str, str] = {}
    for path in sorted((source / "sql").glob("queries*.sql")):
        parts = re.split(r"^-- name: (\w+)\s*$", path.read_text(), flags=re.MULTILINE)
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            found[name] = body.strip()
    return found
