"""Principals, who may read whom, bearer headers, issued tokens, the verifier's client."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from statebus.auth import (
    AuthSettings,
    Principal,
    TokenVerifier,
    bearer_token,
    issue_token,
)
from tests.unit.auth_support import (
    JWKS_URL,
    RSA_KEY,
    SECRET,
    USER,
    FakeIdp,
    claims,
)

# --- principal, may_read, helpers ----------------------------------------------------


@pytest.mark.parametrize(("role", "admin"), [("admin", True), ("user", False), (None, False)])
async def test_admin_role(hs: TokenVerifier, role: str | None, admin: bool) -> None:
    token = jwt.encode(claims(role=role), SECRET, algorithm="HS256")
    assert (await hs.verify(token)).admin is admin


def test_may_read(hs: TokenVerifier) -> None:
    user = Principal(user_id="u1", admin=False, expires_at=0)
    admin = Principal(user_id="root", admin=True, expires_at=0)
    assert hs.may_read(user, "u1")
    assert not hs.may_read(user, "u2")
    assert hs.may_read(admin, "u2")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer a b", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


async def test_issue_token_roundtrip(hs: TokenVerifier) -> None:
    before = time.time()
    principal = await hs.verify(issue_token(SECRET, USER, ttl=120, admin=True))
    assert principal.user_id == USER and principal.admin
    assert before + 119 <= principal.expires_at <= time.time() + 121
    assert not (await hs.verify(issue_token(SECRET, USER))).admin
    header = jwt.get_unverified_header(issue_token(SECRET, USER))
    assert header["alg"] == "HS256"


@pytest.mark.parametrize(
    "call",
    [
        lambda: issue_token("short", USER),
        lambda: issue_token(SECRET, ""),
        lambda: issue_token(SECRET, USER, ttl=0),
        lambda: TokenVerifier(
            AuthSettings(secret="short", jwks_url=None, audience=None, issuer=None)
        ),
        lambda: TokenVerifier(AuthSettings(secret=None, jwks_url=None, audience=None, issuer=None)),
    ],
)
def test_bad_configuration_is_refused_up_front(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()


async def test_verifier_owns_and_closes_its_own_client(
    idp: FakeIdp, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[httpx.AsyncClient] = []
    real = httpx.AsyncClient

    def recording(*args: Any, **kwargs: Any) -> httpx.AsyncClient:
        # Whatever client the verifier makes, routed to the fake provider and kept.
        client = real(*args, **kwargs, transport=httpx.MockTransport(idp.handler))
        made.append(client)
        return client

    monkeypatch.setattr(httpx, "AsyncClient", recording)
    settings = AuthSettings(secret=None, jwks_url=JWKS_URL, audience=None, issuer=None)
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    async with TokenVerifier(settings) as verifier:
        assert (await verifier.verify(token)).user_id == USER
        assert len(made) == 1 and not made[0].is_closed
    assert idp.requests == 1  # the keys came through the client it made
    assert made[0].is_closed


async def test_verifier_leaves_a_client_it_was_given_open(
    http: httpx.AsyncClient, idp: FakeIdp
) -> None:
    settings = AuthSettings(secret=None, jwks_url=JWKS_URL, audience=None, issuer=None)
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    async with TokenVerifier(settings, http=http) as verifier:
        assert (await verifier.verify(token)).user_id == USER
    assert idp.requests == 1
    assert not http.is_closed
    assert (await http.get(JWKS_URL)).status_code == 200  # its owner can still use it
