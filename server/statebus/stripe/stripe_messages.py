"""The Stripe side's HTTP bodies (the core's live in statebus.core_messages)."""

from __future__ import annotations

import msgspec


class PlanRequest(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /v1/billing/upgrade` and `/v1/billing/checkout`: `{"plan": "<code>"}`."""

    plan: str


class UrlAnswer(msgspec.Struct):
    """Checkout and portal: where to send the browser."""

    url: str


class WebhookAck(msgspec.Struct):
    received: bool
    duplicate: bool


plan_decoder = msgspec.json.Decoder(PlanRequest)
