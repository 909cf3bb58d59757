"""Property tests against the running server: whatever a client sends, the answer is a
2xx/3xx/4xx (a JSON error for 4xx) or a 44xx close with a JSON error frame, the server
stays healthy, and rejected input leaves the public tables and statebus.history as they
were. Example counts are bounded so CI stays fast (STATEBUS_FUZZ_EXAMPLES raises them).

Hypothesis drives plain synchronous clients in a worker thread; the test's own event
loop stays free to answer the database look-ups the properties need.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import asyncpg
import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Route
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from statebus.testing.fake_stripe import FakeStripe, sign_payload
from statebus.testing.server import SECRET, RunningServer
from tests.stripe_support import SECRET as WEBHOOK_SECRET
from tests.stripe_support import seed_subscriber

pytestmark = pytest.mark.asyncio

USER = "user_2zRnraoVNDAegfHnci1xUMWybwz"
EXAMPLES = int(os.environ.get("STATEBUS_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CLOSE_CODES = {4400, 4401, 4403, 4429}
T = TypeVar("T")

# Everything statebus's own tables hold that a rejected request must leave alone.
FINGERPRINT = """
SELECT md5(concat_ws('|',
    (SELECT string_agg(t::text, ',' ORDER BY t::text) FROM public.plans t),
    (SELECT string_agg(t::text, ',' ORDER BY t::text) FROM public.users t),
    (SELECT string_agg(t::text, ',' ORDER BY t::text) FROM public.user_subscriptions t),
    (SELECT string_agg(t::text, ',' ORDER BY t::text) FROM public.user_billing t),
    (SELECT string_agg(t::text, ',' ORDER BY t::text) FROM public.user_usage t),
    (SELECT string_agg(t::text, ',' ORDER BY t::text) FROM public.user_system_data t),
    (SELECT string_agg(t::text, ',' ORDER BY t::text) FROM statebus.history t)))
"""


def token(sub: str, *, ttl: int = 600, **claims: Any) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + ttl, **claims}, SECRET, "HS256")


# --- strategies -----------------------------------------------------------------------

any_text = st.text(max_size=40)  # every code point, NUL and lone surrogates included
# Text PostgreSQL refuses or bounds, drawn on purpose: it found the 5xx of issue 10.
edge_text = st.one_of(
    any_text,
    st.tuples(any_text, any_text).map(lambda parts: parts[0] + "\x00" + parts[1]),
    st.text(min_size=250, max_size=300),
)
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=60,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=16,
)
tokens = st.one_of(
    st.builds(lambda: token(USER)),
    st.builds(lambda: token("ops", role="admin")),
    st.builds(lambda: token(USER, ttl=-60)),
    edge_text.filter(bool).map(lambda sub: token(sub)),
    edge_text.filter(bool).map(lambda sub: token(sub, role="admin")),
    header_text,
    # Signed, with any JSON in the registered claims: a signed token is still input.
    st.dictionaries(st.sampled_from(["sub", "exp", "nbf", "iat", "aud", "role"]), json_values).map(
        lambda claims: jwt.encode({"sub": USER, "exp": 2**40, **claims}, SECRET, "HS256")
    ),
)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    edge_text.map(lambda plan: json.dumps({"plan": plan}).encode()),
    st.integers(60, 3000).map(lambda d: ('{"plan": ' + nested(d) + "}").encode()),
)


# Requests no route answers, or not with that method.
ODD_REQUESTS = [
    ("GET", "/../sql/demo.sql"),
    ("GET", "/statebus.js/../../config.py"),
    ("POST", "/v1/state"),
    ("PUT", "/v1/billing/upgrade"),
    ("DELETE", "/"),
]


def endpoints(app: Starlette) -> list[tuple[str, str]]:
    """Every (method, path) the app routes: a route added later is fuzzed too."""
    found = [
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in sorted(route.methods or ())
        if method != "HEAD"
    ]
    assert ("POST", "/v1/billing/upgrade") in found
    return found + ODD_REQUESTS


@st.composite
def requests(draw: st.DrawFn, routes: list[tuple[str, str]]) -> tuple[str, str, dict[str, Any]]:
    method, path = draw(st.sampled_from(routes))
    headers: dict[str, bytes] = {}
    auth = draw(st.one_of(st.none(), tokens.map(lambda t: "Bearer " + t), header_text))
    if auth is not None:
        headers["Authorization"] = auth.encode("latin-1", "replace").strip(b" \t")
    for name in draw(
        st.lists(
            st.sampled_from(
                ["If-None-Match", "Content-Type", "Stripe-Signature", "Origin", "Accept"]
            ),
            max_size=3,
            unique=True,
        )
    ):
        value = draw(header_text)
        if name == "Stripe-Signature" and draw(st.booleans()):
            value = f"t={draw(st.integers(-(2**40), 2**40))},v1={value}"  # Stripe's shape
        # Leading and trailing blanks are not a header value (HTTP trims them).
        headers[name] = value.encode("latin-1").strip(b" \t")
    options: dict[str, Any] = {"headers": headers}
    if draw(st.booleans()):
        options["params"] = {"user_id": draw(edge_text)}
    if method != "GET":
        options["content"] = draw(bodies)
    return method, path, options


@st.composite
def webhook_events(draw: st.DrawFn) -> bytes:
    event: dict[str, Any] = {
        "id": draw(st.one_of(edge_text, st.integers(), st.none(), st.just("evt_fuzz"))),
        "type": draw(
            st.one_of(
                any_text,
                st.sampled_from(["customer.subscription.updated", "invoice.paid", "ping"]),
            )
        ),
        "created": draw(st.one_of(st.integers(-(2**70), 2**70), st.floats(), any_text)),
        "data": draw(st.one_of(json_values, st.builds(dict, object=json_values))),
    }
    if draw(st.booleans()):
        event["extra"] = draw(json_values)
    text = json.dumps(event)
    if draw(st.integers(0, 9)) == 0:
        text = text[:-1] + ', "deep": ' + nested(draw(st.integers(60, 5000))) + "}"
    if draw(st.integers(0, 4)) == 0:  # numbers as written: jsonb keeps their digits
        number = draw(
            st.from_regex(
                r"-?[1-9][0-9]{0,20}(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,6})?", fullmatch=True
            )
        )
        number += draw(st.sampled_from(["", "1" * 5000]))
        text = text[:-1] + ', "amount": ' + number + "}"
    return text.encode("utf-8", "surrogatepass")


socket_frames = st.one_of(
    st.binary(max_size=300),
    any_text,
    st.integers(0, 30_000).map(lambda n: json.dumps({"type": "auth", "token": "a" * n})),
    st.builds(
        lambda tok, since, user_id, extra: json.dumps(
            {"type": "auth", "token": tok, **since, **user_id, **extra}
        ),
        tokens,
        st.one_of(st.just({}), st.builds(lambda s: {"since": s}, json_values)),
        st.one_of(st.just({}), st.builds(lambda u: {"user_id": u}, edge_text)),
        # Long non-ASCII field names: msgspec quotes them in its error, and a close
        # reason past 123 bytes once dropped the socket without a close code.
        st.one_of(st.just({}), st.dictionaries(st.text(max_size=80), json_values, max_size=2)),
    ),
    json_values.map(json.dumps),
)


# --- running properties in a thread ---------------------------------------------------


class Harness:
    """Runs coroutines on the test's loop from the Hypothesis thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, conn: asyncpg.Connection) -> None:
        self.loop, self.conn = loop, conn

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def fingerprint(self) -> str:
        value: str = self.run(self.conn.fetchval(FINGERPRINT))
        return value

    def stored_events(self) -> int:
        count: int = self.run(self.conn.fetchval("SELECT count(*) FROM statebus.stripe_events"))
        return count


