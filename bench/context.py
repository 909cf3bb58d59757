"""What every session of a run shares, and the small helpers they all use."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import profiling
from bench.database import Databases
from bench.procs import Child, Processes, rss_bytes
from bench.results import Results
from bench.servers import Server, start
from bench.sizes import Sizes


@dataclass
class Context:
    sizes: Sizes
    procs: Processes
    dbs: Databases
    env: dict[str, str]  # for statebus processes: STATEBUS_HOME, STATEBUS_JWT_SECRET
    secret: str
    run_dir: Path
    results: Results
    selected: frozenset[str]
    profile: bool = False
    _profiles: int = 0  # profiles written so far: their files' order

    async def server(self, system: str, max_per_user: int = 32) -> Server:
        return await start(self.procs, system, self.dbs.dsn(system), self.env, max_per_user)

    @contextlib.asynccontextmanager
    async def profiled(self, server: Server, phase: str) -> AsyncIterator[None]:
        """With --profile: py-spy samples the server during the measured phase only
        (not while its sockets connect)."""
        if not self.profile:
            yield
            return
        self._profiles += 1
        out = self.run_dir / "profiles" / f"{self._profiles:02d}-{server.system}-{phase}.txt"
        profiler = await profiling.start(self.procs, server.pid, out)
        try:
            yield
        finally:
            await profiling.stop(self.procs, profiler)

    async def stop(self, server: Server) -> None:
        # A short grace: uvicorn waits forever for the naive relay's socket tasks, which
        # never notice a client that left (they only send), and neither server holds
        # anything worth a graceful exit here.
        await self.procs.stop(server.child, grace=3.0)

    def note(self, **detail: Any) -> None:
        self.results.details.append(detail)
        print("  " + " ".join(f"{k}={_short(v)}" for k, v in detail.items()), flush=True)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


async def output_of(child: Child, timeout: float) -> str:
    """Waits for a piped child to exit 0 and returns its stdout."""
    try:
        out, _ = await asyncio.wait_for(child.proc.communicate(), timeout)
    except TimeoutError:
        raise child.failure(f"did not finish within {timeout:.0f}s") from None
    if child.proc.returncode != 0:
        raise child.failure(f"exited with {child.proc.returncode}")
    return out.decode()


async def json_output(child: Child, timeout: float) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(await output_of(child, timeout))
    return result


async def settled_rss(pid: int, timeout: float = 15.0) -> int:
    """RSS once two reads half a second apart differ by under 1% (or at the deadline)."""
    deadline = time.monotonic() + timeout
    last = rss_bytes(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = rss_bytes(pid)
        if abs(now - last) < 0.01 * last:
            return now
        last = now
    return last
