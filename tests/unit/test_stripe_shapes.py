"""Stripe's object shapes as statebus reads them (fixtures: tests/fixtures/stripe)."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import stripe

from statebus.config import STRIPE_API_VERSION, load
from statebus.stripe.events import Policy, StoredEvent, _refused, event_decoder, subscription_of
from statebus.stripe.facts import best, facts_from
from statebus.stripe.webhook import parse
from tests.stripe_fixtures import fixture

ROOT = Path(__file__).parents[2]


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def test_add_on_first_keeps_every_item_with_its_own_period() -> None:
    facts = facts_from(fixture("subscription_addon_first", customer="cus_1"))

    assert facts.prices == ["price_extra_seats", "price_glow_up"]
    item = facts.item_for("price_glow_up")
    assert item is not None and item.id == "si_plan000000000000000"
    assert item.current_period_end == at(1767052800)
    assert facts.period_end is None  # today's shape: none on the subscription


def test_the_older_shape_keeps_its_period_on_the_subscription() -> None:
    facts = facts_from(fixture("subscription_legacy_2024", customer="cus_1"))

    assert facts.prices == ["price_glow_up"] and facts.period_end == at(1767052800)


def test_flexible_billing_mode_cancel_at_means_the_subscription_ends() -> None:
    facts = facts_from(fixture("subscription_flexible_cancel_at", customer="cus_1"))

    assert facts.cancel_at_period_end is False
    assert facts.ends_at(facts.items[0].current_period_end) == at(1767052800)


def test_one_ranking_live_above_waiting_above_ended_then_newest() -> None:
    base = fixture("subscription_addon_first", customer="cus_1")

    def sub(sub_id: str, status: str, created: int) -> dict[str, object]:
        return {**base, "id": sub_id, "status": status, "created": created}

    active = facts_from(sub("sub_a", "active", 100))
    incomplete = facts_from(sub("sub_b", "incomplete", 200))  # newer, 3-D Secure failed
    expired = facts_from(sub("sub_c", "incomplete_expired", 300))
    past_due = facts_from(sub("sub_d", "past_due", 50))

    assert best([active, incomplete, expired]) == active
    assert best([incomplete, expired]) == incomplete
    assert best([past_due, incomplete]) == past_due
    assert best([active, facts_from(sub("sub_e", "trialing", 150))]).id == "sub_e"


def test_checkout_sessions_name_a_subscription_only_in_subscription_mode() -> None:
    for mode, expected in (("subscription", "sub_9"), ("payment", None), ("setup", None)):
        obj = fixture(f"checkout_session_{mode}", customer="cus_1", sub="sub_9", user="u")
        event = StoredEvent(id="evt_1", type="checkout.session.completed", data={"object": obj})
        assert subscription_of(event) == expected, mode


def test_invoices_name_their_subscription_under_parent() -> None:
    obj = fixture("invoice_paid_parent", customer="cus_1", sub="sub_9")
    event = StoredEvent(id="evt_1", type="invoice.paid", data={"object": obj})

    assert subscription_of(event) == "sub_9"


def test_a_thin_event_parses_and_names_its_subscription() -> None:
    body = json.dumps(fixture("thin_subscription_updated", sub="sub_9")).encode()

    head = parse(body)  # the webhook's own parsing: a thin event is no bad payload
    event = event_decoder.decode(body)  # the inbox worker's

    assert event.thin and subscription_of(event) == "sub_9"
    assert head.created_unix == event.created_unix
    assert event.created_unix == int(datetime(2026, 11, 29, 10, tzinfo=UTC).timestamp())


def test_connect_events_are_refused_unless_configured() -> None:
    event = event_decoder.decode(json.dumps(fixture("event_connect", sub="sub_9")).encode())

    assert "STATEBUS_STRIPE_CONNECT" in (_refused(event, Policy(livemode=False)) or "")
    assert _refused(event, Policy(livemode=False, connect=True)) is None


def test_a_livemode_mismatch_is_refused() -> None:
    event = event_decoder.decode(b'{"id": "evt_1", "type": "invoice.paid", "livemode": true}')

    assert "livemode mismatch" in (_refused(event, Policy(livemode=False)) or "")
    assert _refused(event, Policy(livemode=True)) is None


def test_the_api_version_is_pinned_in_one_place_and_overridable() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}\.[a-z]+", STRIPE_API_VERSION)
    assert load({"STATEBUS_JWT_SECRET": "x" * 40}).stripe_api_version == STRIPE_API_VERSION
    env = {"STATEBUS_JWT_SECRET": "x" * 40, "STRIPE_API_VERSION": "2025-03-31.basil"}
    assert load(env).stripe_api_version == "2025-03-31.basil"


def test_the_declared_stripe_range_holds_the_tested_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    spec = next(d for d in project["project"]["dependencies"] if d.startswith("stripe"))
    low, high = re.fullmatch(r"stripe>=([\d.]+),<([\d.]+)", spec.split(";")[0]).groups()  # type: ignore[union-attr]

    def version(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split("."))

    assert version(low) <= version(stripe.VERSION) < version(high)
