"""`python scripts/tier.py`, the README's way to see the tier: it starts three NATS
nodes, the embedded PostgreSQL with the demo, two relays and two edges, prints both
pages, and both edges serve the demo user's state; SIGTERM (like Ctrl-C) stops it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from statebus.client import Session
from statebus.core_messages import Snapshot
from statebus.serve import DEMO_USER
from statebus.testing.nats_cluster import quiet_ports

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow  # embedded PostgreSQL of its own; once, not in the PG 15 run


def two_free_ports() -> int:
    """A port p such that p and p + 1 were both free a moment ago (the script's edges),
    below the ephemeral range as for the NATS nodes, so no outgoing connection takes
    p + 1 before the second edge binds it."""
    for _ in range(50):
        port = quiet_ports(1)[0]
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", port + 1))
            return port
    raise AssertionError("no two adjacent free ports")


async def test_the_tier_script_serves_the_demo_on_both_edges(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATEBUS_", "STRIPE_"))}
    port = two_free_ports()
    script = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "scripts" / "tier.py"),
        "--home",
        str(tmp_path / "home"),
        "--port",
        str(port),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert script.stdout is not None
    printed: list[str] = []
    try:
        while "Ctrl-C stops everything" not in (printed[-1] if printed else ""):
            line = (await asyncio.wait_for(script.stdout.readline(), 180)).decode()
            assert line, "the script ended early:\n" + "".join(printed)
            printed.append(line)
        pages = [line.split(": ", 1)[1].strip() for line in printed if "/#token=" in line]
        assert [page.split("/#token=")[0] for page in pages] == [
            f"http://127.0.0.1:{port}",
            f"http://127.0.0.1:{port + 1}",
        ]
        async with httpx.AsyncClient(timeout=5) as http:
            for edge in (port, port + 1):
                ready = await http.get(f"http://127.0.0.1:{edge}/readyz")
                assert ready.status_code == 200, ready.text
        token = pages[1].split("/#token=")[1]
        session = await Session.open(f"ws://127.0.0.1:{port + 1}/v1/ws", token)
        try:
            first = await session.recv()
            assert isinstance(first, Snapshot) and first.user_id == DEMO_USER
        finally:
            await session.close()
    finally:
        # SIGTERM, which the script handles like Ctrl-C: a process started in the
        # background by a non-interactive shell (CI) inherits SIGINT ignored.
        if script.returncode is None:
            script.send_signal(signal.SIGTERM)
        await asyncio.wait_for(script.wait(), 120)
    assert script.returncode == 0, "".join(printed)
