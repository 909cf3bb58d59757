"""The repository documents itself: its links resolve, and nothing points outside it.

Every relative link in the Markdown files (README.md, docs/ and the rest) must name a
file or folder inside the repository, and an `#anchor` into a Markdown file must name
one of its headings (as GitHub renders them). No tracked file may refer to the
specification this project was first written against.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
HTML = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def tracked() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    return [ROOT / name.decode() for name in names if name and (ROOT / name.decode()).is_file()]


def markdown_files() -> list[Path]:
    return sorted(path for path in tracked() if path.suffix == ".md")


def links(text: str) -> list[str]:
    """Link targets outside code blocks and code spans."""
    prose = CODE_SPAN.sub("", FENCE.sub("", text))
    return [m.group(1) for pattern in (INLINE, REFERENCE, HTML) for m in pattern.finditer(prose)]


def anchors(markdown: str) -> set[str]:
    """Heading anchors as GitHub makes them: lower case, punctuation dropped, - for spaces."""
    seen: dict[str, int] = {}
    found = set()
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", markdown), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken(source: Path, target: str) -> str | None:
    """Why `target`, linked from `source`, does not resolve; None when it does."""
    if SCHEME.match(target) or target.startswith("//"):
        return None  # a URL, not a path in this repository
    path_part, _, fragment = target.partition("#")
    path_part = unquote(path_part.split("?", 1)[0])
    if path_part.startswith("/"):
        return "absolute path"
    resolved = (source.parent / path_part).resolve() if path_part else source
    if not resolved.is_relative_to(ROOT):
        return "leaves the repository"
    if not resolved.exists():
        return "no such file"
    if fragment and resolved.suffix == ".md" and fragment not in anchors(resolved.read_text()):
        return f"no heading #{fragment}"
    return None


def test_the_readme_and_docs_are_checked() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in markdown_files()}
    assert "README.md" in names
    assert {"docs/protocol.md", "docs/configuration.md"} <= names


@pytest.mark.parametrize(
    "source", markdown_files(), ids=lambda path: path.relative_to(ROOT).as_posix()
)
def test_every_relative_link_resolves(source: Path) -> None:
    problems = [
        f"{target}: {why}"
        for target in links(source.read_text())
        if (why := broken(source, target)) is not None
    ]
    assert not problems, f"{source.relative_to(ROOT)}: " + "; ".join(problems)


def test_the_readme_links_to_the_docs() -> None:
    targets = {target.partition("#")[0] for target in links((ROOT / "README.md").read_text())}
    for page in ("protocol", "configuration", "architecture", "operations"):
        assert f"docs/{page}.md" in targets, f"README.md does not link docs/{page}.md"


# Spelled in pieces so that this file does not contain what it looks for.
FORBIDDEN = ("contract" + " section", "contract" + ".md", ".." + "/shared")


def test_no_file_refers_to_anything_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {word!r}"
        for path in tracked()
        for word in FORBIDDEN
        if word.encode() in path.read_bytes().lower()
    ]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("docs/protocol.md", None),
        ("https://example.com/x.md", None),
        ("#the-server", None),
        ("#nowhere", "no heading #nowhere"),
        ("../outside.md", "leaves the repository"),
        ("missing.md", "no such file"),
        ("/etc/passwd", "absolute path"),
    ],
)
def test_the_link_checker_itself(target: str, why: str | None) -> None:
    readme = ROOT / "README.md"
    if target == "#the-server":
        target = "#" + sorted(anchors(readme.read_text()))[0]
    if target == "docs/protocol.md" and not (ROOT / target).exists():
        target = "pyproject.toml"
    assert broken(readme, target) == why


def test_links_skip_code() -> None:
    text = "[a](one.md)\n\n```\n[b](two.md)\n```\n\nand `[c](three.md)` <a href='four.md'>"
    assert links(text) == ["one.md", "four.md"]


def test_anchor_slugs() -> None:
    assert anchors("# Try it\n## `statebus serve`: the server\n## Try it\n") == {
        "try-it",
        "statebus-serve-the-server",
        "try-it-1",
    }
