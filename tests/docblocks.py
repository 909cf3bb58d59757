"""The code blocks of README.md and docs/*.md, as the docs tests read them.

Every block is fenced, and its info string says what the tests do with it:

- `sh`, `python`, `sql`: run against a real server and database
  (tests/integration/test_docs_run.py);
- `sh until-stopped`, `python until-stopped`: a server or a follower that runs until
  stopped; it must start (its port answers, or it prints a line) and still be running;
- `ts`, `tsx`, `js`, `jsx`: type-checked against statebus.d.ts (tests/unit/test_docs_blocks.py);
- `text`, `json`: output, diagrams and message shapes, never run;
- `<language> no-run`: shown, not run, because it needs what a test cannot have here
  (Docker, PyPI, an identity provider, a live Stripe account) or takes an hour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = {"sh", "python", "sql"}
TYPED = {"ts", "tsx", "js", "jsx"}
SHOWN = {"text", "json"}
MODES = {"", "no-run", "until-stopped"}
FENCE = re.compile(r"^```(\S*)(?: (\S+))?\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    mode: str  # "", "no-run" or "until-stopped"
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language in RUN and self.mode != "no-run"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").split("\n")
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        end = i + 1
        while not lines[end].startswith("```"):
            end += 1
        code = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(path, i + 1, match[1], match[2] or "", code))
        i = end + 1
    return found


def indented_code(path: Path) -> list[int]:
    """Lines that open an indented (unfenced) code block: the tests cannot tell what
    those are, so the docs use none. List items' continuation lines do not count."""
    lines = path.read_text(encoding="utf-8").split("\n")
    found = []
    fenced = False
    for n, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("    ") or not line.strip():
            continue
        before = lines[n - 1] if n else ""
        if before.strip() == "" and not _in_list(lines, n):
            found.append(n + 1)
    return found


def _in_list(lines: list[str], n: int) -> bool:
    for line in reversed(lines[:n]):
        if not line.strip():
            continue
        if line.startswith("    "):
            continue
        return bool(re.match(r"^\s*([-*]|\d+\.) ", line))
    return False


def all_blocks() -> list[Block]:
    return [block for path in documents() for block in blocks(path)]
