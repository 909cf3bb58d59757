"""N9: two tabs on a network that goes silent without closing (packets vanish, as on a
Wi-Fi switch) stop saying "live" within 15 s, and catch up with `since` once packets flow."""

from __future__ import annotations

import time

import asyncpg
import pytest
from playwright.async_api import expect

from statebus.testing.server import RunningServer
from tests.e2e.conftest import Tabs
from tests.e2e.test_browser import expect_shows, seeded
from tests.helpers import USER, version_of
from tests.silent_proxy import SilentProxy

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

USAGE = """INSERT INTO user_usage (user_id, metric, used) VALUES ($1, 'posts', 1)
           ON CONFLICT (user_id, metric) DO UPDATE SET used = user_usage.used + 1"""


async def test_a_silent_network_is_noticed_and_caught_up(
    tabs: Tabs, server: RunningServer, conn: asyncpg.Connection
) -> None:
    await seeded(conn)
    async with SilentProxy(server.port) as proxy:
        pages = []
        for _ in range(2):
            page = await tabs.context.new_page()
            page.on("pageerror", lambda exc: tabs.errors.append(str(exc)))
            await page.goto(f"{proxy.http}/#token={server.token(USER)}")
            await expect_shows(page, "glow_up", 1)
            pages.append(page)
        opened = proxy.connections

        proxy.silence()
        silenced = time.monotonic()
        for _ in range(50):
            await conn.execute(USAGE, USER)
        latest = await version_of(conn, USER)
        for page in pages:
            await expect(page.get_by_test_id("status")).not_to_have_attribute(
                "data-status", "live", timeout=16_000
            )
        noticed = time.monotonic() - silenced
        assert noticed < 15, f"still live {noticed:.1f} s into the silence"
        for page in pages:
            await expect(page.get_by_test_id("version")).to_have_text("1")
        # The leader tab gave the silent socket up and tries a new one, which the proxy
        # holds as a dead network would.
        deadline = time.monotonic() + 10
        while proxy.connections == opened:
            assert time.monotonic() < deadline, "no reconnect attempt"
            await pages[0].wait_for_timeout(20)

        proxy.resume()
        resumed = time.monotonic()
        for page in pages:
            await expect_shows(page, "glow_up", latest)
        caught_up = time.monotonic() - resumed
        print(f"N9: not live after {noticed:.2f} s of silence; caught up {caught_up:.2f} s after")
        assert caught_up < 5, caught_up
