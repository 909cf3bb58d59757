"""HTTP routes of the fake Stripe API: Stripe's form parameters to ``StripeState`` calls.

Each handler takes the state (lock already held), the id from the path ("" for
collection routes) and the decoded parameters, and returns a Stripe-shaped object or
raises ``StripeError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from statebus.testing.fake_stripe.checkout_pages import session_routes
from statebus.testing.fake_stripe.state import ENDED_STATUSES, StripeState
from statebus.testing.fake_stripe.wire import JSON, StripeError, merge_metadata

Handler = Callable[[StripeState, str, JSON], JSON]

# Parameters the fake accepts besides the ones it acts on; anything else is rejected
# like Stripe does ("Received unknown parameter"), so typos in production code show up.
_IGNORED = set(
    "expand payment_behavior proration_date default_payment_method description off_session"
    " cancellation_details billing_cycle_anchor collection_method trial_end trial_period_days"
    " phone address".split()
)
_PRORATIONS = {"create_prorations", "none", "always_invoice"}


def _check_params(params: JSON, known: set[str]) -> None:
    for name in params:
        if name not in known and name not in _IGNORED:
            raise StripeError(400, f"Received unknown parameter: {name}", param=name)


def _bool(value: Any, param: str) -> bool:
    if value not in ("true", "false"):
        raise StripeError(400, f"Invalid boolean: {value}", param=param)
    return bool(value == "true")


def _items(state: StripeState, sub: JSON | None, params: JSON) -> list[JSON]:
    """Validate ``items[n][...]`` before anything changes; each entry has a price."""
    items = params.get("items", [])
    if not isinstance(items, list):
        raise StripeError(400, "Invalid array", param="items")
    known_ids = {item["id"] for item in sub["items"]["data"]} if sub else set()
    for n, item in enumerate(items):
        if not isinstance(item, dict) or "price" not in item or item.get("deleted"):
            raise StripeError(400, "fake Stripe supports only items[n][price]", param="items")
        if "id" in item and item["id"] not in known_ids:
            raise StripeError(
                400,
                f"No such subscription item: '{item['id']}'",
                code="resource_missing",
                param=f"items[{n}][id]",
            )
        state.price(item["price"], f"items[{n}][price]")
    return items


def retrieve_subscription(state: StripeState, sub_id: str, params: JSON) -> JSON:
    return state.subscription(sub_id)


def update_subscription(state: StripeState, sub_id: str, params: JSON) -> JSON:
    _check_params(
        params, {"items", "cancel_at_period_end", "cancel_at", "proration_behavior", "metadata"}
    )
    sub = state.subscription(sub_id)
    if sub["status"] in ENDED_STATUSES and set(params) - {"metadata", "expand"}:
        raise StripeError(
            400, "A canceled subscription can only update its cancellation_details and metadata."
        )
    if params.get("proration_behavior", "none") not in _PRORATIONS:
        raise StripeError(400, "Invalid proration_behavior", param="proration_behavior")
    changes: JSON = {}
    if "cancel_at_period_end" in params:
        changes["cancel_at_period_end"] = _bool(
            params["cancel_at_period_end"], "cancel_at_period_end"
        )
    if "cancel_at_period_end" in params and "cancel_at" in params:
        raise StripeError(400, "You may only specify one of cancel_at, cancel_at_period_end.")
    if "cancel_at" in params:  # "" unsets it
        value = params["cancel_at"]
        if value != "" and not str(value).isdigit():
            raise StripeError(400, "Invalid timestamp", param="cancel_at")
        changes["cancel_at"] = int(value) if value else None
    if "metadata" in params:
        changes["metadata"] = merge_metadata(sub["metadata"], params["metadata"])
    for item in _items(state, sub, params):
        # Simplification: a price without an item id changes the plan item (the one the
        # subscription was created with); real Stripe would add an item.
        state.set_item_price(sub_id, item.get("id"), item["price"])
    return state.change_subscription(sub_id, **changes)


def cancel_subscription(state: StripeState, sub_id: str, params: JSON) -> JSON:
    _check_params(params, {"invoice_now", "prorate"})
    return state.cancel_subscription(sub_id)


def create_subscription(state: StripeState, _: str, params: JSON) -> JSON:
    _check_params(params, {"customer", "items", "metadata"})
    state.customer(str(params.get("customer", "")), "customer")
    items = _items(state, None, params)
    if len(items) != 1:
        raise StripeError(400, "fake Stripe needs exactly one item", param="items")
    metadata = merge_metadata({}, params.get("metadata", {}))
    return state.add_subscription(
        customer=params["customer"], price=items[0]["price"], metadata=metadata
    )


def list_subscriptions(state: StripeState, _: str, params: JSON) -> JSON:
    _check_params(
        params, {"status", "customer", "price", "limit", "starting_after", "ending_before"}
    )
    status = params.get("status")

    def keep(sub: JSON) -> bool:
        if status == "all":
            status_ok = True
        elif status is None:
            status_ok = sub["status"] not in ENDED_STATUSES
        elif status == "ended":
            status_ok = sub["status"] in ENDED_STATUSES
        else:
            status_ok = sub["status"] == status
        prices = {item["price"]["id"] for item in sub["items"]["data"]}
        return (
            status_ok
            and params.get("customer", sub["customer"]) == sub["customer"]
            and ("price" not in params or params["price"] in prices)
        )

    return state.page(
        state.subscriptions.values(), params, "/v1/subscriptions", "subscription", keep
    )


def create_customer(state: StripeState, _: str, params: JSON) -> JSON:
    _check_params(params, {"email", "name", "metadata"})
    metadata = merge_metadata({}, params.get("metadata", {}))
    return state.add_customer(email=params.get("email"), name=params.get("name"), metadata=metadata)


def update_customer(state: StripeState, customer_id: str, params: JSON) -> JSON:
    _check_params(params, {"email", "name", "metadata"})
    state.customer(customer_id)
    customer = state.customers[customer_id]
    customer.update({k: v for k, v in params.items() if k in ("email", "name")})
    customer["metadata"] = merge_metadata(customer["metadata"], params.get("metadata", {}))
    return state.customer(customer_id)


def list_customers(state: StripeState, _: str, params: JSON) -> JSON:
    _check_params(params, {"email", "limit", "starting_after", "ending_before"})
    email = params.get("email")
    return state.page(
        state.customers.values(),
        params,
        "/v1/customers",
        "customer",
        lambda c: email is None or c["email"] == email,
    )


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    (method, re.compile(pattern), handler)
    for method, pattern, handler in [
        ("GET", r"/v1/subscriptions/([^/]+)", retrieve_subscription),
        ("POST", r"/v1/subscriptions/([^/]+)", update_subscription),
        ("DELETE", r"/v1/subscriptions/([^/]+)", cancel_subscription),
        ("GET", r"/v1/subscriptions()", list_subscriptions),
        ("POST", r"/v1/subscriptions()", create_subscription),
        ("GET", r"/v1/customers/([^/]+)", lambda s, i, _: s.customer(i)),
        ("POST", r"/v1/customers/([^/]+)", update_customer),
        ("GET", r"/v1/customers()", list_customers),
        ("POST", r"/v1/customers()", create_customer),
        ("GET", r"/v1/prices/([^/]+)", lambda s, i, _: s.price(i)),
        *session_routes(),
    ]
]
