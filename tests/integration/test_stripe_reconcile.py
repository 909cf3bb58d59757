"""`statebus reconcile`: prints drift from Stripe, changes nothing on --dry-run, repairs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from statebus.config import Settings
from statebus.stripe.reconcile import run_reconcile
from statebus.testing.fake_stripe import FakeStripe
from tests.helpers import version_of
from tests.stripe_support import (
    GLOW,
    VIRAL,
    add_customer_user,
    history_sources,
    seed,
    stripe_settings,
    subscription_row,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(dsn: str, tmp_path: Path, fake: FakeStripe) -> Settings:
    return stripe_settings(tmp_path, fake, database_url=dsn)


async def reconcile(
    settings: Settings, capsys: pytest.CaptureFixture[str], **kw: object
) -> tuple[int, list[str]]:
    """Runs the CLI entry point (it calls asyncio.run, so on its own thread)."""
    user_id = kw.get("user_id")
    assert user_id is None or isinstance(user_id, str)
    code = await asyncio.to_thread(
        run_reconcile, settings, user_id=user_id, dry_run=bool(kw.get("dry_run"))
    )
    return code, capsys.readouterr().out.splitlines()


async def add_row(
    conn: asyncpg.Connection, user_id: str, sub_id: str, plan: str, status: str, period_end: int
) -> None:
    await conn.execute(
        "INSERT INTO user_subscriptions (user_id, plan, status, stripe_subscription_id,"
        " current_period_end) VALUES ($1, $2, $3, $4, to_timestamp($5))",
        user_id,
        plan,
        status,
        sub_id,
        period_end,
    )


async def drifted(conn: asyncpg.Connection, fake: FakeStripe) -> None:
    """user_a: wrong plan; user_b: missed its cancellation; user_c: in sync;
    user_d: no row at all; cus_orphan: no user."""
    await seed(conn, fake)
    end = int(time.time()) + 86400
    for user, price, status in [
        ("a", VIRAL, "active"),
        ("b", GLOW, "canceled"),
        ("c", GLOW, "active"),
        ("d", GLOW, "trialing"),
    ]:
        await add_customer_user(conn, f"user_{user}", f"cus_{user}")
        fake.add_subscription(
            customer=f"cus_{user}",
            price=price,
            status=status,
            sub_id=f"sub_{user}",
            current_period_end=end,
        )
    await add_row(conn, "user_a", "sub_a", "glow_up", "active", end)
    await add_row(conn, "user_b", "sub_b", "glow_up", "active", end)
    await add_row(conn, "user_c", "sub_c", "glow_up", "active", end)
    fake.add_subscription(customer="cus_orphan", price=GLOW, sub_id="sub_orphan")


async def test_dry_run_prints_each_difference_and_changes_nothing(
    settings: Settings,
    conn: asyncpg.Connection,
    fake: FakeStripe,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await drifted(conn, fake)
    versions = {u: await version_of(conn, f"user_{u}") for u in "abcd"}

    code, lines = await reconcile(settings, capsys, dry_run=True)

    assert code == 0
    assert "user_a sub_a: plan glow_up -> viral_surge" in lines
    assert "user_b sub_b: status active -> canceled" in lines
    assert any(line.startswith("user_d sub_d: no subscription row") for line in lines)
    assert "sub_orphan: no user for customer cus_orphan" in lines
    assert not any(line.startswith("user_c") for line in lines)
    assert lines[-1] == "reconcile: 3 difference(s); dry run, nothing changed"
    assert {u: await version_of(conn, f"user_{u}") for u in "abcd"} == versions
    assert await subscription_row(conn, "user_d") is None


async def test_reconcile_repairs_and_then_finds_nothing(
    settings: Settings,
    conn: asyncpg.Connection,
    fake: FakeStripe,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await drifted(conn, fake)
    version_c = await version_of(conn, "user_c")

    code, lines = await reconcile(settings, capsys)

    assert code == 0 and lines[-1] == "reconcile: 3 difference(s); repaired 3 user(s)"
    assert (await subscription_row(conn, "user_a") or {})["plan"] == "viral_surge"
    assert (await subscription_row(conn, "user_b") or {})["status"] == "canceled"
    assert (await subscription_row(conn, "user_d") or {})["status"] == "trialing"
    assert (await history_sources(conn, "user_a"))[-1] == "reconcile"
    assert await version_of(conn, "user_c") == version_c

    code, lines = await reconcile(settings, capsys)
    assert code == 0 and lines[-1] == "reconcile: 0 difference(s); repaired 0 user(s)"


async def test_one_user_only(
    settings: Settings,
    conn: asyncpg.Connection,
    fake: FakeStripe,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await drifted(conn, fake)

    code, lines = await reconcile(settings, capsys, user_id="user_a")

    assert code == 0
    assert lines == [
        "user_a sub_a: plan glow_up -> viral_surge",
        "reconcile: 1 difference(s); repaired 1 user(s)",
    ]
    assert (await subscription_row(conn, "user_b") or {})["status"] == "active"  # untouched


async def test_without_a_stripe_key_it_exits_2(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace

    code = run_reconcile(replace(settings, stripe_api_key=None), user_id=None, dry_run=True)

    assert code == 2
    assert "STRIPE_API_KEY" in capsys.readouterr().err


async def test_reconcile_ranks_like_the_webhook_an_incomplete_newer_one_loses(
    settings: Settings,
    conn: asyncpg.Connection,
    fake: FakeStripe,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await seed(conn, fake)
    end = int(time.time()) + 86400
    await add_customer_user(conn, "user_a", "cus_a")
    fake.add_subscription(customer="cus_a", price=GLOW, sub_id="sub_old", current_period_end=end)
    fake.add_subscription(customer="cus_a", price=VIRAL, sub_id="sub_new", status="incomplete")
    await add_row(conn, "user_a", "sub_new", "viral_surge", "incomplete", end)

    code, _ = await reconcile(settings, capsys)

    assert code == 0
    row = await subscription_row(conn, "user_a")
    assert row is not None and (row["stripe_subscription_id"], row["plan"]) == (
        "sub_old",
        "glow_up",
    )
