"""The demo page in a real Chromium: one socket per browser, leader hand-over,
catch-up through restarts, paint from cache. Every wait has a deadline."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import pytest
from playwright.async_api import Page, expect

from statebus.testing.fake_stripe import FakeStripe
from statebus.testing.server import RunningServer
from tests.e2e.conftest import Tabs
from tests.helpers import USER, add_user, seed_plans, version_of, wait_for
from tests.stripe_support import seed_subscriber

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

T = 10_000  # ms: ordinary waits
SLOW = 30_000  # ms: waits that include a reconnect backoff (capped at 10 s)
CACHE_KEY = f"statebus:snapshot:{USER}"


async def seeded(conn: asyncpg.Connection) -> None:
    await seed_plans(conn)
    await add_user(conn, USER, "glow_up")


async def set_plan(conn: asyncpg.Connection, plan: str) -> int:
    await conn.execute("UPDATE user_subscriptions SET plan = $1 WHERE user_id = $2", plan, USER)
    return await version_of(conn, USER)


async def expect_shows(page: Page, plan: str, version: int, *, timeout: int = T) -> None:
    await expect(page.get_by_test_id("plan-code")).to_have_text(plan, timeout=timeout)
    await expect(page.get_by_test_id("version")).to_have_text(str(version), timeout=timeout)
    await expect(page.get_by_test_id("status")).to_have_attribute(
        "data-status", "live", timeout=timeout
    )


async def sockets_opened(*pages: Page) -> int:
    counts = [await p.evaluate("window.statebusStore.debug.socketsOpened") for p in pages]
    return sum(int(c) for c in counts)


async def leader_and_follower(a: Page, b: Page) -> tuple[Page, Page]:
    """Both pages live, exactly one of them leader (checked in the DOM and in the store)."""
    for page in (a, b):
        await expect(page.get_by_test_id("status")).to_have_attribute(
            "data-status", "live", timeout=T
        )
        await expect(page.get_by_test_id("role")).to_have_text(
            re.compile("^(leader|follower)$"), timeout=T
        )
    got = [await p.get_by_test_id("role").inner_text() for p in (a, b)]
    assert sorted(got) == ["follower", "leader"], got
    leader, follower = (a, b) if got[0] == "leader" else (b, a)
    assert await leader.evaluate("window.statebusStore.isLeader()") is True
    assert await follower.evaluate("window.statebusStore.isLeader()") is False
    return leader, follower


async def test_two_tabs_share_one_socket_and_both_follow_sql_changes(
    tabs: Tabs, conn: asyncpg.Connection
) -> None:
    await seeded(conn)
    first = await tabs.open(USER)
    await expect_shows(first, "glow_up", 1)
    second = await tabs.open(USER)
    await expect_shows(second, "glow_up", 1)
    await expect(first.get_by_test_id("plan-name")).to_have_text("Glow Up", timeout=T)

    version = await set_plan(conn, "viral_surge")
    assert version == 2
    for page in (first, second):
        await expect_shows(page, "viral_surge", version)
        await expect(page.get_by_test_id("plan-name")).to_have_text("Viral Surge", timeout=T)
        await expect(page.get_by_test_id("sub-status")).to_have_text("active", timeout=T)

    await leader_and_follower(first, second)
    assert len(tabs.sockets) == 1, tabs.socket_urls()
    assert tabs.sockets[0].url.endswith("/v1/ws")
    assert await sockets_opened(first, second) == 1


async def test_closing_the_leader_hands_the_socket_to_the_other_tab(
    tabs: Tabs, conn: asyncpg.Connection
) -> None:
    await seeded(conn)
    a = await tabs.open(USER)
    await expect_shows(a, "glow_up", 1)
    b = await tabs.open(USER)
    await expect_shows(b, "glow_up", 1)
    leader, follower = await leader_and_follower(a, b)
    assert len(tabs.sockets) == 1

    await leader.close()
    await expect(follower.get_by_test_id("role")).to_have_text("leader", timeout=T)
    await expect(follower.get_by_test_id("status")).to_have_attribute(
        "data-status", "live", timeout=SLOW
    )
    assert len(tabs.sockets) == 2, tabs.socket_urls()

    version = await set_plan(conn, "viral_surge")
    await expect_shows(follower, "viral_surge", version)
    version = await set_plan(conn, "glow_up")
    await expect_shows(follower, "glow_up", version)
    assert len(tabs.sockets) == 2, tabs.socket_urls()


async def test_both_tabs_reach_the_final_version_through_restart_and_lost_listen(
    tabs: Tabs, conn: asyncpg.Connection, server: RunningServer, dsn: str
) -> None:
    await seeded(conn)
    await conn.execute(
        "INSERT INTO user_usage (user_id, metric, used) VALUES ($1, 'posts', 0)", USER
    )
    start = await version_of(conn, USER)
    a = await tabs.open(USER)
    b = await tabs.open(USER)
    for page in (a, b):
        await expect_shows(page, "glow_up", start)
    loop = asyncio.get_running_loop()
    admin = await asyncpg.connect(dsn)

    def listener_pid() -> int | None:
        listener = server.app.state.runtime.listener
        return int(listener.backend_pid) if listener.live else None

    async def write(n: int) -> None:
        await conn.execute(
            "UPDATE user_usage SET used = $1 WHERE user_id = $2 AND metric = 'posts'", n, USER
        )
        await asyncio.sleep(0.02)  # spread the writes over the disruptions, not a wait

    try:
        for n in range(1, 11):
            await write(n)
        await loop.run_in_executor(None, server.restart)
        for n in range(11, 21):
            await write(n)
        await wait_for(lambda: listener_pid() is not None, timeout=15, what="LISTEN up")
        old = listener_pid()
        await admin.execute("SELECT pg_terminate_backend($1)", old)
        for n in range(21, 31):
            await write(n)
        await wait_for(lambda: listener_pid() not in (None, old), timeout=15, what="a new LISTEN")
        for n in range(31, 41):
            await write(n)
    finally:
        await admin.close()

    final = await version_of(conn, USER)
    assert final == start + 40
    for page in (a, b):
        await expect_shows(page, "glow_up", final, timeout=SLOW)
    await leader_and_follower(a, b)


async def test_cached_snapshot_paints_before_the_socket_connects(
    tabs: Tabs, conn: asyncpg.Connection, server: RunningServer
) -> None:
    await seeded(conn)
    first = await tabs.open(USER)
    await expect_shows(first, "glow_up", 1)
    cached = await first.evaluate(f"localStorage.getItem({CACHE_KEY!r})")
    assert cached is not None and '"version":1' in cached
    await first.close()

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, server.stop)
    # Changed while no server runs: the cache is now behind and must be caught up.
    version = await set_plan(conn, "viral_surge")
    page = await tabs.open(USER, static_from_disk=True)
    await expect(page.get_by_test_id("plan-code")).to_have_text("glow_up", timeout=T)
    await expect(page.get_by_test_id("version")).to_have_text("1", timeout=T)
    await expect(page.get_by_test_id("status")).to_have_attribute(
        "data-status", re.compile("^(connecting|reconnecting)$"), timeout=T
    )
    snapshot = await page.evaluate("window.statebusStore.getSnapshot()")
    assert snapshot["status"] != "live" and snapshot["version"] == 1

    await loop.run_in_executor(None, server.start)
    await expect_shows(page, "viral_surge", version, timeout=SLOW)


async def test_upgrade_button_in_one_tab_shows_in_the_other(
    stripe_tabs: Tabs, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await seed_subscriber(conn, fake, USER)
    await conn.execute(
        "INSERT INTO user_usage (user_id, metric, used) VALUES ($1, 'seats', 7)", USER
    )
    a = await stripe_tabs.open(USER)
    b = await stripe_tabs.open(USER)
    await expect_shows(a, "glow_up", 2)
    await expect_shows(b, "glow_up", 2)

    await a.get_by_test_id("upgrade-viral_surge").click()
    for page in (a, b):
        await expect_shows(page, "viral_surge", 3)
        await expect(page.get_by_test_id("plan-name")).to_have_text("Viral Surge", timeout=T)
        await expect(page.get_by_test_id("upgrade-viral_surge")).to_be_hidden(timeout=T)
    assert fake.get_subscription("sub_demo")["items"]["data"][0]["price"]["id"] == (
        "price_viral_surge"
    )
    assert len(stripe_tabs.sockets) == 1

    # A Stripe failure is shown plainly and changes nothing.
    fake.fail_next(3, status=500)  # the first try and both of the gateway's retries
    await a.get_by_test_id("upgrade-glow_up").click()
    await expect(a.get_by_test_id("error")).to_contain_text(
        "Stripe did not accept it, so nothing changed", timeout=T
    )
    await expect_shows(b, "viral_surge", 3)
    await expect(a.get_by_test_id("error")).to_be_visible()
