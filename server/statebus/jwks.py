"""Signing keys from a JWKS endpoint (Clerk, Auth0, ...), fetched with httpx and cached by `kid`.

Fetching is asynchronous so the event loop never blocks on the identity provider (PyJWKClient
uses blocking urllib). Only keys usable for RS256 or ES256 are kept, each bound to the one
algorithm its JWK declares or its key type implies. An unknown `kid` triggers a refetch (key
rotation), but never more than once per `min_refetch_interval`, so a stream of made-up kids
cannot turn this process into a load generator against the provider.

Must never: log or raise with token material; block the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

log = logging.getLogger(__name__)

ACCEPTED_ALGORITHMS = frozenset({"RS256", "ES256"})


class JwksCache:
    """Keys of one JWKS URL by `kid`: fetched on first use, refreshed after `ttl` seconds."""

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        ttl: float = 600.0,
        min_refetch_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._http = http
        self._ttl = ttl
        self._min_interval = min_refetch_interval
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch, successful or not
        self._lock = asyncio.Lock()
        self.fetches = 0  # attempts so far; for metrics and tests

    async def get(self, kid: str) -> jwt.PyJWK | None:
        """The key for `kid`, refetching when the cache is stale or the kid unknown (throttled)."""
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self._ttl
        if (stale or kid not in self._keys) and self._may_fetch(now):
            await self._refresh(self._attempted_at)
        return self._keys.get(kid)

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self._min_interval

    async def _refresh(self, seen_attempt: float | None) -> None:
        async with self._lock:
            if self._attempted_at != seen_attempt:
                return  # another task fetched while we waited; use its result
            self._attempted_at = self._clock()
            self.fetches += 1
            try:
                response = await self._http.get(self.url, headers={"accept": "application/json"})
                response.raise_for_status()
                keys = parse_jwks(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                # Keep serving the keys we have; the throttle paces the retries.
                log.warning("fetching JWKS from %s failed: %s", self.url, exc)
                return
            self._keys = keys
            self._fetched_at = self._attempted_at


def parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """The RS256/ES256 signing keys of a JWKS document, by `kid`; other keys are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("JWKS document has no 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        algorithm = _implied_algorithm(entry)
        if (
            not isinstance(kid, str)
            or algorithm is None
            or entry.get("alg", algorithm) != algorithm
            or entry.get("use", "sig") != "sig"
            or "d" in entry  # a private key published by mistake is never trusted
        ):
            continue
        try:
            keys[kid] = jwt.PyJWK(entry, algorithm)
        except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
            log.warning("skipping unusable JWK %r: %s", kid, type(exc).__name__)
    return keys


def _implied_algorithm(jwk: dict[str, Any]) -> str | None:
    """The one algorithm a key type allows here; a JWK whose `alg` disagrees is dropped."""
    if jwk.get("kty") == "RSA":
        return "RS256"
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        return "ES256"
    return None
