"""In-memory Stripe objects behind the fake Stripe API server.

Holds prices, customers and subscriptions as plain dicts shaped like Stripe's JSON, and the
operations both the HTTP routes and tests use on them. It knows nothing about HTTP; the
caller holds ``StripeState.lock`` around every call.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from statebus.testing.fake_stripe.wire import JSON, StripeError, missing, new_id

PERIOD_SECONDS = 30 * 86400
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})


class StripeState:
    """Every object the fake knows, with a creation order (for lists) and revisions."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.prices: dict[str, JSON] = {}
        self.customers: dict[str, JSON] = {}
        self.subscriptions: dict[str, JSON] = {}
        self.checkout_sessions: dict[str, JSON] = {}
        self.portal_sessions: dict[str, JSON] = {}
        self.revisions: dict[str, int] = {}
        self.plan_items: dict[str, str] = {}  # subscription -> the item `price=` changes
        self.sells: dict[str, JSON] = {}  # checkout session -> prices, subscription metadata
        self.outbox: list[tuple[str, JSON]] = []  # events to send: (type, object)
        self.base_url = ""  # where the fake serves (checkout and portal pages)
        self._order: dict[str, int] = {}

    def emit(self, event_type: str, obj: JSON) -> None:
        self.outbox.append((event_type, copy.deepcopy(obj)))

    def _remember(self, obj_id: str) -> None:
        self._order[obj_id] = len(self._order)

    # -- prices and customers ------------------------------------------------------------

    def add_price(self, price_id: str, *, product: str = "prod_x", unit_amount: int = 1000) -> JSON:
        price: JSON = {
            "id": price_id,
            "object": "price",
            "active": True,
            "created": int(time.time()),
            "currency": "usd",
            "livemode": False,
            "lookup_key": None,
            "metadata": {},
            "product": product,
            "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
            "type": "recurring",
            "unit_amount": unit_amount,
        }
        self.prices[price_id] = price
        self._remember(price_id)
        return copy.deepcopy(price)

    def price(self, price_id: str, param: str = "id") -> JSON:
        if price_id not in self.prices:
            raise missing("price", price_id, param)
        return copy.deepcopy(self.prices[price_id])

    def add_customer(
        self,
        customer_id: str | None = None,
        *,
        email: str | None = None,
        name: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> JSON:
        customer: JSON = {
            "id": customer_id or new_id("cus"),
            "object": "customer",
            "created": int(time.time()),
            "email": email,
            "name": name,
            "livemode": False,
            "metadata": dict(metadata or {}),
        }
        self.customers[customer["id"]] = customer
        self._remember(customer["id"])
        return copy.deepcopy(customer)

    def customer(self, customer_id: str, param: str = "id") -> JSON:
        if customer_id not in self.customers:
            raise missing("customer", customer_id, param)
        return copy.deepcopy(self.customers[customer_id])

    # -- subscriptions -------------------------------------------------------------------

    def add_subscription(
        self,
        *,
        customer: str,
        price: str,
        status: str = "active",
        sub_id: str | None = None,
        metadata: dict[str, str] | None = None,
        current_period_end: int | None = None,
        cancel_at_period_end: bool = False,
        addons: Iterable[str] = (),
        addons_first: bool = False,
        billing_mode: str = "flexible",
        livemode: bool = False,
    ) -> JSON:
        """A subscription in today's shape (periods on the items, `billing_mode`), with the
        plan item `price` and one item per add-on price, listed after it or before it."""
        now = int(time.time())
        period_end = current_period_end or now + PERIOD_SECONDS
        ended = status in ENDED_STATUSES
        sub: JSON = {
            "id": sub_id or new_id("sub"),
            "object": "subscription",
            "billing_mode": {"type": billing_mode, "updated_at": now},
            "customer": customer,
            "status": status,
            "cancel_at": period_end if cancel_at_period_end else None,
            "cancel_at_period_end": cancel_at_period_end,
            "canceled_at": now if ended else None,
            "ended_at": now if ended else None,
            "created": now,
            "livemode": livemode,
            "metadata": dict(metadata or {}),
            "items": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": "/v1/subscription_items",
            },
            "latest_invoice": None,
        }
        self.subscriptions[sub["id"]] = sub
        self._remember(sub["id"])
        self.revisions[sub["id"]] = 1
        plan = self.add_item(sub["id"], price, period_end)
        self.plan_items[sub["id"]] = plan["id"]
        for addon in addons:
            self.add_item(sub["id"], addon, period_end, first=addons_first)
        self.emit("customer.subscription.created", sub)
        return copy.deepcopy(sub)

    def put_subscription(self, sub: JSON, plan_item: str | None) -> None:
        if sub["id"] not in self.subscriptions:
            self._remember(sub["id"])
            self.revisions[sub["id"]] = 0
        self.subscriptions[sub["id"]] = copy.deepcopy(sub)
        self.plan_items[sub["id"]] = plan_item or sub["items"]["data"][0]["id"]
        self.bump(sub["id"])

    def add_item(self, sub_id: str, price_id: str, period_end: int, first: bool = False) -> JSON:
        sub = self._sub(sub_id)
        now = int(time.time())
        item: JSON = {
            "id": new_id("si"),
            "object": "subscription_item",
            "created": now,
            "current_period_start": now,
            "current_period_end": period_end,
            "metadata": {},
            "price": self.price(price_id, f"items[{len(sub['items']['data'])}][price]"),
            "quantity": 1,
            "subscription": sub_id,
        }
        items: list[JSON] = sub["items"]["data"]
        items.insert(0 if first else len(items), item)
        sub["items"]["total_count"] = len(items)
        return item

    def subscription(self, sub_id: str) -> JSON:
        return copy.deepcopy(self._sub(sub_id))

    def _sub(self, sub_id: str) -> JSON:
        if sub_id not in self.subscriptions:
            raise missing("subscription", sub_id)
        return self.subscriptions[sub_id]

    def set_item_price(self, sub_id: str, item_id: str | None, price_id: str) -> None:
        """Point one item (the plan item when ``item_id`` is None) at ``price_id``; no bump."""
        sub = self._sub(sub_id)
        wanted = item_id or self.plan_items.get(sub_id)
        matches = [item for item in sub["items"]["data"] if item["id"] == wanted]
        if not matches:
            raise missing("subscription_item", str(item_id), "items[0][id]")
        matches[0]["price"] = self.price(price_id, "items[0][price]")

    def change_subscription(self, sub_id: str, **changes: Any) -> JSON:
        """Apply changes as the dashboard would; ``price`` changes the plan item,
        ``current_period_end`` every item, ``metadata`` replaces; ``cancel_at_period_end``
        also sets or clears ``cancel_at`` (as Stripe does). Unknown fields raise KeyError."""
        sub = self._sub(sub_id)
        for key, value in changes.items():
            if key == "price":
                self.set_item_price(sub_id, None, value)
            elif key == "current_period_end":
                for item in sub["items"]["data"]:
                    item[key] = value
            elif key == "metadata":
                sub[key] = dict(value)
            elif key == "cancel_at_period_end":
                sub[key] = bool(value)
                sub["cancel_at"] = self.period_end(sub_id) if value else None
            elif key in sub and key not in ("id", "object", "items"):
                sub[key] = value
            else:
                raise KeyError(f"fake subscription has no settable field {key!r}")
        if changes.get("status") in ENDED_STATUSES and sub["canceled_at"] is None:
            sub["canceled_at"] = sub["ended_at"] = int(time.time())
        self.bump(sub_id)
        ended = changes.get("status") in ENDED_STATUSES
        self.emit(f"customer.subscription.{'deleted' if ended else 'updated'}", sub)
        return copy.deepcopy(sub)

    def period_end(self, sub_id: str) -> int:
        sub = self._sub(sub_id)
        plan = self.plan_items.get(sub_id)
        items = [i for i in sub["items"]["data"] if i["id"] == plan] or sub["items"]["data"]
        return int(items[0]["current_period_end"])

    def cancel_subscription(self, sub_id: str) -> JSON:
        sub = self._sub(sub_id)
        if sub["status"] not in ENDED_STATUSES:
            self.change_subscription(sub_id, status="canceled")
        return copy.deepcopy(sub)

    def bump(self, sub_id: str) -> None:
        self.revisions[sub_id] += 1

    # -- lists ---------------------------------------------------------------------------

    def page(
        self,
        objects: Iterable[JSON],
        params: JSON,
        url: str,
        kind: str,
        keep: Callable[[JSON], bool] = lambda _: True,
    ) -> JSON:
        """One page of a Stripe list, newest first, honouring limit/starting_after/ending_before."""
        try:
            limit = int(params.get("limit", 10))
        except (TypeError, ValueError):
            raise StripeError(400, "Invalid integer: limit", param="limit") from None
        if not 1 <= limit <= 100:
            raise StripeError(400, "Invalid limit: must be between 1 and 100", param="limit")
        ordered = sorted(objects, key=lambda obj: self._order[obj["id"]], reverse=True)
        ids = [obj["id"] for obj in ordered]
        start, stop = 0, len(ordered)
        for param in ("starting_after", "ending_before"):
            cursor = params.get(param)
            if cursor is None:
                continue
            if cursor not in ids:
                raise missing(kind, str(cursor), param)
            if param == "starting_after":
                start = ids.index(cursor) + 1
            else:
                stop = ids.index(cursor)
        selected = [obj for obj in ordered[start:stop] if keep(obj)]
        if "ending_before" in params and "starting_after" not in params:
            data, has_more = selected[-limit:], len(selected) > limit
        else:
            data, has_more = selected[:limit], len(selected) > limit
        return {
            "object": "list",
            "data": copy.deepcopy(data),
            "has_more": has_more,
            "url": url,
        }
