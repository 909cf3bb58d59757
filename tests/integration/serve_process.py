"""`statebus serve` as a real process against a test database: for drills that signal it
(SIGSTOP, SIGTERM) or read its log lines, which an in-process server cannot show."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from statebus.auth import issue_token
from statebus.testing.server import SECRET, free_port
from tests.helpers import wait_for


@dataclass
class ServeProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def token(self, user_id: str) -> str:
        return issue_token(SECRET, user_id, ttl=3600)

    def log_lines(self, text: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if text in line]

    async def readyz(self, http: httpx.AsyncClient) -> tuple[int, str]:
        response = await http.get(f"{self.http}/readyz")
        return response.status_code, response.text

    async def metric(self, http: httpx.AsyncClient, name: str) -> float:
        """The value of one sample (`name` with labels, if any) in /metrics; 0 if absent."""
        for line in (await http.get(f"{self.http}/metrics")).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0


@asynccontextmanager
async def serve_process(
    dsn: str,
    *,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    python: Path | None = None,
) -> AsyncIterator[ServeProcess]:
    """Starts `statebus serve` on a free port with the tests' secret, waits for /readyz 200,
    and kills it (if still running) afterwards. `python`: another venv's interpreter (an
    earlier release's, previous_release.py) instead of this one."""
    home = Path(tempfile.mkdtemp(prefix="sbs", dir="/tmp"))
    log = home / "serve.log"
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith(("STATEBUS_", "STRIPE_"))}
    full |= {
        "STATEBUS_HOME": str(home),
        "STATEBUS_DATABASE_URL": dsn,
        "STATEBUS_JWT_SECRET": SECRET,
        **(env or {}),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(python or sys.executable), "-m", "statebus.cli", "serve", "--port", str(port)]
            + list(args),
            env=full,
            cwd=home,  # `-m` puts the working directory first on the path: not a checkout
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = ServeProcess(proc, port, log)
    try:
        async with httpx.AsyncClient(timeout=5) as http:

            async def ready() -> bool:
                assert proc.poll() is None, log.read_text()
                try:
                    return (await running.readyz(http))[0] == 200
                except httpx.TransportError:
                    return False

            await wait_for(ready, timeout=60, what="statebus serve ready")
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # in case a drill left it stopped
            proc.kill()
        await asyncio.get_running_loop().run_in_executor(None, proc.wait)
