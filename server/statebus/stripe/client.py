"""Talking to Stripe: the few API calls statebus makes.

Every call goes through stripe-python's async methods on one `StripeClient` (httpx under
the hood), so the server's event loop never blocks on Stripe, and every call sends the
pinned API version (config.STRIPE_API_VERSION). Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any

import stripe

from statebus.config import Settings
from statebus.stripe.facts import SubscriptionFacts, facts_from

_SECRET = re.compile(r"\b(sk|rk|pk|whsec)_[A-Za-z0-9_*]+")


def redact(text: str) -> str:
    """Stripe error messages can quote an API key ("Invalid API Key provided: sk_...")."""
    return _SECRET.sub(r"\1_[redacted]", text)


def is_missing(exc: BaseException) -> bool:
    """Stripe says the object does not exist (and never will): retrying cannot help."""
    return isinstance(exc, stripe.InvalidRequestError) and exc.code == "resource_missing"


def live_key(api_key: str) -> bool:
    return api_key.startswith(("sk_live_", "rk_live_"))


class StripeNotConfigured(Exception):
    """STRIPE_API_KEY is not set."""


def idempotency_key(action: str, *parts: object) -> str:
    """Same change, same key (a retry is applied once); the next change, another key.

    Callers name the change itself (the operation, the subscription, the target) and the
    count of changes committed under the subscription's lock, read under that lock
    (store.lock): a change whose transaction did not commit is retried with its key, and
    cancel, resume, cancel gets three keys, so Stripe never replays an old answer for a
    new change."""
    text = "\x1f".join((f"statebus-{action}", *map(str, parts)))
    return f"statebus-{action}-" + hashlib.sha256(text.encode()).hexdigest()[:48]


def _replayed(obj: stripe.StripeObject) -> bool:
    response = obj.last_response
    return response is not None and response.headers.get("Idempotent-Replayed") == "true"


class StripeGateway:
    """The Stripe API as statebus uses it; one per process, closed with aclose()."""

    def __init__(self, settings: Settings, *, timeout: float = 20.0, retries: int = 2) -> None:
        if not settings.stripe_api_key:
            raise StripeNotConfigured("STRIPE_API_KEY is not set")
        self.livemode = live_key(settings.stripe_api_key)
        self._http = stripe.HTTPXClient(timeout=timeout)
        base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
        self._client = stripe.StripeClient(
            settings.stripe_api_key,
            stripe_version=settings.stripe_api_version,
            base_addresses=base,  # type: ignore[arg-type]
            max_network_retries=retries,
            http_client=self._http,
        )

    async def subscription(self, sub_id: str, account: str | None = None) -> SubscriptionFacts:
        options: dict[str, Any] = {"stripe_account": account} if account else {}
        return facts_from(
            await self._client.v1.subscriptions.retrieve_async(sub_id, None, options)  # type: ignore[arg-type]
        )

    async def subscription_or_none(
        self, sub_id: str, account: str | None = None
    ) -> SubscriptionFacts | None:
        try:
            return await self.subscription(sub_id, account)
        except stripe.InvalidRequestError as exc:
            if is_missing(exc):
                return None
            raise

    async def update(
        self, sub_id: str, params: dict[str, Any], key: str
    ) -> tuple[SubscriptionFacts, bool]:
        """Updates a subscription; returns it and whether Stripe replayed an earlier answer
        for this idempotency key (which may be stale: read it again then)."""
        sub = await self._client.v1.subscriptions.update_async(
            sub_id,
            params,  # type: ignore[arg-type]
            {"idempotency_key": key},
        )
        return facts_from(sub), _replayed(sub)

    async def subscriptions(self, customer: str | None = None) -> AsyncIterator[SubscriptionFacts]:
        """Every subscription (any status), newest first, following Stripe's pagination."""
        params: dict[str, Any] = {"status": "all", "limit": 100}
        if customer is not None:
            params["customer"] = customer
        page = await self._client.v1.subscriptions.list_async(params)  # type: ignore[arg-type]
        async for sub in page.auto_paging_iter():
            yield facts_from(sub)

    async def checkout_session(self, params: dict[str, Any], key: str) -> tuple[str, str]:
        """Creates a Checkout Session; returns its id and URL."""
        session = await self._client.v1.checkout.sessions.create_async(
            params,  # type: ignore[arg-type]
            {"idempotency_key": key},
        )
        return str(session.id), str(session.url)

    async def expire_checkout(self, session_id: str) -> str:
        """Expires an open Checkout Session so it can no longer be paid; returns the status
        it ends in: `expired`, or `complete` when the customer paid it first."""
        try:
            session = await self._client.v1.checkout.sessions.expire_async(session_id)
        except stripe.InvalidRequestError as exc:
            if is_missing(exc):
                return "expired"  # nothing left to pay
            # Only an open session can be expired: read which state it is in instead.
            session = await self._client.v1.checkout.sessions.retrieve_async(session_id)
        return str(session.status)

    async def portal_url(self, customer: str, return_url: str) -> str:
        session = await self._client.v1.billing_portal.sessions.create_async(
            {"customer": customer, "return_url": return_url}
        )
        return str(session.url)

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]
