"""Changing the fake's objects directly, as if in Stripe's dashboard (or as a customer
would on its checkout page). Every change bumps revisions and, when the fake sends
webhooks, becomes an event like any change made through the API."""

from __future__ import annotations

import threading
from typing import Any

from statebus.testing.fake_stripe.checkout_pages import complete_checkout
from statebus.testing.fake_stripe.state import StripeState
from statebus.testing.fake_stripe.wire import JSON


class Dashboard:
    """Mixed into FakeStripe, which provides the state, its lock and the event flush."""

    state: StripeState
    _lock: threading.RLock

    def _flush_events(self) -> None:
        """FakeStripe's: sends the webhooks a change queued (declared here for typing)."""

    def add_price(self, price_id: str, *, product: str = "prod_x", unit_amount: int = 1000) -> JSON:
        with self._lock:
            return self.state.add_price(price_id, product=product, unit_amount=unit_amount)

    def add_customer(
        self,
        customer_id: str | None = None,
        *,
        email: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> JSON:
        with self._lock:
            return self.state.add_customer(customer_id, email=email, metadata=metadata)

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
        **more: Any,
    ) -> JSON:
        """Create a subscription as if made in the dashboard; an unknown customer or price
        is created on the fly. ``more``: ``addons``, ``addons_first``, ``billing_mode``,
        ``livemode`` (see StripeState.add_subscription)."""
        with self._lock:
            if customer not in self.state.customers:
                self.state.add_customer(customer)
            for needed in (price, *more.get("addons", ())):
                if needed not in self.state.prices:
                    self.state.add_price(needed)
            sub = self.state.add_subscription(
                customer=customer,
                price=price,
                status=status,
                sub_id=sub_id,
                metadata=metadata,
                current_period_end=current_period_end,
                cancel_at_period_end=cancel_at_period_end,
                **more,
            )
        self._flush_events()
        return sub

    def set_subscription(self, sub_id: str, **changes: Any) -> JSON:
        """Change top-level fields, ``price`` or ``metadata`` (replaced); bumps the revision."""
        with self._lock:
            price = changes.get("price")
            if price is not None and price not in self.state.prices:
                self.state.add_price(price)
            sub = self.state.change_subscription(sub_id, **changes)
        self._flush_events()
        return sub

    def complete_checkout(self, session_id: str) -> JSON:
        """What the customer paying on the checkout page does."""
        with self._lock:
            session = complete_checkout(self.state, session_id)
        self._flush_events()
        return session

    def put_subscription(self, sub: JSON, *, plan_item: str | None = None) -> JSON:
        """Store a subscription object exactly as given (say, a fixture of Stripe's shape);
        its customer and prices are created when unknown."""
        with self._lock:
            if sub["customer"] not in self.state.customers:
                self.state.add_customer(sub["customer"])
            for item in sub["items"]["data"]:
                if item["price"]["id"] not in self.state.prices:
                    self.state.add_price(item["price"]["id"])
            self.state.put_subscription(sub, plan_item)
            return self.state.subscription(sub["id"])

    def get_subscription(self, sub_id: str) -> JSON:
        with self._lock:
            return self.state.subscription(sub_id)

    def revision(self, sub_id: str) -> int:
        """Starts at 1 and grows with every change, through HTTP or ``set_subscription``."""
        with self._lock:
            return self.state.revisions[sub_id]
