"""Every child process of a run: started in its own process group, always ended.

A benchmark that dies half-way must not leave servers or load generators behind to
skew the next run. Children get a death signal when this process dies (even by
SIGKILL), and `Processes.close()` ends every group still alive, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
STREAM_LIMIT = 1 << 28  # replies carrying latency samples are single long lines


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident set size of one process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class Child:
    """One started process, its log file and (for workers) its stdin/stdout pipes."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name, self.proc, self.log = name, proc, log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.returncode is None

    def failure(self, what: str) -> RuntimeError:
        tail = log_tail(self.log)
        return RuntimeError(f"{self.name} (pid {self.pid}) {what}; log {self.log}:\n{tail}")


class Processes:
    """The registry of this run's children."""

    def __init__(self, log_dir: Path, cwd: Path) -> None:
        self.log_dir, self.cwd = log_dir, cwd
        self.children: list[Child] = []
        self._count = 0

    async def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        pipes: bool = False,
    ) -> Child:
        """Starts `argv`; stderr (and stdout unless `pipes`) go to a log file."""
        self._count += 1
        log = self.log_dir / f"{self._count:03d}-{name}.log"
        with log.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if pipes else sink,
                stderr=sink,
                env={**os.environ, **(env or {})},
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                limit=STREAM_LIMIT,
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    async def stop(self, child: Child, grace: float = 10.0) -> None:
        """SIGTERM to the child's group; SIGKILL if it is not gone within `grace` seconds."""
        if child.alive():
            self._signal(child, signal.SIGTERM)
            try:
                await asyncio.wait_for(child.proc.wait(), grace)
            except TimeoutError:
                self._signal(child, signal.SIGKILL)
                await asyncio.wait_for(child.proc.wait(), 10)
        # pgbench or a server may have left helpers in its group.
        self._signal(child, signal.SIGKILL)
        if child in self.children:
            self.children.remove(child)

    async def close(self) -> None:
        for child in list(self.children):
            with contextlib.suppress(Exception):
                await self.stop(child, grace=3.0)

    def kill_all_now(self) -> None:
        """For signal handlers and atexit: no awaiting, just end every group."""
        for child in self.children:
            self._signal(child, signal.SIGKILL)

    @staticmethod
    def _signal(child: Child, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signum)
