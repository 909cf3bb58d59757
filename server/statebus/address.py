"""Where `statebus serve` listens, recorded in $STATEBUS_HOME so `tail` can find it."""

from __future__ import annotations

import contextlib
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
    path.write_text(f"ws://{shown}:{port}/v1/ws\n", encoding="utf-8")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def socket_url(home: Path) -> str:
    """The URL the running `statebus serve` recorded, else the default."""
    try:
        return (home / FILE).read_text(encoding="utf-8").strip() or DEFAULT
    except OSError:
        return DEFAULT