async def in_thread(check: Callable[[], None]) -> None:
    await asyncio.to_thread(check)


def assert_answer_ok(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "message"}, body
        assert "Traceback" not in body["message"]


def assert_healthy(app: RunningServer) -> None:
    with httpx.Client(base_url=app.http, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
    with connect(app.ws, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": token(USER)}))
        assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"


@pytest.fixture
async def harness(app: RunningServer, conn: asyncpg.Connection, fake: FakeStripe) -> Harness:
    await seed_subscriber(conn, fake, USER)
    return Harness(asyncio.get_running_loop(), conn)


async def test_no_http_request_gets_a_5xx_and_a_refused_one_changes_nothing(
    app: RunningServer, harness: Harness
) -> None:
    @FUZZ
    @given(requests(endpoints(app.app)))
    def check(request: tuple[str, str, dict[str, Any]]) -> None:
        method, path, options = request
        before = harness.fingerprint()
        with httpx.Client(base_url=app.http, timeout=15) as client:
            response = client.request(method, path, **options)
        assert_answer_ok(response)
        if response.status_code >= 400:  # a 2xx may change things: a drawn valid request
            assert harness.fingerprint() == before, (method, path, response.status_code)

    await in_thread(check)
    await in_thread(lambda: assert_healthy(app))


async def test_no_signed_webhook_body_gets_a_5xx(app: RunningServer, harness: Harness) -> None:
    before = await harness.conn.fetchval(FINGERPRINT)

    @FUZZ
    @given(webhook_events())
    def check(body: bytes) -> None:
        stored = harness.stored_events()
        headers = {"Stripe-Signature": sign_payload(body, WEBHOOK_SECRET)}
        with httpx.Client(base_url=app.http, timeout=15) as client:
            response = client.post("/v1/stripe/webhook", content=body, headers=headers)
        assert response.status_code in (200, 400), (response.status_code, response.text)
        assert_answer_ok(response)
        if response.status_code == 400:
            assert harness.stored_events() == stored

    await in_thread(check)
    # Stored events name no subscription Stripe knows: applying them writes nothing.
    assert await harness.conn.fetchval(FINGERPRINT) == before
    await in_thread(lambda: assert_healthy(app))


async def test_no_socket_frame_drops_the_socket_without_a_close_code(
    app: RunningServer, harness: Harness
) -> None:
    before = await harness.conn.fetchval(FINGERPRINT)

    @FUZZ
    @given(socket_frames, st.sampled_from([None, "http://evil.example", "null"]))
    def check(frame: str | bytes, origin: str | None) -> None:
        headers = {"Origin": origin} if origin else None
        if isinstance(frame, str):
            frame = frame.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        with connect(app.ws, additional_headers=headers, open_timeout=10) as ws:
            error: dict[str, Any] | None = None
            try:
                ws.send(frame)
            except ConnectionClosed:
                pass  # refused before reading it (origin): the error frame is still queued
            try:
                while True:
                    message = json.loads(ws.recv(timeout=10))
                    if message["type"] == "error":
                        error = message
                        continue
                    assert message["type"] in ("snapshot", "current"), message
                    return  # authenticated: a valid token was drawn
            except ConnectionClosed as closed:
                assert closed.rcvd is not None, "closed without a close frame"
                assert closed.rcvd.code in CLOSE_CODES, closed.rcvd
                assert error is not None and set(error) == {"type", "code", "message"}

    await in_thread(check)
    assert await harness.conn.fetchval(FINGERPRINT) == before
    await in_thread(lambda: assert_healthy(app))
