"""`POST /v1/stripe/webhook`: verify Stripe's signature over the raw body, store the event.

The endpoint only stores (statebus.stripe_events, once per id) and answers; the inbox
worker applies events. So Stripe sees a 5xx, and retries, only when storing failed.
Never logs the body, the signature header or a secret.
"""

from __future__ import annotations

import logging

import msgspec
import stripe
from starlette.requests import Request
from starlette.responses import Response

from statebus import metrics, sqlfiles
from statebus.http import HTTPError, json_response, read_body
from statebus.inputs import InvalidInput, decode_json
from statebus.runtime import runtime
from statebus.stripe.events import StoredEvent, customer_of
from statebus.stripe.messages import WebhookAck

log = logging.getLogger("statebus.stripe")

MAX_BODY_BYTES = 1024 * 1024
TOLERANCE_SECONDS = 300
MAX_ID_CHARS = 255  # Stripe's ids and event types are far shorter
# `created` must fit a timestamptz: a signed event from 1970 to the year 9999.
MAX_CREATED = 253_402_300_799


_refusals_told = False


def refused_unconfigured() -> None:
    """Says once per process why webhooks get 503 and what to set: the warning at start
    scrolls away, and Stripe keeps retrying, so one line per request would flood."""
    global _refusals_told
    if _refusals_told:
        return
    _refusals_told = True
    log.warning(
        "refused a Stripe webhook (503): STRIPE_WEBHOOK_SECRET is not set. Set it to the"
        " endpoint's signing secret (whsec_..., from Stripe's dashboard or from"
        " scripts/fake_stripe.py) and restart; Stripe retries refused events, and"
        " `statebus reconcile` repairs anything missed. (Said once per process.)"
    )


def verify(body: bytes, header: str | None, secrets: tuple[str, ...]) -> None:
    """Accepts a signature made with any configured secret (rotation), within 300 s."""
    if not header:
        raise HTTPError(400, "bad_signature", "missing Stripe-Signature header")
    if not header.isascii():  # stripe-python's compare_digest raises TypeError on non-ASCII
        raise HTTPError(400, "bad_signature", "Stripe-Signature header is not ASCII")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "bad_payload", "body is not UTF-8") from None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError:
            continue
        return
    raise HTTPError(400, "bad_signature", "signature does not match or is too old")


def parse(body: bytes) -> StoredEvent:
    """A signed body is still checked: Stripe would retry a 5xx for days, so anything the
    database could not store (too deep, NUL, a `created` past any timestamp) is a 400."""
    try:
        event = msgspec.convert(decode_json(body), StoredEvent)
    except (msgspec.ValidationError, InvalidInput) as exc:
        raise HTTPError(400, "bad_payload", f"not a Stripe event: {exc}") from None
    if not event.id or not event.type:
        raise HTTPError(400, "bad_payload", "event id and type are required")
    if len(event.id) > MAX_ID_CHARS or len(event.type) > MAX_ID_CHARS:
        raise HTTPError(400, "bad_payload", f"event id and type are at most {MAX_ID_CHARS} chars")
    if isinstance(event.created, int) and not 0 <= event.created <= MAX_CREATED:
        raise HTTPError(400, "bad_payload", "event created is not a plausible unix time")
    return event


async def stripe_webhook(request: Request) -> Response:
    rt = runtime(request)
    secrets = rt.settings.stripe_webhook_secrets
    if not secrets:
        refused_unconfigured()
        raise HTTPError(503, "stripe_not_configured", "STRIPE_WEBHOOK_SECRET is not set")
    body = await read_body(request, MAX_BODY_BYTES, "webhook bodies")
    verify(body, request.headers.get("stripe-signature"), secrets)
    event = parse(body)
    try:
        stored = await rt.pool.fetchrow(
            sqlfiles.queries()["stripe_inbox_insert"],
            event.id,
            event.type,
            event.created_unix,
            body.decode("utf-8"),
            customer_of(event),
        )
    except Exception as exc:
        log.error("could not store stripe event %s: %s", event.id, type(exc).__name__)
        metrics.webhooks.labels("storage_failed").inc()
        raise HTTPError(500, "storage_failed", "the event could not be stored") from None
    metrics.webhooks.labels("duplicate" if stored is None else "stored").inc()
    return json_response(WebhookAck(received=True, duplicate=stored is None))
