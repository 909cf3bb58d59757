"""Starts and stops the Stripe side of the app (client, inbox workers)."""

from __future__ import annotations

from server.runtime import Runtime


async def start(rt: Runtime) -> None:
    """Nothing to start until the inbox worker lands; kept so app.py has one place to call."""


async def stop(rt: Runtime) -> None:
    """Counterpart of start()."""
