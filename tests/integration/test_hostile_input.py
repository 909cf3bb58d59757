"""Hostile input against the real server: each bad input gets a 4xx or a 44xx close with a
JSON error, never a 5xx or a dropped socket, and nothing is written."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
import websockets

from statebus.testing.fake_stripe import FakeStripe, make_event
from statebus.testing.server import SECRET, RunningServer, settings_for_tests
from tests.helpers import add_user, seed_plans
from tests.stripe_support import deliver, seed_subscriber

pytestmark = pytest.mark.asyncio

USER = "user_2zRnraoVNDAegfHnci1xUMWybwz"


async def socket_answer(
    url: str, message: str | bytes, *, origin: str | None = None
) -> tuple[str, Any, dict[str, Any] | None]:
    """("snapshot", frame, None) when auth succeeded, else ("closed", code, error frame)."""
    headers = {"Origin": origin} if origin else None
    async with websockets.connect(url, additional_headers=headers, max_size=2**24) as ws:
        error: dict[str, Any] | None = None
        try:
            await ws.send(message)
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if frame.get("type") == "error":
                    error = frame
                else:
                    return "snapshot", frame, None
        except websockets.ConnectionClosed as exc:
            return "closed", exc.rcvd.code if exc.rcvd else None, error


def auth(token: str, **extra: Any) -> str:
    return json.dumps({"type": "auth", "token": token, **extra})


def token_for(sub: str, **claims: Any) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600, **claims}, SECRET, "HS256")


@pytest.fixture
async def seeded(conn: asyncpg.Connection) -> asyncpg.Connection:
    await seed_plans(conn)
    await add_user(conn, USER)
    return conn


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
        yield client


# --- finding 3: NUL in a token's sub, an admin's ?user_id=, the upgrade's plan ----------


async def test_nul_in_a_tokens_sub_is_401_over_http_and_4401_on_the_socket(
    server: RunningServer, http: httpx.AsyncClient, seeded: asyncpg.Connection
) -> None:
    bad = token_for("user\x00x")
    response = await http.get("/v1/state", headers={"Authorization": f"Bearer {bad}"})
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"
    kind, code, error = await socket_answer(server.ws, auth(bad))
    assert (kind, code) == ("closed", 4401) and error is not None


async def test_nul_in_an_admins_user_id_is_400_and_4400(
    server: RunningServer, http: httpx.AsyncClient, seeded: asyncpg.Connection
) -> None:
    admin = server.token("ops", admin=True)
    headers = {"Authorization": f"Bearer {admin}"}
    for user_id in ("user\x00x", "u" * 300):
        response = await http.get("/v1/state", params={"user_id": user_id}, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "bad_request"
        assert "\x00" not in response.text
    kind, code, error = await socket_answer(server.ws, auth(admin, user_id="user\x00x"))
    assert (kind, code) == ("closed", 4400) and error is not None
    assert error["code"] == "malformed"
    ok = await http.get("/v1/state", params={"user_id": USER}, headers=headers)
    assert ok.status_code == 200


@pytest.fixture
async def billing(
    app: RunningServer, conn: asyncpg.Connection, fake: FakeStripe
) -> AsyncIterator[httpx.AsyncClient]:
    await seed_subscriber(conn, fake, USER)
    headers = {"Authorization": f"Bearer {app.token(USER)}"}
    async with httpx.AsyncClient(base_url=app.http, timeout=30, headers=headers) as client:
        yield client


async def test_nul_in_the_upgrade_plan_is_400(
    billing: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    before = await conn.fetchval("SELECT count(*) FROM statebus.history")
    for plan in ("viral\x00surge", "", "p" * 65):
        response = await billing.post("/v1/billing/upgrade", json={"plan": plan})
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "bad_request"
    assert await conn.fetchval("SELECT count(*) FROM statebus.history") == before


@pytest.mark.parametrize("field", ["é" * 70, "\U0001f600" * 40, "\x00"])
async def test_an_unknown_field_is_4400_whatever_its_name(
    server: RunningServer, seeded: asyncpg.Connection, field: str
) -> None:
    kind, code, error = await socket_answer(server.ws, auth("x", **{field: 1}))
    assert (kind, code) == ("closed", 4400) and error is not None
    assert error["message"] == "invalid message: unknown field"


# --- finding 4: signed webhook bodies the database could not store ----------------------


def deep_event(depth: int) -> bytes:
    nested = "[" * depth + "]" * depth
    return (
        '{"id": "evt_deep", "type": "customer.updated", "created": 1700000000,'
        f' "data": {{"object": {{"id": "cus_x", "x": {nested}}}}}}}'
    ).encode()


def number_event(number: str) -> bytes:
    """Numbers msgspec reads but jsonb's numeric cannot hold as written."""
    return (
        '{"id": "evt_num", "type": "ping", "created": 1700000000,'
        f' "data": {{"object": {{"amount": {number}}}}}}}'
    ).encode()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(deep_event(5000), id="5000-deep"),
        pytest.param(deep_event(100), id="100-deep"),
        pytest.param(make_event("ping", {"id": "x"}, event_id="evt_\x00nul"), id="nul-id"),
        pytest.param(make_event("ping", {"id": "x\x00y"}), id="nul-inside"),
        pytest.param(make_event("ping", {"id": "x"}, created=10**20), id="created-huge"),
        pytest.param(make_event("ping", {"id": "x"}, created=-5), id="created-negative"),
        pytest.param(make_event("ping", {"id": "x"}, event_id="evt_" + "x" * 300), id="long-id"),
        pytest.param(number_event("0." + "1" * 20_000), id="20000-fraction-digits"),
        pytest.param(number_event("1e-20000"), id="tiny-exponent"),
        pytest.param(number_event("1" * 5000), id="5000-digit-integer"),
        pytest.param(b'{"id": 5, "type": "ping", "created": 1}', id="id-not-a-string"),
        pytest.param(b'{"id": "evt_1", "type": "ping", "data": []}', id="data-not-an-object"),
    ],
)
async def test_signed_bodies_that_cannot_be_stored_are_400(
    app: RunningServer, conn: asyncpg.Connection, body: bytes
) -> None:
    async with httpx.AsyncClient(base_url=app.http, timeout=10) as client:
        response = await deliver(client, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_payload"
    assert await conn.fetchval("SELECT count(*) FROM statebus.stripe_events") == 0


async def test_a_stripe_signature_header_that_is_not_ascii_is_400(
    app: RunningServer, conn: asyncpg.Connection
) -> None:
    body = make_event("ping", {"id": "x"})
    headers = {b"Stripe-Signature": f"t={int(time.time())},v1=\xe9".encode("latin-1")}
    async with httpx.AsyncClient(base_url=app.http, timeout=10) as client:
        response = await client.post("/v1/stripe/webhook", content=body, headers=headers)
    assert response.status_code == 400 and response.json()["error"] == "bad_signature"


# --- finding 5: Stripe's own message never reaches a client (but for card errors) -------


async def test_an_upgrade_stripe_refuses_says_statebus_words_not_stripes(
    billing: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    # Stripe no longer knows the subscription the row names: Stripe answers 404
    # "No such subscription: 'sub_gone'".
    await conn.execute(
        "UPDATE user_subscriptions SET stripe_subscription_id = 'sub_gone' WHERE user_id = $1",
        USER,
    )
    response = await billing.post("/v1/billing/upgrade", json={"plan": "viral_surge"})
    assert response.status_code == 502
    body = response.json()
    assert body["error"] == "stripe_failed"
    assert "sub_" not in body["message"] and "No such" not in body["message"]


# --- finding 9: the smaller items -------------------------------------------------------


async def test_a_token_near_the_http_limit_also_works_on_the_socket(
    server: RunningServer, http: httpx.AsyncClient, seeded: asyncpg.Connection
) -> None:
    big = token_for(USER, padding="p" * 11_900)
    assert 15_000 < len(big) < 16_384
    ok = await http.get("/v1/state", headers={"Authorization": f"Bearer {big}"})
    assert ok.status_code == 200
    kind, frame, _ = await socket_answer(server.ws, auth(big))
    assert kind == "snapshot" and frame["version"] == 1


async def test_the_same_host_origin_check_compares_the_scheme(
    server: RunningServer, seeded: asyncpg.Connection
) -> None:
    token = server.token(USER)
    host = f"127.0.0.1:{server.port}"
    kind, code, _ = await socket_answer(server.ws, auth(token), origin=f"https://{host}")
    assert (kind, code) == ("closed", 4403)
    kind, _, _ = await socket_answer(server.ws, auth(token), origin=f"http://{host}")
    assert kind == "snapshot"


async def test_the_upgrade_413_names_its_own_bodies(billing: httpx.AsyncClient) -> None:
    response = await billing.post(
        "/v1/billing/upgrade", content=b'{"plan": "' + b"x" * 20_000 + b'"}'
    )
    assert response.status_code == 413
    assert "webhook" not in response.json()["message"]
    assert "upgrade" in response.json()["message"]


async def test_the_demo_page_and_its_files_send_security_headers(
    http: httpx.AsyncClient,
) -> None:
    for path in ("/", "/statebus.js", "/demo.js", "/demo.css"):
        response = await http.get(path)
        assert response.status_code == 200, path
        headers = response.headers
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-content-type-options"] == "nosniff"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_the_access_log_has_no_query_strings(dsn: str, tmp_path: Path) -> None:
    # The access log is on at --log-level debug only; that is where it must be clean.
    server = RunningServer(settings_for_tests(tmp_path), dsn, log_level="debug")
    server.start()
    http = httpx.AsyncClient(base_url=server.http, timeout=10)
    handler = Lines()
    access = logging.getLogger("uvicorn.access")
    access.addHandler(handler)
    try:
        await http.get("/healthz", params={"user_id": "user_secret_id", "token": "t0k3n"})
    finally:
        access.removeHandler(handler)
        await http.aclose()
        server.stop()
    assert any("/healthz" in line for line in handler.lines), handler.lines
    assert not any("user_secret_id" in line or "t0k3n" in line for line in handler.lines)


@pytest.fixture
def dev_server(dsn: str, tmp_path: Path) -> Iterator[RunningServer]:
    settings = settings_for_tests(tmp_path, generated_secret=True)
    running = RunningServer(settings, dsn)
    yield running
    running.stop()


async def test_the_generated_development_secret_is_warned_about_at_start(
    dev_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="statebus"):
        dev_server.start()
    warned = [r for r in caplog.records if r.name == "statebus" and r.levelno == logging.WARNING]
    assert warned and "development JWT secret" in warned[0].getMessage()
    assert SECRET not in caplog.text
