"""The token layer with real crypto: HS256 secrets, RS256/ES256 via a JWKS, alg confusion.

The JWKS endpoint is a third-party service, so it is served by `httpx.MockTransport`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm

from statebus.auth import (
    AuthSettings,
    Principal,
    TokenVerifier,
    issue_token,
)
from statebus.jwks import JwksCache, parse_jwks
from tests.unit.auth_support import (
    EC_KEY,
    JWKS_URL,
    RSA_KEY,
    RSA_KEY_2,
    SECRET,
    USER,
    Clock,
    FakeIdp,
    b64,
    claims,
    hand_made,
    refused,
    rsa_jwk,
)

# --- HS256 ---------------------------------------------------------------------------


async def test_valid_hs256_token(hs: TokenVerifier) -> None:
    payload = claims()
    principal = await hs.verify(jwt.encode(payload, SECRET, algorithm="HS256"))
    assert principal == Principal(user_id=USER, admin=False, expires_at=float(payload["exp"]))


async def test_expired_token(hs: TokenVerifier) -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 5), SECRET, algorithm="HS256")
    err = await refused(hs, token, "token_expired")
    assert err.message == "token has expired"


async def test_leeway_accepts_a_just_expired_token() -> None:
    settings = AuthSettings(secret=SECRET, jwks_url=None, audience=None, issuer=None, leeway=30)
    token = jwt.encode(claims(exp=int(time.time()) - 5), SECRET, algorithm="HS256")
    assert (await TokenVerifier(settings).verify(token)).user_id == USER


@pytest.mark.parametrize("claim", ["sub", "exp"])
async def test_missing_required_claim(hs: TokenVerifier, claim: str) -> None:
    token = jwt.encode(claims(**{claim: None}), SECRET, algorithm="HS256")
    err = await refused(hs, token, "invalid_token")
    assert repr(claim) in err.message


@pytest.mark.parametrize("sub", ["", 42, ["user"]])
async def test_sub_must_be_a_non_empty_string(hs: TokenVerifier, sub: object) -> None:
    await refused(hs, jwt.encode(claims(sub=sub), SECRET, algorithm="HS256"), "invalid_token")


async def test_wrong_secret(hs: TokenVerifier) -> None:
    token = jwt.encode(claims(), "another-secret-0123456789-abcdefghijk", algorithm="HS256")
    err = await refused(hs, token, "invalid_token")
    assert err.message == "token signature is invalid"


async def test_alg_none_is_refused(hs: TokenVerifier) -> None:
    token = hand_made({"alg": "none", "typ": "JWT"}, claims(), key=None)
    err = await refused(hs, token, "invalid_token")
    assert err.message == "token algorithm is not accepted"


async def test_other_hmac_algorithms_are_refused(hs: TokenVerifier) -> None:
    await refused(hs, jwt.encode(claims(), SECRET * 2, algorithm="HS512"), "invalid_token")


async def test_rs256_token_presented_to_hs256_verifier(hs: TokenVerifier) -> None:
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    await refused(hs, token, "invalid_token")


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "x" * 20_000])
async def test_garbage_is_invalid(hs: TokenVerifier, token: str) -> None:
    await refused(hs, token, "invalid_token")


# --- JWKS ----------------------------------------------------------------------------


async def test_rs256_via_jwks(jwks: TokenVerifier) -> None:
    token = jwt.encode(claims(role="admin"), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    principal = await jwks.verify(token)
    assert (principal.user_id, principal.admin) == (USER, True)


async def test_es256_via_jwks(jwks: TokenVerifier) -> None:
    token = jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})
    assert (await jwks.verify(token)).user_id == USER


async def test_hs256_signed_with_the_public_key_is_refused_by_jwks(jwks: TokenVerifier) -> None:
    """Alg confusion: the attacker knows the public key and uses its PEM as an HMAC secret."""
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    err = await refused(jwks, hand_made(header, claims(), key=pem), "invalid_token")
    assert err.message == "token algorithm is not accepted"


async def test_hs256_with_the_shared_secret_is_refused_by_jwks(jwks: TokenVerifier) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "rsa-1"})
    await refused(jwks, token, "invalid_token")


async def test_token_alg_must_match_the_keys_alg(jwks: TokenVerifier) -> None:
    # Signed by the EC key, but naming the RSA key's kid.
    token = jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "rsa-1"})
    await refused(jwks, token, "invalid_token")


async def test_token_without_kid_is_refused(jwks: TokenVerifier) -> None:
    await refused(jwks, jwt.encode(claims(), RSA_KEY, algorithm="RS256"), "invalid_token")


async def test_unknown_kid_refetches_once_per_window(
    jwks: TokenVerifier, idp: FakeIdp, clock: Clock
) -> None:
    first = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    await jwks.verify(first)
    assert idp.requests == 1

    idp.keys.append(rsa_jwk(RSA_KEY_2, "rsa-2"))  # the provider rotates keys
    clock.now += 31
    rotated = jwt.encode(claims(), RSA_KEY_2, algorithm="RS256", headers={"kid": "rsa-2"})
    assert (await jwks.verify(rotated)).user_id == USER
    assert idp.requests == 2

    ghost = jwt.encode(claims(), RSA_KEY_2, algorithm="RS256", headers={"kid": "ghost"})
    for _ in range(5):
        err = await refused(jwks, ghost, "invalid_token")
        assert err.message == "token is signed by an unknown key"
    assert idp.requests == 2  # within the throttle window: no refetch
    await jwks.verify(first)  # known kids keep working meanwhile
    assert idp.requests == 2

    clock.now += 31
    await refused(jwks, ghost, "invalid_token")
    assert idp.requests == 3


async def test_keys_are_refetched_after_the_cache_ttl(
    jwks: TokenVerifier, idp: FakeIdp, clock: Clock
) -> None:
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    await jwks.verify(token)
    clock.now += 599
    await jwks.verify(token)
    assert idp.requests == 1
    idp.keys = [rsa_jwk(RSA_KEY_2, "rsa-2")]  # rsa-1 retired
    clock.now += 2
    await refused(jwks, token, "invalid_token")
    assert idp.requests == 2


async def test_provider_outage_keeps_cached_keys(
    jwks: TokenVerifier, idp: FakeIdp, clock: Clock
) -> None:
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    await jwks.verify(token)
    idp.down = True
    clock.now += 700
    assert (await jwks.verify(token)).user_id == USER
    assert idp.requests == 2


async def test_provider_down_from_the_start_is_invalid_token(
    jwks: TokenVerifier, idp: FakeIdp
) -> None:
    idp.down = True
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    await refused(jwks, token, "invalid_token")


async def test_concurrent_cold_verifies_fetch_once(http: httpx.AsyncClient, idp: FakeIdp) -> None:
    cache = JwksCache(JWKS_URL, http)
    found = await asyncio.gather(*(cache.get("rsa-1") for _ in range(10)))
    assert all(key is not None for key in found)
    assert idp.requests == 1


async def test_jwks_skips_keys_it_must_not_trust(jwks: TokenVerifier, idp: FakeIdp) -> None:
    private = json.loads(RSAAlgorithm.to_jwk(RSA_KEY))
    served: list[Any] = [
        {**rsa_jwk(RSA_KEY, "wrong-alg"), "alg": "RS512"},
        {**rsa_jwk(RSA_KEY, "enc"), "use": "enc"},
        {**private, "kid": "private"},
        {"kty": "oct", "k": b64(SECRET.encode()), "kid": "oct"},
        {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        "not-a-key",
        rsa_jwk(RSA_KEY, "good"),
    ]
    assert set(parse_jwks({"keys": served})) == {"good"}
    idp.keys = served
    for kid in ("wrong-alg", "enc", "private", "oct", "p384", "broken"):
        algorithm = "HS256" if kid == "oct" else "RS256"
        key: Any = SECRET if kid == "oct" else RSA_KEY
        token = jwt.encode(claims(), key, algorithm=algorithm, headers={"kid": kid})
        await refused(jwks, token, "invalid_token")
    good = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "good"})
    assert (await jwks.verify(good)).user_id == USER


# --- audience and issuer -------------------------------------------------------------


async def test_audience_and_issuer_checked_when_configured(
    make_jwks_verifier: Callable[..., TokenVerifier],
) -> None:
    verifier = make_jwks_verifier(audience="statebus", issuer="https://idp.example")

    def signed(**extra: Any) -> str:
        return jwt.encode(claims(**extra), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})

    ok = signed(aud="statebus", iss="https://idp.example")
    assert (await verifier.verify(ok)).user_id == USER
    err = await refused(verifier, signed(aud="other", iss="https://idp.example"), "invalid_token")
    assert err.message == "token audience is not accepted"
    err = await refused(verifier, signed(aud="statebus", iss="https://evil"), "invalid_token")
    assert err.message == "token issuer is not accepted"
    err = await refused(verifier, signed(iss="https://idp.example"), "invalid_token")
    assert err.message == "token has no 'aud' claim"
    await refused(verifier, signed(aud="statebus"), "invalid_token")


async def test_audience_not_checked_when_not_configured(hs: TokenVerifier) -> None:
    token = jwt.encode(claims(aud="anything", iss="anyone"), SECRET, algorithm="HS256")
    assert (await hs.verify(token)).user_id == USER


async def test_hs256_audience_mismatch() -> None:
    settings = AuthSettings(secret=SECRET, jwks_url=None, audience="statebus", issuer="me")
    verifier = TokenVerifier(settings)
    good = issue_token(SECRET, USER, audience="statebus", issuer="me")
    assert (await verifier.verify(good)).user_id == USER
    await refused(verifier, issue_token(SECRET, USER, audience="x", issuer="me"), "invalid_token")
    await refused(verifier, issue_token(SECRET, USER, audience="statebus"), "invalid_token")
