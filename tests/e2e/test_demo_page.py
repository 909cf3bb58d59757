"""The demo page never lies: where each version came from, a stale marker and disabled
actions while disconnected, messages that never outlive their version, token problems
blamed on whoever decided, Stripe-not-configured and admin mode said up front."""

from __future__ import annotations

import asyncio
import re
import time

import asyncpg
import jwt
import pytest
from playwright.async_api import Page, expect

from statebus.testing.fake_stripe import FakeStripe
from statebus.testing.server import SECRET, RunningServer
from tests.e2e.conftest import Tabs
from tests.e2e.test_browser import SLOW, T, expect_shows, seeded
from tests.helpers import USER, version_of
from tests.stripe_support import seed_subscriber

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]


async def no_message_older_than_shown(page: Page) -> None:
    """Every visible message names the version it describes: never one below the page's."""
    shown = int(await page.get_by_test_id("version").inner_text())
    described = await page.eval_on_selector_all(
        "#result:not([hidden]), #error:not([hidden])", "els => els.map(e => e.dataset.version)"
    )
    assert all(v is not None and int(v) >= shown for v in described), (shown, described)


async def billing_buttons_disabled(page: Page) -> None:
    buttons = page.get_by_test_id("buttons").locator("button")
    await expect(buttons.first).to_be_visible(timeout=T)
    for i in range(await buttons.count()):
        await expect(buttons.nth(i)).to_be_disabled(timeout=T)


async def open_with(tabs: Tabs, fragment: str) -> Page:
    page = await tabs.context.new_page()
    page.on("pageerror", lambda exc: tabs.errors.append(str(exc)))
    await page.goto(f"{tabs.server.http}/#{fragment}")
    return page


async def test_sources_stale_state_and_recovery_across_a_restart(
    stripe_tabs: Tabs,
    app: RunningServer,
    conn: asyncpg.Connection,
    fake: FakeStripe,
) -> None:
    await seed_subscriber(conn, fake, USER)
    await conn.execute(
        "INSERT INTO user_usage (user_id, metric, used) VALUES ($1, 'seats', 2)", USER
    )
    a = await stripe_tabs.open(USER)
    b = await stripe_tabs.open(USER)
    for page in (a, b):
        await expect_shows(page, "glow_up", 2)
        await expect(page.get_by_test_id("provenance")).to_contain_text("SQL", timeout=T)

    # Tab A upgrades through the API; tab B sees the version and who made it.
    await a.get_by_test_id("upgrade-viral_surge").click()
    await expect(a.get_by_test_id("upgrade-result")).to_contain_text("version 3", timeout=T)
    await expect_shows(b, "viral_surge", 3)
    await expect(b.get_by_test_id("provenance")).to_have_text(
        re.compile(r"^Changed \d+ s ago by Upgrade API$"), timeout=T
    )

    # An admin's psql-style UPDATE: the next version, written by "SQL".
    await conn.execute("UPDATE user_usage SET used = 3 WHERE user_id = $1", USER)
    for page in (a, b):
        await expect_shows(page, "viral_surge", 4)
        await expect(page.get_by_test_id("provenance")).to_contain_text("by SQL", timeout=T)
        await no_message_older_than_shown(page)
    await expect(a.get_by_test_id("upgrade-result")).to_be_hidden()  # it described v3
    changes = b.get_by_test_id("changes")
    await expect(changes.locator("li[data-version='4']")).to_contain_text("SQL")
    await expect(changes.locator("li[data-version='3']")).to_contain_text("Upgrade API")

    # The server goes away: stale marker, plain words, no leader badge, actions off.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, app.stop)
    for page in (a, b):
        await expect(page.get_by_test_id("status")).to_have_attribute(
            "data-status", "reconnecting", timeout=T
        )
        banner = page.get_by_test_id("conn-error")
        await expect(banner).to_contain_text("The server is restarting", timeout=T)
        await expect(banner).to_contain_text("Showing what was last received")
        await expect(page.get_by_test_id("version")).to_have_text("4")
        await expect(page.get_by_test_id("role")).to_be_hidden()
        await billing_buttons_disabled(page)
        await expect(page.get_by_test_id("billing-note")).to_contain_text("paused")
        await no_message_older_than_shown(page)

    # Written while no server runs; the restarted server delivers it to both tabs.
    await conn.execute("UPDATE user_usage SET used = 4 WHERE user_id = $1", USER)
    latest = await version_of(conn, USER)
    assert latest == 5
    await loop.run_in_executor(None, app.start)
    for page in (a, b):
        await expect_shows(page, "viral_surge", latest, timeout=SLOW)
        await expect(page.get_by_test_id("conn-error")).to_be_hidden()
        await expect(page.get_by_test_id("role")).to_be_visible()
        await expect(page.get_by_test_id("upgrade-glow_up")).to_be_enabled(timeout=T)
        await no_message_older_than_shown(page)


