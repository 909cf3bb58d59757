"""`statebus serve` takes its port first, before it prints or starts anything.

The listening socket is bound here and handed to uvicorn, so a port that is taken
fails the start at once with a sentence saying who holds it (this checkout's running
server, or any process /proc names) and which `--port` is free, instead of a banner
with a token for a page that another process answers and uvicorn's bare errno later.
Reading /proc is best effort: where it says nothing, the message still names a port.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from statebus import address

BACKLOG = 2048  # uvicorn's default


class PortTaken(Exception):
    """The port cannot be bound; the message says by whom and what to do instead."""


def claim(home: Path, host: str, port: int, *, command: str = "statebus serve") -> socket.socket:
    """A socket bound and listening on host:port, or PortTaken with the whole story."""
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise PortTaken(f"cannot listen on {host}: {exc.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As uvicorn does: a restart must not wait for the old connections' TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise PortTaken(explain(home, host, port, exc, command)) from None
    sock.set_inheritable(True)
    return sock


def explain(home: Path, host: str, port: int, exc: OSError, command: str) -> str:
    if exc.errno == 13:  # EACCES: below 1024 without the privilege
        return f"may not listen on port {port} (below 1024 needs privileges); use --port {port_after(host, 1023)}"
    if exc.errno != 98:  # not EADDRINUSE: say what the system said
        return f"cannot listen on {host}:{port}: {exc.strerror}"
    holder = holder_of(port)
    recorded = address.recorded_by(home)
    if holder is not None and recorded is not None and recorded[1] == holder[0]:
        who = f"this checkout's statebus server (pid {holder[0]}, {recorded[0]})"
    elif holder is not None:
        who = f"pid {holder[0]} ({holder[1]})"
    else:
        who = "another process"
    return (
        f"port {port} on {host} is already in use by {who}.\n"
        f"  Stop that one, or start this one on a free port: {command} --port {port_after(host, port)}"
    )


def port_after(host: str, port: int) -> int:
    """The first port above `port` that can be bound on `host` right now."""
    for candidate in range(port + 1, min(port + 200, 65535)):
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1" if host in ("localhost", "") else host, candidate))
            return candidate
    return 0


def holder_of(port: int) -> tuple[int, str] | None:
    """(pid, command line) of the process listening on TCP `port`, when /proc says."""
    inodes = listening_inodes(port)
    if not inodes:
        return None
    proc = Path("/proc")
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(entry.name), command_line(entry)
    return None


def listening_inodes(port: int) -> set[str]:
    """Socket inodes in LISTEN state (0A) on `port`, from /proc/net/tcp and tcp6."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if (
                    len(fields) > 9
                    and fields[3] == "0A"
                    and int(fields[1].rsplit(":", 1)[1], 16) == port
                ):
                    found.add(fields[9])
    return found


def command_line(entry: Path) -> str:
    words = (entry / "cmdline").read_bytes().split(b"\0")
    text = " ".join(w.decode(errors="replace") for w in words if w)
    if "statebus" in text and " serve" in text:
        text = "statebus serve" + text.split(" serve", 1)[1]  # not the interpreter's path
    return text[:80] or "?"
