"""Fixtures of the token tests: an HS256 verifier, a JWKS one and its fake provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from statebus.auth import (
    AuthSettings,
    TokenVerifier,
)
from statebus.jwks import JwksCache
from tests.unit.auth_support import (
    EC_KEY,
    JWKS_URL,
    RSA_KEY,
    SECRET,
    Clock,
    FakeIdp,
    ec_jwk,
    rsa_jwk,
)


@pytest.fixture
def hs() -> TokenVerifier:
    return TokenVerifier(AuthSettings(secret=SECRET, jwks_url=None, audience=None, issuer=None))


@pytest.fixture
def idp() -> FakeIdp:
    return FakeIdp(rsa_jwk(RSA_KEY, "rsa-1"), ec_jwk(EC_KEY, "ec-1"))


@pytest.fixture
async def http(idp: FakeIdp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(idp.handler)) as client:
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_jwks_verifier(http: httpx.AsyncClient, clock: Clock) -> Callable[..., TokenVerifier]:
    def make(audience: str | None = None, issuer: str | None = None) -> TokenVerifier:
        settings = AuthSettings(secret=SECRET, jwks_url=JWKS_URL, audience=audience, issuer=issuer)
        verifier = TokenVerifier(settings, http=http)
        verifier.jwks = JwksCache(JWKS_URL, http, clock=clock)  # same cache, test-driven time
        return verifier

    return make


@pytest.fixture
def jwks(make_jwks_verifier: Callable[..., TokenVerifier]) -> TokenVerifier:
    return make_jwks_verifier()