async def test_stripe_not_configured_is_said_before_any_click(
    tabs: Tabs, conn: asyncpg.Connection
) -> None:
    await seeded(conn)
    page = await tabs.open(USER)
    await expect_shows(page, "glow_up", 1)
    await expect(page.get_by_test_id("billing-note")).to_contain_text(
        "Billing is not set up", timeout=T
    )
    await billing_buttons_disabled(page)


async def test_admin_following_a_user_is_labelled_and_cannot_act(
    tabs: Tabs, conn: asyncpg.Connection, server: RunningServer
) -> None:
    await seeded(conn)
    admin = server.token("user_admin", admin=True)
    page = await open_with(tabs, f"token={admin}&user_id={USER}")
    await expect_shows(page, "glow_up", 1)
    banner = page.get_by_test_id("admin-banner")
    await expect(banner).to_contain_text(f"Following user {USER} as admin", timeout=T)
    await expect(banner).to_contain_text("signed in as user_admin")
    await billing_buttons_disabled(page)
    await expect(page.get_by_test_id("billing-note")).to_contain_text("following another user")


@pytest.mark.parametrize(
    ("token", "says", "never"),
    [
        (
            jwt.encode({"sub": USER, "exp": int(time.time()) - 7200}, SECRET, "HS256"),
            "by this browser's clock",
            "server",
        ),
        ("not-a-token", "this browser could not read a user", "server"),
        (
            jwt.encode({"sub": USER, "exp": int(time.time()) + 600}, "x" * 48, "HS256"),
            "The server refused this token",
            "browser",
        ),
    ],
    ids=["expired-in-browser", "malformed-in-browser", "refused-by-server"],
)
async def test_token_problems_say_who_decided(
    tabs: Tabs, conn: asyncpg.Connection, token: str, says: str, never: str
) -> None:
    await seeded(conn)
    page = await open_with(tabs, f"token={token}")
    hint = page.get_by_test_id("token-hint")
    await expect(hint).to_contain_text(says, timeout=SLOW)
    await expect(hint).not_to_contain_text(never)
    await expect(page.get_by_test_id("role")).to_be_hidden()
    await expect(page.get_by_test_id("status")).to_have_attribute("data-status", "unauthorized")


async def test_buttons_follow_the_subscription_and_its_end_date(
    stripe_tabs: Tabs, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await seed_subscriber(conn, fake, USER)
    page = await stripe_tabs.open(USER)
    await expect_shows(page, "glow_up", 1)
    await expect(page.get_by_test_id("upgrade-viral_surge")).to_be_enabled(timeout=T)
    await expect(page.get_by_test_id("cancel")).to_be_visible()
    await expect(page.get_by_test_id("portal")).to_be_visible()
    await expect(page.get_by_test_id("cancel-at-period-end")).to_have_text("Renews")

    await conn.execute(
        "UPDATE user_subscriptions SET cancel_at_period_end = true WHERE user_id = $1", USER
    )
    await expect_shows(page, "glow_up", 2)
    await expect(page.get_by_test_id("cancel-at-period-end")).to_contain_text("Ends on")
    await expect(page.get_by_test_id("resume")).to_be_visible()
    await expect(page.get_by_test_id("cancel")).to_have_count(0)

    await conn.execute("UPDATE user_subscriptions SET status = 'canceled' WHERE user_id = $1", USER)
    await expect_shows(page, "glow_up", 3)
    for plan in ("glow_up", "viral_surge"):
        await expect(page.get_by_test_id(f"checkout-{plan}")).to_be_enabled(timeout=T)
    await expect(page.get_by_test_id("upgrade-viral_surge")).to_have_count(0)


async def test_a_network_failure_message_goes_once_the_connection_is_back(
    stripe_tabs: Tabs, app: RunningServer, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await seed_subscriber(conn, fake, USER)
    page = await stripe_tabs.open(USER)
    await expect_shows(page, "glow_up", 1)
    await page.route("**/v1/billing/upgrade", lambda route: route.abort())
    await page.get_by_test_id("upgrade-viral_surge").click()
    error = page.get_by_test_id("error")
    await expect(error).to_contain_text("could not be reached", timeout=T)
    await expect(error).to_have_attribute("data-version", "1")

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, app.restart)
    await expect_shows(page, "glow_up", 1, timeout=SLOW)
    await expect(error).to_be_hidden(timeout=T)  # same version, but the failure is moot now
