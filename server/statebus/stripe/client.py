"""Talking to Stripe: the few API calls statebus makes, and what it reads from a subscription.

Every call goes through stripe-python's async methods on one `StripeClient` (httpx under
the hood), so the server's event loop never blocks on Stripe. Nothing here touches the
database.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
from stripe.params import SubscriptionUpdateParams, SubscriptionUpdateParamsItem

from statebus.config import Settings

ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})


_SECRET = re.compile(r"\b(sk|rk|pk|whsec)_[A-Za-z0-9_*]+")


def redact(text: str) -> str:
    """Stripe error messages can quote an API key ("Invalid API Key provided: sk_...")."""
    return _SECRET.sub(r"\1_[redacted]", text)


class StripeNotConfigured(Exception):
    """STRIPE_API_KEY is not set."""


@dataclass(frozen=True)
class SubscriptionFacts:
    """What statebus keeps of one Stripe subscription, read from Stripe's current object."""

    id: str
    customer: str
    status: str
    price_id: str | None
    item_id: str | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    created: int
    metadata_user_id: str | None

    @property
    def ended(self) -> bool:
        return self.status in ENDED_STATUSES


def _id_of(value: Any) -> str | None:
    """Stripe fields like `customer` are an id, or the object itself when expanded."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        inner = value.get("id")
        return inner if isinstance(inner, str) else None
    return None


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) else None


def facts_from(obj: stripe.Subscription | dict[str, Any]) -> SubscriptionFacts:
    """Reads a subscription as returned by the API (any API version)."""
    sub: dict[str, Any] = obj if isinstance(obj, dict) else obj.to_dict()
    items = (sub.get("items") or {}).get("data") or []
    first: dict[str, Any] = items[0] if items else {}
    # From API version 2025-03-31 the period lives on the items, not the subscription.
    period_end = first.get("current_period_end") or sub.get("current_period_end")
    metadata = sub.get("metadata") or {}
    user_id = metadata.get("user_id")
    return SubscriptionFacts(
        id=str(sub["id"]),
        customer=_id_of(sub.get("customer")) or "",
        status=str(sub.get("status")),
        price_id=_id_of(first.get("price")),
        item_id=_id_of(first.get("id")),
        current_period_end=_timestamp(period_end),
        cancel_at_period_end=bool(sub.get("cancel_at_period_end")),
        created=int(sub.get("created") or 0),
        metadata_user_id=user_id if isinstance(user_id, str) and user_id else None,
    )


def upgrade_idempotency_key(user_id: str, sub_id: str, current: str, target: str, v: int) -> str:
    """Same request, same key (a retry is applied once); the user's state version makes a
    later identical change (glow_up -> viral_surge again, after a downgrade) a new key."""
    text = "\x1f".join(("statebus-upgrade", user_id, sub_id, current, target, str(v)))
    return "statebus-upgrade-" + hashlib.sha256(text.encode()).hexdigest()[:48]


class StripeGateway:
    """The Stripe API as statebus uses it; one per process, closed with aclose()."""

    def __init__(self, settings: Settings, *, timeout: float = 20.0, retries: int = 2) -> None:
        if not settings.stripe_api_key:
            raise StripeNotConfigured("STRIPE_API_KEY is not set")
        self._http = stripe.HTTPXClient(timeout=timeout)
        base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
        self._client = stripe.StripeClient(
            settings.stripe_api_key,
            base_addresses=base,  # type: ignore[arg-type]
            max_network_retries=retries,
            http_client=self._http,
        )

    async def subscription(self, sub_id: str) -> SubscriptionFacts:
        return facts_from(await self._client.v1.subscriptions.retrieve_async(sub_id))

    async def change_price(
        self, facts: SubscriptionFacts, price_id: str, *, proration: str, idempotency_key: str
    ) -> tuple[SubscriptionFacts, bool]:
        """Points the subscription's item at `price_id`; returns the new subscription and
        whether Stripe replayed an earlier answer for this key (which may be stale)."""
        item: SubscriptionUpdateParamsItem = {"price": price_id}
        if facts.item_id:
            item["id"] = facts.item_id
        params: SubscriptionUpdateParams = {
            "items": [item],
            "proration_behavior": proration,
        }
        sub = await self._client.v1.subscriptions.update_async(
            facts.id, params, {"idempotency_key": idempotency_key}
        )
        response = sub.last_response
        replayed = response is not None and response.headers.get("Idempotent-Replayed") == "true"
        return facts_from(sub), replayed

    async def subscriptions(self, customer: str | None = None) -> AsyncIterator[SubscriptionFacts]:
        """Every subscription (any status), newest first, following Stripe's pagination."""
        params: dict[str, Any] = {"status": "all", "limit": 100}
        if customer is not None:
            params["customer"] = customer
        page = await self._client.v1.subscriptions.list_async(params)  # type: ignore[arg-type]
        async for sub in page.auto_paging_iter():
            yield facts_from(sub)

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]
