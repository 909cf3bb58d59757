"""Applying one stored Stripe event: which subscription it is about, and what to write.

An event's own copy of the subscription is never written: it may be late, duplicated or
out of order. The subscription is re-fetched from Stripe under its lock (store.py), so
whatever order events arrive in, the row ends at Stripe's current state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from statebus import sqlfiles
from statebus.stripe import store
from statebus.stripe.client import StripeGateway

SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
    }
)
INVOICE_EVENTS = frozenset({"invoice.paid", "invoice.payment_failed"})
CHECKOUT_COMPLETED = "checkout.session.completed"


class StoredEvent(msgspec.Struct):
    """The part of a Stripe event statebus reads (Stripe adds fields; they are ignored)."""

    id: str
    type: str
    created: int = 0
    data: dict[str, Any] = {}

    @property
    def object(self) -> dict[str, Any]:
        obj = self.data.get("object")
        return obj if isinstance(obj, dict) else {}


event_decoder = msgspec.json.Decoder(StoredEvent)


@dataclass(frozen=True)
class Outcome:
    status: Literal["applied", "ignored", "unmatched"]
    note: str | None = None


def _str(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def customer_of(event: StoredEvent) -> str | None:
    """The customer an event is about (kept with the stored event)."""
    return _str(event.object.get("customer"))


def subscription_of(event: StoredEvent) -> str | None:
    """The subscription an event is about, or None when it is about none."""
    obj = event.object
    if event.type in SUBSCRIPTION_EVENTS:
        return _str(obj.get("id"))
    if event.type in INVOICE_EVENTS:
        # API versions from 2025-03-31 moved it under parent.subscription_details.
        details = (obj.get("parent") or {}).get("subscription_details") or {}
        return _str(obj.get("subscription")) or _str(details.get("subscription"))
    if event.type == CHECKOUT_COMPLETED:
        return _str(obj.get("subscription"))
    return None


async def apply_event(conn: store.Conn, gateway: StripeGateway, event: StoredEvent) -> Outcome:
    """Applies one event inside the caller's transaction; Stripe errors propagate."""
    if event.type == CHECKOUT_COMPLETED:
        return await _apply_checkout(conn, gateway, event)
    if event.type not in SUBSCRIPTION_EVENTS | INVOICE_EVENTS:
        return Outcome("ignored", f"statebus does not handle {event.type}")
    sub_id = subscription_of(event)
    if sub_id is None:
        return Outcome("ignored", "not about a subscription")
    return await _sync_subscription(conn, gateway, sub_id)


async def _sync_subscription(conn: store.Conn, gateway: StripeGateway, sub_id: str) -> Outcome:
    await store.lock_subscription(conn, sub_id)
    facts = await gateway.subscription(sub_id)  # Stripe's current truth, read under the lock
    result = await store.write_subscription(conn, facts, "stripe_webhook")
    if result.outcome == "unmatched":
        return Outcome("unmatched", result.detail)
    if result.outcome == "superseded":
        return Outcome("ignored", result.detail)
    return Outcome("applied")


async def _apply_checkout(conn: store.Conn, gateway: StripeGateway, event: StoredEvent) -> Outcome:
    """Links `client_reference_id` (the user) to the session's customer, then syncs the
    subscription, all in one transaction: the user gets one version for both."""
    obj = event.object
    user_id = _str(obj.get("client_reference_id")) or _str(
        (obj.get("metadata") or {}).get("user_id")
    )
    customer = customer_of(event)
    sub_id = subscription_of(event)
    if sub_id is not None:
        await store.lock_subscription(conn, sub_id)  # same lock order as _sync_subscription
    if user_id is not None and customer is not None:
        if not await conn.fetchval(sqlfiles.queries()["stripe_user_exists"], user_id):
            return Outcome("unmatched", f"client_reference_id {user_id} is no user (yet)")
        await store.link_customer(conn, user_id, customer, "stripe_webhook")
    if sub_id is None:
        return Outcome("applied" if customer and user_id else "ignored", None)
    return await _sync_subscription(conn, gateway, sub_id)
