"""`--profile`: py-spy samples each server process of a run (`pip install py-spy`).

Each measured phase gets one collapsed-stack file (`<n>-<system>-<phase>.txt` under the
run directory's profiles/), and `summary()` prints where the samples were.
py-spy runs with --nonblocking, so the server is never paused to be sampled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

from bench.procs import Child, Processes

ATTACH_TIMEOUT = 20.0


def available() -> bool:
    return shutil.which("py-spy") is not None


async def start(procs: Processes, pid: int, out: Path) -> Child:
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = ["py-spy", "record", "--pid", str(pid), "--rate", "100", "--nonblocking"]
    argv += ["--format", "raw", "--output", str(out)]
    child = await procs.spawn("py-spy", argv)
    # py-spy announces itself once attached; samples before that would be lost.
    deadline = time.monotonic() + ATTACH_TIMEOUT
    while "Sampling process" not in child.log.read_text(errors="replace"):
        if not child.alive() or time.monotonic() > deadline:
            raise child.failure("did not start sampling")
        await asyncio.sleep(0.05)
    return child


async def stop(procs: Processes, child: Child) -> None:
    """SIGINT makes py-spy write its file; then it is reaped like any child."""
    if child.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.proc.wait(), 30)
    await procs.stop(child, grace=1.0)


def summary(path: Path, top: int = 12) -> str:
    """The frames with the most samples on top of the stack (self), and the most samples
    anywhere in the stack (inclusive), from one collapsed-stack file."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            anywhere[frame] += n
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples", "  self:"]
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in anywhere.most_common(top)]
    return "\n".join(lines)
