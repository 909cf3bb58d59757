"""What statebus reads from a Stripe subscription, and which of a customer's counts.

Read from Stripe's current object shape (API version pinned in gateway.py) and, where the
shape changed, from the older one too: periods live on the items from 2025-03-31 on;
flexible billing mode (the default for new subscriptions since 2025-09-30) schedules an
end with `cancel_at` and may leave `cancel_at_period_end` false.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe

ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})

# One ranking of a customer's subscriptions, used by webhooks, upgrade and reconcile:
# the user shows the best. Live ones first, then ones waiting on the customer, then ended.
_TIERS = {
    "active": 2,
    "trialing": 2,
    "past_due": 2,
    "incomplete": 1,
    "unpaid": 1,
    "paused": 1,
}


@dataclass(frozen=True)
class Item:
    """One subscription item: a price (a plan's, or an add-on's) and its period."""

    id: str
    price_id: str | None
    current_period_end: datetime | None


@dataclass(frozen=True)
class SubscriptionFacts:
    """What statebus keeps of one Stripe subscription, read from Stripe's current object."""

    id: str
    customer: str
    status: str
    items: tuple[Item, ...]
    period_end: datetime | None  # the subscription-level one (API versions before 2025-03-31)
    cancel_at_period_end: bool
    cancel_at: datetime | None
    created: int
    livemode: bool
    metadata_user_id: str | None

    @property
    def ended(self) -> bool:
        return self.status in ENDED_STATUSES

    @property
    def prices(self) -> list[str]:
        return [item.price_id for item in self.items if item.price_id]

    def item_for(self, price_id: str) -> Item | None:
        return next((item for item in self.items if item.price_id == price_id), None)

    def ends_at(self, period_end: datetime | None) -> datetime | None:
        """When the subscription is scheduled to end, if it is: `cancel_at` (flexible billing
        mode, or a chosen date), else the period's end when `cancel_at_period_end`."""
        if self.ended:
            return None
        if self.cancel_at is not None:
            return self.cancel_at
        return period_end if self.cancel_at_period_end else None


def rank(facts: SubscriptionFacts) -> tuple[int, int, str]:
    """Higher is the one to show: status tier, then the newest, then the id (a total order)."""
    return (_TIERS.get(facts.status, 0), facts.created, facts.id)


def best(candidates: list[SubscriptionFacts]) -> SubscriptionFacts:
    return max(candidates, key=rank)


def _id_of(value: Any) -> str | None:
    """Stripe fields like `customer` are an id, or the object itself when expanded."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        inner = value.get("id")
        return inner if isinstance(inner, str) and inner else None
    return None


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) else None


def facts_from(obj: stripe.Subscription | dict[str, Any]) -> SubscriptionFacts:
    """Reads a subscription as returned by the API (current and older versions)."""
    sub: dict[str, Any] = obj if isinstance(obj, dict) else obj.to_dict()
    items = tuple(
        Item(
            id=str(item.get("id") or ""),
            price_id=_id_of(item.get("price")) or _id_of(item.get("plan")),
            current_period_end=_timestamp(item.get("current_period_end")),
        )
        for item in ((sub.get("items") or {}).get("data") or [])
        if isinstance(item, dict)
    )
    user_id = (sub.get("metadata") or {}).get("user_id")
    return SubscriptionFacts(
        id=str(sub["id"]),
        customer=_id_of(sub.get("customer")) or "",
        status=str(sub.get("status")),
        items=items,
        period_end=_timestamp(sub.get("current_period_end")),
        cancel_at_period_end=bool(sub.get("cancel_at_period_end")),
        cancel_at=_timestamp(sub.get("cancel_at")),
        created=int(sub.get("created") or 0),
        livemode=bool(sub.get("livemode")),
        metadata_user_id=user_id if isinstance(user_id, str) and user_id else None,
    )
