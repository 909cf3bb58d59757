"""`POST /v1/billing/checkout | portal | cancel | resume` on the real server against the
fake Stripe API, and the fake's own checkout page sending signed webhooks back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from statebus.testing.fake_stripe import FakeStripe
from statebus.testing.server import RunningServer, free_port
from tests.helpers import wait_for
from tests.stripe_support import (
    GLOW,
    SECRET,
    add_customer_user,
    history_sources,
    seed,
    seed_subscriber,
    stripe_settings,
    subscription_row,
)

pytestmark = pytest.mark.asyncio

USER = "user_2zRnraoVNDAegfHnci1xUMWybwz"


def auth(app: RunningServer, user_id: str = USER) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.token(user_id)}"}


@pytest.fixture
async def http(app: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app.http, timeout=30, headers=auth(app)) as client:
        yield client


async def test_cancel_then_resume_write_at_once_and_answer_the_envelope(
    http: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await seed_subscriber(conn, fake, USER)
    period_end = fake.get_subscription("sub_demo")["items"]["data"][0]["current_period_end"]

    cancelled = await http.post("/v1/billing/cancel")

    assert cancelled.status_code == 200, cancelled.text
    sub = cancelled.json()["state"]["subscription"]
    assert sub["cancel_at_period_end"] is True and sub["cancel_at"] is not None
    assert fake.get_subscription("sub_demo")["cancel_at_period_end"] is True
    assert fake.get_subscription("sub_demo")["cancel_at"] == period_end
    assert (await history_sources(conn, USER))[-1] == "cancel"

    resumed = await http.post("/v1/billing/resume")

    assert resumed.status_code == 200, resumed.text
    sub = resumed.json()["state"]["subscription"]
    assert sub["cancel_at_period_end"] is False and sub["cancel_at"] is None
    assert resumed.json()["version"] == cancelled.json()["version"] + 1
    assert (await history_sources(conn, USER))[-1] == "resume"


async def test_resume_undoes_a_flexible_cancel_at(
    http: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await seed_subscriber(conn, fake, USER)
    end = fake.get_subscription("sub_demo")["items"]["data"][0]["current_period_end"]
    fake.set_subscription("sub_demo", cancel_at=end)  # as the portal does in flexible mode

    resumed = await http.post("/v1/billing/resume")

    assert resumed.status_code == 200, resumed.text
    assert fake.get_subscription("sub_demo")["cancel_at"] is None
    assert fake.params_log[-1] == {"cancel_at": ""}
    assert resumed.json()["state"]["subscription"]["cancel_at"] is None


async def test_cancel_without_a_subscription_is_409_and_stripe_failing_is_502(
    app: RunningServer, http: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await seed_subscriber(conn, fake, USER)
    await add_customer_user(conn, "user_none")
    none = await http.post("/v1/billing/cancel", headers=auth(app, "user_none"))
    assert none.status_code == 409 and none.json()["error"] == "no_subscription"

    fake.fail_next(5, status=500, path_prefix="/v1/subscriptions")
    failed = await http.post("/v1/billing/cancel")

    assert failed.status_code == 502
    assert failed.json() == {
        "error": "stripe_failed",
        "message": "Stripe did not accept the change; nothing was changed",
    }
    row = await subscription_row(conn, USER)
    assert row is not None and row["cancel_at_period_end"] is False


async def test_checkout_for_a_user_without_subscription_and_409_with_one(
    app: RunningServer, http: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await seed_subscriber(conn, fake, USER)
    await add_customer_user(conn, "user_new")

    taken = await http.post("/v1/billing/checkout", json={"plan": "viral_surge"})
    assert taken.status_code == 409 and taken.json()["error"] == "has_subscription"

    answer = await http.post(
        "/v1/billing/checkout", json={"plan": "glow_up"}, headers=auth(app, "user_new")
    )

    assert answer.status_code == 200, answer.text
    url = answer.json()["url"]
    session_id = urlsplit(url).path.rsplit("/", 1)[-1]
    session = fake.state.checkout_sessions[session_id]
    assert url.startswith(fake.url) and session["mode"] == "subscription"
    assert session["client_reference_id"] == "user_new"
    assert session["success_url"].startswith(app.http) and fake.state.sells[session_id][
        "prices"
    ] == [GLOW]
    unknown = await http.post("/v1/billing/checkout", json={"plan": "nope"})
    assert unknown.status_code == 404


async def test_portal_needs_a_customer(
    app: RunningServer, http: httpx.AsyncClient, conn: asyncpg.Connection, fake: FakeStripe
) -> None:
    await seed_subscriber(conn, fake, USER)
    await add_customer_user(conn, "user_new")

    none = await http.post("/v1/billing/portal", headers=auth(app, "user_new"))
    assert none.status_code == 409 and none.json()["error"] == "no_customer"

    answer = await http.post("/v1/billing/portal")
    assert answer.status_code == 200 and answer.json()["url"].startswith(fake.url + "/portal/")
    page = httpx.get(answer.json()["url"])
    assert page.status_code == 200 and "Cancel at period end" in page.text


# -- the fake sending webhooks: checkout completed on its page ------------------------


@pytest.fixture
def sending(dsn: str, tmp_path: Path) -> Iterator[tuple[RunningServer, FakeStripe]]:
    port = free_port()
    webhook = f"http://127.0.0.1:{port}/v1/stripe/webhook"
    with FakeStripe(webhook_url=webhook, webhook_secret=SECRET) as fake:
        server = RunningServer(stripe_settings(tmp_path, fake), dsn)
        server.port = port
        server.start()
        yield server, fake
        server.stop()


async def test_checkout_completed_on_the_fake_page_reaches_the_user_by_webhook(
    sending: tuple[RunningServer, FakeStripe], conn: asyncpg.Connection
) -> None:
    app, fake = sending
    await seed(conn, fake)
    await add_customer_user(conn, "user_new")
    async with httpx.AsyncClient(base_url=app.http, timeout=30) as http:
        answer = await http.post(
            "/v1/billing/checkout", json={"plan": "glow_up"}, headers=auth(app, "user_new")
        )
        url = answer.json()["url"]
        assert "Pay (test)" in (await http.get(url)).text
        paid = await http.post(url + "/complete")  # the page's button
    assert paid.status_code == 303 and paid.headers["location"].startswith(app.http)

    async def subscribed() -> bool:
        row = await subscription_row(conn, "user_new")
        linked = await conn.fetchval(
            "SELECT stripe_customer_id FROM user_billing WHERE user_id = 'user_new'"
        )
        return row is not None and row["plan"] == "glow_up" and linked is not None

    await wait_for(subscribed, timeout=20, what="checkout's webhook applied")
    assert "checkout" in await history_sources(conn, "user_new")
    assert {status for _, status in fake.webhooks.sent} == {200}  # type: ignore[union-attr]
