"""`POST /v1/stripe/webhook`: verify Stripe's signature over the raw body, store the event.

The endpoint only stores (statebus.stripe_events, once per id) and answers; the inbox
worker applies events. So Stripe sees a 5xx, and retries, only when storing failed.
Never logs the body, the signature header or a secret.

Its memory is bounded (docs/security.md, "Webhook limits"): at most
STATEBUS_WEBHOOK_CONCURRENCY deliveries at once (past it: 503 with Retry-After, which
Stripe retries), and each costs a few times its body, never a tree of Python objects:
the signature is computed over the body's bytes, only the fields statebus reads here are
decoded, the shape limits are checked on the text, and PostgreSQL parses the body into
jsonb itself (refusing bad UTF-8, NUL, unpaired surrogates and numbers out of range).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from typing import Any

import asyncpg
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from statebus import metrics, sqlfiles
from statebus.core_messages import ErrorBody
from statebus.http import HTTPError, json_response
from statebus.inputs import InvalidInput, check_json_bytes, is_clean_text
from statebus.runtime import runtime
from statebus.stripe.events import unix_seconds
from statebus.stripe.stripe_messages import WebhookAck

log = logging.getLogger("statebus.stripe")

MAX_BODY_BYTES = 1024 * 1024
TOLERANCE_SECONDS = 300
MAX_ID_CHARS = 255  # Stripe's ids and event types are far shorter
# `created` must fit a timestamptz: a signed event from 1970 to the year 9999.
MAX_CREATED = 253_402_300_799
# A body must arrive within this (a slow one holds one of the few delivery slots).
BODY_SECONDS = 30.0
RETRY_AFTER_SECONDS = 10


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


class EventHead(msgspec.Struct):
    """What the endpoint reads of an event; msgspec skips everything else without
    building it. `data` maps to raw JSON text, decoded further only for the customer."""

    id: str
    type: str
    created: int | str = 0  # v1: unix seconds; thin: ISO-8601
    data: dict[str, msgspec.Raw] = {}

    @property
    def created_unix(self) -> int:
        return unix_seconds(self.created)


class CustomerRef(msgspec.Struct):
    id: Any = None


class ObjectHead(msgspec.Struct):
    customer: str | CustomerRef | None = None


_head = msgspec.json.Decoder(EventHead)
_object_head = msgspec.json.Decoder(ObjectHead)


def customer_of(head: EventHead) -> str | None:
    """The customer the event is about (`data.object.customer`, an id or an expanded
    object), as events.customer_of reads it."""
    raw = head.data.get("object")
    if raw is None or not bytes(memoryview(raw)[:1]) == b"{":
        return None
    try:
        customer = _object_head.decode(raw).customer
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if isinstance(customer, CustomerRef):
        customer = customer.id
    return customer if isinstance(customer, str) and customer else None


class Slots:
    """Deliveries in progress; a delivery past the limit is refused, not queued."""

    def __init__(self, size: int) -> None:
        self.free = size

    def take(self) -> bool:
        if self.free <= 0:
            return False
        self.free -= 1
        return True

    def give(self) -> None:
        self.free += 1


def slots_of(request: Request) -> Slots:
    state = request.app.state
    slots = getattr(state, "stripe_webhook_slots", None)
    if slots is None:  # one per app, made on the event loop that serves it
        slots = state.stripe_webhook_slots = Slots(runtime(request).settings.webhook_concurrency)
    assert isinstance(slots, Slots)
    return slots


def _signed_by(body: bytes | bytearray, timestamp: int, signatures: list[str], secret: str) -> bool:
    mac = hmac.new(secret.encode(), b"%d." % timestamp, hashlib.sha256)
    mac.update(body)  # the body's own bytes: no str copy of it, nor of "t.body"
    expected = mac.hexdigest()
    return any(hmac.compare_digest(expected, signature) for signature in signatures)


def verify(body: bytes | bytearray, header: str | None, secrets: tuple[str, ...]) -> None:
    """Stripe's scheme (stripe.WebhookSignature.verify_header), over bytes: `t=<unix>` and
    one or more `v1=<hex>` HMAC-SHA256 of `<t>.<body>`; any configured secret (rotation)
    may have signed it; no older than 300 s."""
    if not header:
        raise HTTPError(400, "bad_signature", "missing Stripe-Signature header")
    if not header.isascii():  # compare_digest refuses non-ASCII str
        raise HTTPError(400, "bad_signature", "Stripe-Signature header is not ASCII")
    items = [item.split("=", 1) for item in header.split(",")]
    stamps = [value for key, *value in items if key == "t" and value]
    signatures = [value[0] for key, *value in items if key == "v1" and value]
    try:
        timestamp = int(stamps[0][0])
    except (IndexError, ValueError):
        raise HTTPError(400, "bad_signature", "Stripe-Signature has no timestamp") from None
    if not signatures or not any(_signed_by(body, timestamp, signatures, s) for s in secrets):
        raise HTTPError(400, "bad_signature", "signature does not match or is too old")
    if timestamp < time.time() - TOLERANCE_SECONDS:
        raise HTTPError(400, "bad_signature", "signature does not match or is too old")


def parse(body: bytes | bytearray) -> EventHead:
    """A signed body is still checked: Stripe would retry a 5xx for days, so anything the
    database could not store (too deep, too long a number, a `created` past any
    timestamp) is a 400. What jsonb itself refuses is a 400 too (`store`)."""
    try:
        event = _head.decode(body)
        check_json_bytes(body)
    except (msgspec.ValidationError, InvalidInput) as exc:
        raise HTTPError(400, "bad_payload", f"not a Stripe event: {exc}") from None
    except msgspec.DecodeError as exc:
        raise HTTPError(400, "bad_payload", f"not a Stripe event: not JSON: {exc}") from None
    except RecursionError:  # msgspec's own guard, far deeper than the depth limit
        raise HTTPError(400, "bad_payload", "not a Stripe event: nested too deep") from None
    if not event.id or not event.type:
        raise HTTPError(400, "bad_payload", "event id and type are required")
    if len(event.id) > MAX_ID_CHARS or len(event.type) > MAX_ID_CHARS:
        raise HTTPError(400, "bad_payload", f"event id and type are at most {MAX_ID_CHARS} chars")
    if not (is_clean_text(event.id) and is_clean_text(event.type)):
        raise HTTPError(400, "bad_payload", "event id and type hold a NUL or a lone surrogate")
    if isinstance(event.created, int) and not 0 <= event.created <= MAX_CREATED:
        raise HTTPError(400, "bad_payload", "event created is not a plausible unix time")
    return event


async def read_capped(request: Request) -> bytearray:
    """The body, 413 past MAX_BODY_BYTES (declared or read), 408 when it takes longer than
    BODY_SECONDS; one buffer, grown in place."""
    too_large = HTTPError(
        413, "payload_too_large", f"webhook bodies are limited to {MAX_BODY_BYTES} bytes"
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_SECONDS):
            async for chunk in request.stream():
                if len(body) + len(chunk) > MAX_BODY_BYTES:
                    raise too_large
                body += chunk
    except TimeoutError:
        raise HTTPError(408, "body_timeout", "the body did not arrive in time") from None
    return body


async def store(request: Request, event: EventHead, body: bytearray) -> bool:
    """True when stored, False for a duplicate; PostgreSQL decodes the body into jsonb."""
    try:
        stored = await runtime(request).pool.fetchrow(
            sqlfiles.queries()["stripe_inbox_insert"],
            event.id,
            event.type,
            event.created_unix,
            body,
            customer_of(event),
        )
    except (asyncpg.DataError, asyncpg.ProgramLimitExceededError) as exc:
        # Bad UTF-8, \u0000, an unpaired surrogate, a number jsonb cannot hold, a depth
        # past the server's stack: never storable, so never worth a retry.
        raise HTTPError(400, "bad_payload", f"not a storable event: {type(exc).__name__}") from None
    except Exception as exc:
        log.error("could not store stripe event %s: %s", event.id, type(exc).__name__)
        metrics.webhooks.labels("storage_failed").inc()
        raise HTTPError(500, "storage_failed", "the event could not be stored") from None
    return stored is not None


async def stripe_webhook(request: Request) -> Response:
    secrets = runtime(request).settings.stripe_webhook_secrets
    if not secrets:
        refused_unconfigured()
        raise HTTPError(503, "stripe_not_configured", "STRIPE_WEBHOOK_SECRET is not set")
    slots = slots_of(request)
    if not slots.take():
        metrics.webhooks.labels("busy").inc()
        return json_response(
            ErrorBody("busy", "too many webhook deliveries at once; retry later"),
            503,
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    try:
        body = await read_capped(request)
        verify(body, request.headers.get("stripe-signature"), secrets)
        event = parse(body)
        stored = await store(request, event, body)
    finally:
        slots.give()
    metrics.webhooks.labels("stored" if stored else "duplicate").inc()
    return json_response(WebhookAck(received=True, duplicate=not stored))
