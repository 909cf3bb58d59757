"""Applying one stored Stripe event: which subscription it is about, and what to write.

An event's own copy of the subscription is never written: it may be late, duplicated or
out of order. The subscription is re-fetched from Stripe under its locks (store.py), so
whatever order events arrive in, the row ends at Stripe's current state. Thin (v2) event
notifications carry no copy at all, only the related object: they are handled the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import msgspec

from statebus import sqlfiles
from statebus.sessions import Conn
from statebus.stripe import store
from statebus.stripe.facts import SubscriptionFacts
from statebus.stripe.gateway import StripeGateway

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
THIN = "v2.core.event"  # `object` of a thin event notification
THIN_SUBSCRIPTION_PREFIX = "v1.customer.subscription."


def unix_seconds(created: int | str) -> int:
    """An event's `created`: unix seconds (v1 events) or ISO-8601 (thin events); 0 when a
    thin event's time cannot be read."""
    if isinstance(created, int):
        return created
    try:
        return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


class StoredEvent(msgspec.Struct):
    """The part of a Stripe event statebus reads (Stripe adds fields; they are ignored).
    Snapshot (v1) events carry `data.object`; thin (v2) ones `related_object`."""

    id: str
    type: str
    kind: str = msgspec.field(name="object", default="event")
    created: int | str = 0  # v1: unix seconds; thin: ISO-8601
    data: dict[str, Any] = {}
    related_object: dict[str, Any] | None = None
    livemode: bool | None = None
    account: str | None = None  # v1 Connect: the connected account
    context: str | None = None  # thin Connect: the same

    @property
    def obj(self) -> dict[str, Any]:
        obj = self.data.get("object")
        return obj if isinstance(obj, dict) else {}

    @property
    def thin(self) -> bool:
        return self.kind == THIN

    @property
    def created_unix(self) -> int:
        return unix_seconds(self.created)

    @property
    def connected_account(self) -> str | None:
        return self.account or self.context


event_decoder = msgspec.json.Decoder(StoredEvent)


@dataclass(frozen=True)
class Outcome:
    """applied / ignored end an event; unmatched waits for its customer to be linked;
    failed ends it as failed for good (the note says why)."""

    status: Literal["applied", "ignored", "unmatched", "failed"]
    note: str | None = None


@dataclass(frozen=True)
class Policy:
    """What this server applies: the key's mode (test or live), and Connect or not."""

    livemode: bool
    connect: bool = False


def _str(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def customer_of(event: StoredEvent) -> str | None:
    """The customer an event is about (kept with the stored event)."""
    return _str(event.obj.get("customer"))


def subscription_of(event: StoredEvent) -> str | None:
    """The subscription an event is about, or None when it is about none."""
    obj = event.obj
    if event.thin:
        related = event.related_object or {}
        if event.type.startswith(THIN_SUBSCRIPTION_PREFIX) and related.get("type") in (
            "subscription",
            None,
        ):
            return _str(related.get("id"))
        return None
    if event.type in SUBSCRIPTION_EVENTS:
        return _str(obj.get("id"))
    if event.type in INVOICE_EVENTS:
        # API versions from 2025-03-31 moved it under parent.subscription_details.
        details = (obj.get("parent") or {}).get("subscription_details") or {}
        return _str(obj.get("subscription")) or _str(details.get("subscription"))
    if event.type == CHECKOUT_COMPLETED and obj.get("mode") == "subscription":
        return _str(obj.get("subscription"))
    return None


def _refused(event: StoredEvent, policy: Policy) -> str | None:
    """Why this server must not apply the event, if it must not."""
    if event.livemode is not None and event.livemode != policy.livemode:
        mode = "live" if event.livemode else "test"
        key = "live" if policy.livemode else "test"
        return f"livemode mismatch: a {mode}-mode event, and STRIPE_API_KEY is a {key} key"
    if event.connected_account and not policy.connect:
        return "event of a connected account (Connect); set STATEBUS_STRIPE_CONNECT=1 to apply"
    return None


async def apply_event(
    conn: Conn, gateway: StripeGateway, event: StoredEvent, policy: Policy
) -> Outcome:
    """Applies one event inside the caller's transaction; Stripe errors propagate."""
    refused = _refused(event, policy)
    if refused is not None:
        return Outcome("ignored", refused)
    if event.type == CHECKOUT_COMPLETED and not event.thin:
        return await _apply_checkout(conn, gateway, event)
    handled = event.thin or event.type in SUBSCRIPTION_EVENTS | INVOICE_EVENTS
    sub_id = subscription_of(event) if handled else None
    if not handled:
        return Outcome("ignored", f"statebus does not handle {event.type}")
    if sub_id is None:
        return Outcome("ignored", "not about a subscription")
    return await sync_subscription(
        conn, gateway, sub_id, customer_of(event), account=event.connected_account
    )


async def sync_subscription(
    conn: Conn,
    gateway: StripeGateway,
    sub_id: str,
    customer: str | None,
    *,
    account: str | None = None,
    source: store.Source = "stripe_webhook",
) -> Outcome:
    """Reads the subscription from Stripe under its locks and writes it. Without the
    customer (thin events), one read finds it first; a subscription's customer never changes."""
    if customer is None:
        customer = (await gateway.subscription(sub_id, account)).customer
    await store.lock(conn, sub_id, customer)
    facts = await gateway.subscription(sub_id, account)  # Stripe's truth, read under the locks

    async def fetch(other: str) -> SubscriptionFacts | None:
        return await gateway.subscription_or_none(other, account)

    result = await store.write_subscription(conn, facts, source, fetch)
    if result.outcome == "unmatched":
        return Outcome("unmatched", result.detail)
    if result.outcome in ("superseded", "no_plan", "duplicate"):
        return Outcome("ignored", result.detail)
    return Outcome("applied", result.detail)


async def _apply_checkout(conn: Conn, gateway: StripeGateway, event: StoredEvent) -> Outcome:
    """Links `client_reference_id` (the user) to the session's customer, then syncs the
    subscription, all in one transaction: the user gets one version for both. Only
    subscription checkouts link: a one-off payment or a saved card says nothing of plans."""
    obj = event.obj
    if obj.get("mode") != "subscription":
        return Outcome("ignored", f"checkout of mode {obj.get('mode')!s}, not a subscription")
    user_id = _str(obj.get("client_reference_id")) or _str(
        (obj.get("metadata") or {}).get("user_id")
    )
    customer = customer_of(event)
    sub_id = subscription_of(event)
    await store.lock(conn, sub_id, customer)  # same order as sync_subscription
    await store.checkout_completed(conn, _str(obj.get("id")))
    if user_id is not None and customer is not None:
        if not await conn.fetchval(sqlfiles.queries()["stripe_user_exists"], user_id):
            return Outcome("unmatched", f"client_reference_id {user_id} is no user (yet)")
        try:
            await store.link_customer(conn, user_id, customer, "checkout")
        except store.CustomerTaken as exc:
            return Outcome("failed", str(exc))
    if sub_id is None:
        return Outcome("applied" if customer and user_id else "ignored", None)
    return await sync_subscription(conn, gateway, sub_id, customer, source="checkout")
