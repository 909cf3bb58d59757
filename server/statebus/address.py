"""Where `statebus serve` listens, recorded in $STATEBUS_HOME so `tail` can find it.

The file (`serve.url`: the socket URL, then `pid <n>`) belongs to the process that wrote
it: a server removes it on the way out only while it still names that server's pid, so
a second `serve` that fails or stops never takes the first one's address away.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

DEFAULT = "ws://127.0.0.1:8000/v1/ws"
FILE = "serve.url"


@contextlib.contextmanager
def recorded(home: Path, host: str, port: int) -> Iterator[None]:
    """Records the socket URL for the duration of `statebus serve`."""
    path = home / FILE
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    home.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    path.write_text(f"ws://{shown}:{port}/v1/ws\npid {pid}\n", encoding="utf-8")
    try:
        yield
    finally:
        mine = recorded_by(home)
        if mine is not None and mine[1] == pid:
            path.unlink(missing_ok=True)


def recorded_by(home: Path) -> tuple[str, int | None] | None:
    """(socket URL, pid of the server that wrote it) from `serve.url`, if there is one."""
    try:
        lines = (home / FILE).read_text(encoding="utf-8").split("\n")
    except OSError:
        return None
    url = lines[0].strip()
    if not url:
        return None
    words = lines[1].split() if len(lines) > 1 else []
    pid = int(words[1]) if len(words) == 2 and words[0] == "pid" and words[1].isdigit() else None
    return url, pid


def socket_url(home: Path) -> str:
    """The URL the running `statebus serve` recorded, else the default."""
    found = recorded_by(home)
    return found[0] if found else DEFAULT
