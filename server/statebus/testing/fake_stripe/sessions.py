"""Checkout Sessions and Billing Portal sessions of the fake Stripe API, and their pages.

A Checkout Session's `url` is a page of the fake itself: visiting it shows one button
that "pays" (completes the session: a customer if needed, the subscription, the
`checkout.session.completed` event) and redirects to `success_url`, so a demo's checkout
works end to end without Stripe. The portal page offers cancel-at-period-end and resume.
"""

from __future__ import annotations

import copy
import html
import time
from typing import Any

from statebus.testing.fake_stripe.state import ENDED_STATUSES, StripeState
from statebus.testing.fake_stripe.wire import JSON, StripeError, merge_metadata, missing, new_id

_MODES = {"payment", "setup", "subscription"}


def create_checkout_session(state: StripeState, _: str, params: JSON) -> JSON:
    mode = params.get("mode")
    if mode not in _MODES:
        raise StripeError(400, "Invalid mode: must be one of payment, setup, subscription")
    if not params.get("success_url"):
        raise StripeError(400, "Missing required param: success_url.", param="success_url")
    lines = params.get("line_items", [])
    if mode != "setup" and (not isinstance(lines, list) or not lines):
        raise StripeError(400, "Missing required param: line_items.", param="line_items")
    for n, line in enumerate(lines):
        state.price(str(line.get("price", "")), f"line_items[{n}][price]")
    customer = params.get("customer")
    if customer is not None:
        state.customer(str(customer), "customer")
    session_id = new_id("cs_test")
    session: JSON = {
        "id": session_id,
        "object": "checkout.session",
        "mode": mode,
        "status": "open",
        "payment_status": "unpaid",
        "url": f"{state.base_url}/checkout/{session_id}",
        "client_reference_id": params.get("client_reference_id"),
        "customer": customer,
        "customer_email": params.get("customer_email"),
        "subscription": None,
        "success_url": params["success_url"],
        "cancel_url": params.get("cancel_url"),
        "metadata": merge_metadata({}, params.get("metadata", {})),
        "livemode": False,
        "created": int(time.time()),
        "expires_at": int(time.time()) + 86400,
    }
    state.checkout_sessions[session_id] = session
    sub_meta = (params.get("subscription_data") or {}).get("metadata", {})
    state.sells[session_id] = {
        "prices": [str(line["price"]) for line in lines],
        "metadata": merge_metadata({}, sub_meta),
    }
    return copy.deepcopy(session)


def retrieve_checkout_session(state: StripeState, session_id: str, _: JSON) -> JSON:
    if session_id not in state.checkout_sessions:
        raise missing("checkout.session", session_id)
    return copy.deepcopy(state.checkout_sessions[session_id])


def expire_checkout_session(state: StripeState, session_id: str, _: JSON) -> JSON:
    """`POST /v1/checkout/sessions/{id}/expire`: an open session can no longer be paid."""
    session = state.checkout_sessions.get(session_id)
    if session is None:
        raise missing("checkout.session", session_id)
    if session["status"] != "open":
        raise StripeError(
            400,
            'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout '
            f"Session has a status of {session['status']}.",
        )
    session.update(status="expired", url=None)
    state.emit("checkout.session.expired", session)
    return copy.deepcopy(session)


def complete_checkout(state: StripeState, session_id: str) -> JSON:
    """What paying does: customer, subscription (mode subscription), the event. Only an
    open session can be paid: an expired or already paid one is refused, as on Stripe's
    page. Paying two open sessions of one user makes two billed subscriptions."""
    session = state.checkout_sessions.get(session_id)
    if session is None:
        raise missing("checkout.session", session_id)
    if session["status"] != "open":
        raise StripeError(400, f"This Checkout Session is {session['status']}: it cannot be paid")
    if session["customer"] is None:
        email = session["customer_email"]
        session["customer"] = state.add_customer(email=email)["id"]
    sells = state.sells[session_id]
    if session["mode"] == "subscription":
        prices = sells["prices"]
        sub = state.add_subscription(
            customer=session["customer"],
            price=prices[0],
            addons=prices[1:],
            metadata=sells["metadata"],
        )
        session["subscription"] = sub["id"]
    session.update(status="complete", payment_status="paid")
    state.emit("checkout.session.completed", session)
    return copy.deepcopy(session)


