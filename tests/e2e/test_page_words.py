"""The page in the user's language and never "Live" when it cannot be: a refused token
beside a good tab (N4), a server gone for good (N5), labels and one version badge (N8)."""

from __future__ import annotations

import asyncio
import re
import time

import asyncpg
import jwt
import pytest
from playwright.async_api import Page, expect

from statebus.testing.server import RunningServer
from tests.e2e.conftest import Tabs
from tests.e2e.test_browser import T, expect_shows, seeded
from tests.helpers import USER

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

LABELS = '{"posts_per_month": "Posts per month", "seats": "Team seats"}'
# Every status the page's status element takes, recorded from before the page's own
# scripts run: "never live" is then a fact about the whole life of the page.
RECORD_STATUSES = """
window.__statuses = [];
new MutationObserver((records) => {
  for (const r of records) {
    if (r.target.id === "status") window.__statuses.push(r.target.dataset.status);
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-status"] });
"""


async def labelled_user(conn: asyncpg.Connection) -> None:
    await seeded(conn)
    await conn.execute(
        'UPDATE plans SET limits = \'{"posts_per_month": 100, "seats": 3}\','
        f" limit_labels = '{LABELS}'"
    )
    await conn.execute(
        "INSERT INTO user_usage (user_id, metric, used) VALUES ($1, 'posts_per_month', 42)",
        USER,
    )


async def open_recorded(tabs: Tabs, token: str) -> Page:
    page = await tabs.context.new_page()
    page.on("pageerror", lambda exc: tabs.errors.append(str(exc)))
    await page.add_init_script(RECORD_STATUSES)
    await page.goto(f"{tabs.server.http}/#token={token}")
    return page


async def test_a_refused_token_beside_a_good_tab_is_never_live(
    tabs: Tabs, conn: asyncpg.Connection
) -> None:
    await labelled_user(conn)
    good = await tabs.open(USER)
    await expect_shows(good, "glow_up", 3)

    # N8 on the good tab: the product's words, one version, no jargon up front.
    limits = good.get_by_test_id("limits")
    await expect(limits).to_contain_text("Posts per month", timeout=T)
    await expect(limits).to_contain_text("Team seats")
    await expect(good.get_by_test_id("usage")).to_contain_text("Posts per month")
    card = await good.locator("#plan-card").inner_text()
    assert "posts_per_month" not in card and "glow_up" not in card, card
    topbar = await good.locator(".topbar").inner_text()
    assert "leader" not in topbar and "follower" not in topbar, topbar
    assert re.findall(r"\bv\d+\b", topbar) == ["v3"]
    provenance = await good.get_by_test_id("provenance").inner_text()
    assert re.fullmatch(r"Changed \d+ s ago by SQL", provenance), provenance
    await expect(good.get_by_test_id("dev-details")).to_contain_text("leader")

    # Same user, same browser, a token the server refuses (another signing key).
    bad_token = jwt.encode({"sub": USER, "exp": int(time.time()) + 600}, "k" * 48, "HS256")
    bad = await open_recorded(tabs, bad_token)
    hint = bad.get_by_test_id("token-hint")
    await expect(hint).to_contain_text("The server refused this token", timeout=T)
    await expect(bad.get_by_test_id("status")).to_have_attribute("data-status", "unauthorized")
    heading = await bad.get_by_test_id("token-heading").inner_text()
    button = await bad.get_by_test_id("token-submit").inner_text()
    assert heading != button and "Connect" not in heading, (heading, button)
    await expect(bad.locator("#app")).to_be_hidden()
    await expect(bad.locator("#version-badge")).to_be_hidden()
    visible = await bad.locator("body").inner_text()
    assert "v-" not in visible and "v–" not in visible and "expires" not in visible, visible
    assert "live" not in await bad.evaluate("window.__statuses"), "the refused tab said live"
    await expect(bad.get_by_test_id("token-submit")).to_be_enabled()

    # The good tab is untouched, and the refused tab left the tabs' group: when the good
    # tab closes, the next good tab holds the socket (not the refused one).
    await expect_shows(good, "glow_up", 3)
    await good.close()
    after = await tabs.open(USER)
    await expect_shows(after, "glow_up", 3)
    await expect(after.get_by_test_id("role")).to_have_text("leader")
    assert len(tabs.sockets) == 2, tabs.socket_urls()
    assert "live" not in await bad.evaluate("window.__statuses")


async def test_a_server_gone_for_good_is_called_unreachable_with_since_when(
    tabs: Tabs, server: RunningServer, conn: asyncpg.Connection
) -> None:
    await seeded(conn)
    page = await tabs.open(USER)
    await expect_shows(page, "glow_up", 1)
    await asyncio.get_running_loop().run_in_executor(None, server.stop)
    stopped = time.monotonic()
    banner = page.get_by_test_id("conn-error")
    await expect(banner).to_contain_text("The server is restarting", timeout=T)
    await expect(banner).to_contain_text(
        re.compile(r"Cannot reach the server since \S+.* \(\d+ s\)"), timeout=30_000
    )
    took = time.monotonic() - stopped
    assert 14 < took < 25, took
    await expect(page.get_by_test_id("status")).to_have_text("Not connected")
    text = await page.locator("body").inner_text()
    assert "restarting" not in text and "Reconnecting" not in text, text
    # One banner: nothing else on the page speaks about the connection.
    shown = page.locator(".alert:visible, .notice:visible, .stale-note:visible")
    await expect(shown).to_have_count(1)
    await expect(banner).to_contain_text("Showing what was last received")
