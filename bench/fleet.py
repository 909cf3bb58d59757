"""The parent's side of the load generators: several bench/sockets.py processes as one.

Sockets are dealt round-robin over the processes. Every request has a deadline, and a
worker that answers with an error or dies fails the figure with its log's tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

from bench.procs import Child, Processes


class Fleet:
    def __init__(self, procs: Processes, workers: list[Child]) -> None:
        self.procs, self.workers = procs, workers

    @classmethod
    async def start(cls, procs: Processes, count: int) -> Fleet:
        workers = []
        for _ in range(count):
            argv = [sys.executable, "-m", "bench.sockets"]
            workers.append(await procs.spawn("sockets", argv, pipes=True))
        return cls(procs, workers)

    async def _ask(self, worker: Child, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        stdin, stdout = worker.proc.stdin, worker.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(cmd).encode() + b"\n")
        await stdin.drain()
        try:
            line = await asyncio.wait_for(stdout.readline(), timeout)
        except TimeoutError:
            raise worker.failure(f"did not answer {cmd['cmd']!r} within {timeout:.0f}s") from None
        if not line:
            raise worker.failure(f"exited during {cmd['cmd']!r}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise worker.failure(f"failed {cmd['cmd']!r}: {reply['error']}")
        return reply

    async def _all(self, cmd: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self._ask(w, cmd, timeout) for w in self.workers)))

    async def connect(
        self, system: str, url: str, users: list[str], secret: str, timeout: float
    ) -> float:
        """Opens one socket per entry of `users`; returns the seconds it took. Raises
        unless every socket got its first frame."""
        n = len(self.workers)
        replies = await asyncio.gather(
            *(
                self._ask(
                    worker,
                    {
                        "cmd": "connect",
                        "system": system,
                        "url": url,
                        "users": users[i::n],
                        "secret": secret,
                    },
                    timeout,
                )
                for i, worker in enumerate(self.workers)
            )
        )
        connected = sum(int(r["connected"]) for r in replies)
        if connected != len(users):
            errors = [e for r in replies for e in r["errors"]][:5]
            raise RuntimeError(f"{system}: {connected} of {len(users)} sockets opened: {errors}")
        return max(float(r["seconds"]) for r in replies)

    async def arm(self, *, record: bool = False) -> None:
        """From now on: note each socket's first frame (and keep all frames if `record`)."""
        await self._all({"cmd": "arm", "record": record}, 30)

    async def wait_current(self, timeout: float) -> tuple[int, int, int]:
        """(sockets with a frame since arm, sockets, CLOCK_MONOTONIC ns of the last first
        frame). Raises if a socket closed or got another user's frame."""
        replies = await self._all({"cmd": "wait_current", "timeout": timeout}, timeout + 30)
        closed = sum(int(r["closed"]) for r in replies)
        wrong = sum(int(r["wrong_user"]) for r in replies)
        if closed or wrong:
            raise RuntimeError(f"{closed} sockets closed, {wrong} got another user's frame")
        current = sum(int(r["current"]) for r in replies)
        total = sum(int(r["total"]) for r in replies)
        return current, total, max(int(r["last_ns"]) for r in replies)

    async def disconnect(self) -> None:
        """Closes every socket; the processes stay for the next connect."""
        await self._all({"cmd": "disconnect"}, 60)

    async def frames(self) -> int:
        return sum(int(r["frames"]) for r in await self._all({"cmd": "count"}, 30))

    async def collect(self) -> list[tuple[int, int]]:
        """(used, received) pairs of every recorded frame that carried a user_usage row."""
        replies = await self._all({"cmd": "collect"}, 120)
        closed = sum(int(r["closed"]) for r in replies)
        if closed:
            raise RuntimeError(f"{closed} sockets closed while recording")
        return [(int(u), int(t)) for r in replies for u, t in r["samples"]]

    async def close(self) -> None:
        """Every worker closes its sockets (all at once) and exits; stragglers are stopped."""

        async def leave(worker: Child) -> None:
            if worker.alive():
                try:
                    await self._ask(worker, {"cmd": "disconnect"}, 30)
                except (RuntimeError, OSError):
                    pass  # a dead or wedged worker is stopped below either way
                stdin = worker.proc.stdin
                if stdin is not None:
                    with contextlib.suppress(OSError):
                        stdin.close()  # EOF: the worker leaves its loop and exits
            await self.procs.stop(worker, grace=10)

        await asyncio.gather(*(leave(worker) for worker in self.workers))