def create_portal_session(state: StripeState, _: str, params: JSON) -> JSON:
    customer = str(params.get("customer", ""))
    state.customer(customer, "customer")
    session_id = new_id("bps")
    session: JSON = {
        "id": session_id,
        "object": "billing_portal.session",
        "customer": customer,
        "return_url": params.get("return_url"),
        "url": f"{state.base_url}/portal/{session_id}",
        "livemode": False,
        "created": int(time.time()),
    }
    state.portal_sessions[session_id] = session
    return copy.deepcopy(session)


# -- pages -----------------------------------------------------------------------------

Page = tuple[int, str, dict[str, str]]  # status, HTML, headers


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<body style='font-family:sans-serif;max-width:32em;margin:3em auto'>"
        f"<p><small>fake Stripe (statebus.testing)</small></p><h1>{html.escape(title)}</h1>"
        f"{body}</body>"
    )


def _button(action: str, label: str) -> str:
    return (
        f"<form method=post action='{html.escape(action)}'>"
        f"<button type=submit>{html.escape(label)}</button></form>"
    )


def page(state: StripeState, method: str, path: str) -> Page | None:
    """The checkout and portal pages; None for any other path."""
    parts = path.strip("/").split("/")
    if len(parts) < 2 or parts[0] not in ("checkout", "portal"):
        return None
    kind, object_id, action = parts[0], parts[1], parts[2] if len(parts) > 2 else ""
    if kind == "checkout":
        return _checkout_page(state, object_id, method, action)
    return _portal_page(state, object_id, method, action)


def _checkout_page(state: StripeState, session_id: str, method: str, action: str) -> Page:
    session = state.checkout_sessions.get(session_id)
    if session is None:
        return 404, _page("No such checkout", ""), {}
    if method == "POST" and action == "complete":
        try:
            complete_checkout(state, session_id)
        except StripeError as exc:
            return 410, _page("Checkout no longer active", html.escape(str(exc))), {}
        target = session["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)
        return 303, "", {"Location": target}
    prices = ", ".join(state.sells[session_id]["prices"])
    body = f"<p>Mode {html.escape(session['mode'])}: {html.escape(prices)}</p>"
    if session["status"] == "open":
        body += _button(f"/checkout/{session_id}/complete", "Pay (test)")
    if session["cancel_url"]:
        body += f"<p><a href='{html.escape(session['cancel_url'])}'>Back</a></p>"
    return 200, _page("Checkout", body), {}


def _portal_page(state: StripeState, session_id: str, method: str, action: str) -> Page:
    session = state.portal_sessions.get(session_id)
    if session is None:
        return 404, _page("No such portal session", ""), {}
    subs = [
        sub
        for sub in state.subscriptions.values()
        if sub["customer"] == session["customer"] and sub["status"] not in ENDED_STATUSES
    ]
    if method == "POST" and action in ("cancel", "resume") and subs:
        state.change_subscription(subs[0]["id"], cancel_at_period_end=action == "cancel")
        return 303, "", {"Location": f"/portal/{session_id}"}
    body = ""
    for sub in subs[:1]:
        ending = sub["cancel_at_period_end"] or sub["cancel_at"]
        body += f"<p>Subscription {html.escape(sub['status'])}"
        body += " (ends at period end)</p>" if ending else "</p>"
        label = "Resume" if ending else "Cancel at period end"
        body += _button(f"/portal/{session_id}/{'resume' if ending else 'cancel'}", label)
    back = session["return_url"] or "/"
    return (
        200,
        _page("Billing portal", body + f"<p><a href='{html.escape(back)}'>Return</a></p>"),
        {},
    )


def session_routes() -> list[tuple[str, str, Any]]:
    return [
        ("POST", r"/v1/checkout/sessions()", create_checkout_session),
        ("GET", r"/v1/checkout/sessions/([^/]+)", retrieve_checkout_session),
        ("POST", r"/v1/checkout/sessions/([^/]+)/expire", expire_checkout_session),
        ("POST", r"/v1/billing_portal/sessions()", create_portal_session),
    ]
