"""The real stripe library against the fake Stripe server and the webhook signing helpers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
import stripe
from stripe.params import SubscriptionUpdateParams

from statebus.testing.fake_stripe import TEST_API_KEY, FakeStripe, make_event, sign_payload
from statebus.testing.fake_stripe.wire import StripeError, parse_form

SECRET = "whsec_test"


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        server.add_price("price_a", product="prod_a")
        server.add_price("price_b", product="prod_b", unit_amount=5000)
        yield server


@pytest.fixture
def client(fake: FakeStripe) -> stripe.StripeClient:
    return fake.client()


def test_retrieve_returns_a_stripe_shaped_subscription(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.add_subscription(customer="cus_1", price="price_a", sub_id="sub_1", metadata={"u": "7"})

    sub = client.v1.subscriptions.retrieve("sub_1", params={"expand": ["latest_invoice"]})

    assert isinstance(sub, stripe.Subscription)
    assert (sub.id, sub.customer, sub.status) == ("sub_1", "cus_1", "active")
    item = sub["items"]["data"][0]
    assert item["price"]["id"] == "price_a" and item["price"]["product"] == "prod_a"
    # Today's shape: the period lives on the items, and there is a billing mode.
    assert item["current_period_end"] > time.time() and "current_period_end" not in sub
    assert sub["billing_mode"]["type"] == "flexible" and sub["cancel_at"] is None
    assert sub.metadata.to_dict() == {"u": "7"} and sub.cancel_at_period_end is False
    method, path, headers = fake.requests[-1]
    assert (method, path) == ("GET", "/v1/subscriptions/sub_1")
    assert headers["authorization"] == f"Bearer {TEST_API_KEY}"
    assert fake.params_log[-1] == {"expand[0]": "latest_invoice"}


def test_unknown_subscription_is_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.subscriptions.retrieve("sub_nope")
    assert info.value.http_status == 404 and info.value.code == "resource_missing"
    assert "No such subscription: 'sub_nope'" in str(info.value)


def test_update_with_idempotency_key_applies_once(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    created = fake.add_subscription(customer="cus_1", price="price_a", sub_id="sub_1")
    item_id = created["items"]["data"][0]["id"]
    params: SubscriptionUpdateParams = {
        "items": [{"id": item_id, "price": "price_b"}],
        "proration_behavior": "always_invoice",
    }

    first = client.v1.subscriptions.update("sub_1", params, {"idempotency_key": "up-1"})
    revision = fake.revision("sub_1")
    fake.set_subscription("sub_1", price="price_a")  # changed elsewhere meanwhile
    second = client.v1.subscriptions.update("sub_1", params, {"idempotency_key": "up-1"})

    assert first["items"]["data"][0]["price"]["id"] == "price_b"
    assert second.to_dict() == first.to_dict()  # the stored response, not re-applied
    assert fake.revision("sub_1") == revision + 1
    assert fake.get_subscription("sub_1")["items"]["data"][0]["price"]["id"] == "price_a"
    assert second.last_response is not None
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    keys = [h.get("idempotency-key") for m, _, h in fake.requests if m == "POST"]
    assert keys == ["up-1", "up-1"]
    assert fake.params_log[-1] == {
        "items[0][id]": item_id,
        "items[0][price]": "price_b",
        "proration_behavior": "always_invoice",
    }


def test_reused_idempotency_key_with_other_params_is_rejected(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.add_subscription(customer="cus_1", price="price_a", sub_id="sub_1")
    client.v1.subscriptions.update(
        "sub_1", {"items": [{"price": "price_b"}]}, {"idempotency_key": "k"}
    )
    with pytest.raises(stripe.IdempotencyError):
        client.v1.subscriptions.update(
            "sub_1", {"items": [{"price": "price_a"}]}, {"idempotency_key": "k"}
        )


def test_update_fields_and_every_change_is_a_new_revision(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.add_subscription(customer="cus_1", price="price_a", sub_id="sub_1", metadata={"a": "1"})
    revisions = [fake.revision("sub_1")]

    sub = client.v1.subscriptions.update(
        "sub_1",
        {
            "cancel_at_period_end": True,
            "metadata": {"a": "", "b": "2"},
            "items": [{"price": "price_b"}],
        },
    )
    revisions.append(fake.revision("sub_1"))
    fake.set_subscription("sub_1", status="past_due")
    revisions.append(fake.revision("sub_1"))
    canceled = client.v1.subscriptions.cancel("sub_1")
    revisions.append(fake.revision("sub_1"))

    assert sub.cancel_at_period_end is True and sub.metadata.to_dict() == {"b": "2"}
    assert sub["items"]["data"][0]["price"]["id"] == "price_b"
    assert canceled.status == "canceled" and canceled.canceled_at is not None
    assert revisions == sorted(set(revisions))
    with pytest.raises(stripe.InvalidRequestError, match="canceled subscription"):
        client.v1.subscriptions.update("sub_1", {"cancel_at_period_end": False})


def test_bad_params_are_rejected_like_stripe(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.add_subscription(customer="cus_1", price="price_a", sub_id="sub_1")
    with pytest.raises(stripe.InvalidRequestError, match="No such price: 'price_zz'") as info:
        client.v1.subscriptions.update("sub_1", {"items": [{"price": "price_zz"}]})
    assert info.value.param == "items[0][price]"
    with pytest.raises(stripe.InvalidRequestError, match="unknown parameter: colour"):
        client.v1.subscriptions.update("sub_1", {"colour": "red"})  # type: ignore[arg-type]
    assert fake.revision("sub_1") == 1


def test_list_paginates_with_auto_paging_iter(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    created = [
        fake.add_subscription(
            customer=f"cus_{n % 2}", price="price_a", status="canceled" if n % 5 == 0 else "active"
        )["id"]
        for n in range(23)
    ]

    everything = client.v1.subscriptions.list({"status": "all", "limit": 10})
    ids = [sub.id for sub in everything.auto_paging_iter()]
    pages = [path for method, path, _ in fake.requests if method == "GET"]

    assert ids == created[::-1]  # newest first, like Stripe
    assert pages == ["/v1/subscriptions"] * 3
    assert fake.params_log[-1]["starting_after"] == ids[19]
    live = client.v1.subscriptions.list({"limit": 100})
    assert len(live.data) == 18 and not live.has_more
    mine = client.v1.subscriptions.list({"status": "canceled", "customer": "cus_0"})
    assert {s.status for s in mine.data} == {"canceled"} and len(mine.data) == 3


def test_create_customer_and_subscription(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"email": "a@example.com", "metadata": {"user_id": "42"}})
    sub = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": "price_b"}], "metadata": {"user_id": "42"}}
    )

    assert customer.id.startswith("cus_") and customer.metadata is not None
    assert customer.metadata.to_dict() == {"user_id": "42"}
    assert client.v1.customers.retrieve(customer.id).email == "a@example.com"
    found = client.v1.customers.list({"email": "a@example.com"})
    assert [c.id for c in found.data] == [customer.id]
    assert sub.customer == customer.id and sub.status == "active"
    assert sub["items"]["data"][0]["price"]["unit_amount"] == 5000
    assert client.v1.prices.retrieve("price_b").product == "prod_b"
    with pytest.raises(stripe.InvalidRequestError, match="No such customer"):
        client.v1.subscriptions.create({"customer": "cus_zz", "items": [{"price": "price_a"}]})


def test_injected_failures_surface_as_stripe_errors(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.add_subscription(customer="cus_1", price="price_a", sub_id="sub_1")
    fake.fail_next(1, status=500)
    with pytest.raises(stripe.APIError) as info:
        client.v1.subscriptions.retrieve("sub_1")
    assert info.value.http_status == 500
    fake.fail_next(1, status=429, path_prefix="/v1/prices")
    client.v1.subscriptions.retrieve("sub_1")  # other paths unaffected
    with pytest.raises(stripe.RateLimitError):
        client.v1.prices.retrieve("price_a")

    fake.set_unreachable(True)
    with pytest.raises(stripe.APIConnectionError):
        client.v1.subscriptions.retrieve("sub_1")
    fake.set_unreachable(False)
    assert client.v1.subscriptions.retrieve("sub_1").id == "sub_1"


def test_retries_reuse_the_idempotency_key_after_a_lost_answer(fake: FakeStripe) -> None:
    fake.add_subscription(customer="cus_1", price="price_a", sub_id="sub_1")
    fake.drop_next(1, path_prefix="/v1/subscriptions/sub_1")
    with pytest.raises(stripe.APIConnectionError):
        fake.client().v1.subscriptions.update("sub_1", {"items": [{"price": "price_b"}]})
    assert fake.revision("sub_1") == 2  # applied although the client never heard back

    fake.drop_next(1)
    retrying = fake.client(max_network_retries=1)
    sub = retrying.v1.subscriptions.update("sub_1", {"cancel_at_period_end": True})

    assert sub.cancel_at_period_end is True and fake.revision("sub_1") == 3
    first, second = (h["idempotency-key"] for _, _, h in fake.requests[-2:])
    assert first == second


def test_latency_and_client_timeout(fake: FakeStripe) -> None:
    fake.add_subscription(customer="cus_1", price="price_a", sub_id="sub_1")
    fake.set_latency(0.3)
    impatient = fake.client(http_client=stripe.RequestsClient(timeout=0.1))
    with pytest.raises(stripe.APIConnectionError):
        impatient.v1.subscriptions.retrieve("sub_1")
    started = time.monotonic()
    fake.client().v1.subscriptions.retrieve("sub_1")
    assert time.monotonic() - started >= 0.3


def test_api_key_is_required(fake: FakeStripe) -> None:
    with pytest.raises(stripe.AuthenticationError):
        fake.client(api_key="pk_test_wrong").v1.prices.retrieve("price_a")


# stripe.HTTPXClient posts its form body as data=<str>, which httpx 0.28 deprecates; under
# filterwarnings=error every async POST would otherwise fail as an APIConnectionError.
@pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")
async def test_async_httpx_client_works(fake: FakeStripe) -> None:
    for n in range(3):
        fake.add_subscription(customer="cus_1", price="price_a", sub_id=f"sub_{n}")
    http = stripe.HTTPXClient(timeout=5)
    client = fake.client(http_client=http, max_network_retries=2)
    try:
        sub = await client.v1.subscriptions.retrieve_async("sub_1")
        updated = await client.v1.subscriptions.update_async(
            "sub_1", {"items": [{"price": "price_b"}]}, {"idempotency_key": "a-1"}
        )
        page = await client.v1.subscriptions.list_async({"status": "all", "limit": 2})
        ids = [s.id async for s in page.auto_paging_iter()]
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]

    assert sub.id == "sub_1" and updated["items"]["data"][0]["price"]["id"] == "price_b"
    assert ids == ["sub_2", "sub_1", "sub_0"]


def test_raw_http_unknown_route_and_bracket_lists(fake: FakeStripe) -> None:
    fake.add_subscription(customer="cus_1", price="price_a", sub_id="sub_1")
    auth = {"Authorization": f"Bearer {TEST_API_KEY}"}
    with httpx.Client(base_url=fake.url, headers=auth) as http:
        missing = http.get("/v1/widgets")
        expanded = http.get("/v1/subscriptions/sub_1?expand[]=customer&expand[]=latest_invoice")
        anonymous = http.get("/v1/subscriptions/sub_1", headers={"Authorization": ""})

    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert expanded.status_code == 200 and expanded.json()["object"] == "subscription"
    assert anonymous.status_code == 401


def test_parse_form_builds_nested_params() -> None:
    form = "items[0][id]=si_1&items[0][price]=p&metadata[user_id]=7&expand[]=a&expand[]=b&x="
    assert parse_form(form) == {
        "items": [{"id": "si_1", "price": "p"}],
        "metadata": {"user_id": "7"},
        "expand": ["a", "b"],
        "x": "",
    }


def test_signed_event_passes_construct_event(fake: FakeStripe) -> None:
    sub = fake.add_subscription(customer="cus_1", price="price_a", sub_id="sub_1")
    body = make_event("customer.subscription.updated", sub, event_id="evt_1", created=1_700_000_000)

    event = stripe.Webhook.construct_event(body, sign_payload(body, SECRET), SECRET)

    assert (event.id, event.type, event.data.object.id) == (
        "evt_1",
        "customer.subscription.updated",
        "sub_1",
    )
    assert json.loads(body)["livemode"] is False and event.created == 1_700_000_000
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, sign_payload(body, "whsec_other"), SECRET)
    stale = sign_payload(body, SECRET, timestamp=int(time.time()) - 600)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, stale, SECRET)


def _session(client: stripe.StripeClient, price: str) -> stripe.checkout.Session:
    return client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "line_items": [{"price": price, "quantity": 1}],
            "client_reference_id": "user_1",
            "success_url": "http://127.0.0.1/",
        }
    )


def test_an_expired_session_cannot_be_paid_and_a_paid_one_cannot_expire(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    first, second = _session(client, "price_a"), _session(client, "price_a")

    expired = client.v1.checkout.sessions.expire(first.id)
    assert expired.status == "expired" and expired.url is None
    with pytest.raises(StripeError, match="cannot be paid"):
        fake.complete_checkout(first.id)
    page = httpx.post(f"{fake.url}/checkout/{first.id}/complete")
    assert page.status_code == 410

    fake.complete_checkout(second.id)
    with pytest.raises(stripe.InvalidRequestError, match="status of complete"):
        client.v1.checkout.sessions.expire(second.id)
    assert len(fake.state.subscriptions) == 1


def test_two_open_sessions_of_one_user_can_both_be_paid(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    first, second = _session(client, "price_a"), _session(client, "price_b")
    paid = [fake.complete_checkout(s.id) for s in (first, second)]
    subs = [fake.get_subscription(p["subscription"]) for p in paid]
    assert [s["status"] for s in subs] == ["active", "active"]  # billed twice
    assert subs[0]["customer"] != subs[1]["customer"]  # each session made its customer
