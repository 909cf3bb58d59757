"""Sending the fake's changes as signed webhook events, the way Stripe does.

Each change (a subscription created, updated or deleted; a checkout completed) becomes an
event posted to the webhook URL with a `Stripe-Signature` header made with the secret
(HMAC-SHA256 over "timestamp.body"), from one thread, in order.

A delivery that does not get a 2xx is retried on Stripe's pattern, compressed in time
(docs/stripe.md): Stripe retries for up to three days with growing gaps; the fake waits
RETRY_DELAYS (1 s, 2 s, 4 s ... then every minute, about ten minutes in all), so a server
restarted with the right secret a few minutes later still receives what it refused.
A failing event does not hold up newer ones. With `report` set (scripts/fake_stripe.py
prints), every attempt's status is reported, and the first refusal of each kind comes
with why the server refused and what to change.
"""

from __future__ import annotations

import heapq
import json
import queue
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from statebus.testing.fake_stripe.signing import make_event, sign_payload
from statebus.testing.fake_stripe.wire import JSON

# Seconds before retry 1, 2, ...: Stripe's three days of exponential backoff, compressed.
RETRY_DELAYS: tuple[float, ...] = (1, 2, 4, 8, 15, 30) + (60,) * 9


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_hex(24)


@dataclass(order=True)
class Delivery:
    due: float
    seq: int
    body: bytes = field(compare=False)
    event_id: str = field(compare=False)
    event_type: str = field(compare=False)
    attempt: int = field(default=1, compare=False)
    status: int = field(default=0, compare=False)  # of the last attempt


@dataclass(frozen=True)
class Attempt:
    """One POST of one event: what tests and the report see."""

    event_id: str
    event_type: str
    attempt: int
    status: int  # 0: no HTTP answer at all
    error: str  # the server's error code and message, when it refused


class WebhookSender:
    def __init__(
        self, url: str, secret: str, *, report: Callable[[str], None] | None = None
    ) -> None:
        self.url, self.secret = url, secret
        self.report = report  # set by scripts/fake_stripe.py; tests read `attempts`
        self.retry_delays = RETRY_DELAYS
        self.sent: list[tuple[str, int]] = []  # (event type, final HTTP status) for tests
        self.attempts: list[Attempt] = []
        self._explained: set[str] = set()
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._stopping = threading.Event()
        self._delivering = threading.Event()  # cleared by hold(): events wait, in order
        self._delivering.set()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fake-stripe-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def send(self, event_type: str, obj: JSON) -> None:
        self._queue.put(make_event(event_type, obj))

    def hold(self) -> None:
        """Events wait (as when Stripe's deliveries lag) until release()."""
        self._delivering.clear()

    def release(self) -> None:
        self._delivering.set()

    def _run(self) -> None:
        pending: list[Delivery] = []  # a heap by (due, seq): retries wait here
        seq = 0
        while not self._stopping.is_set():
            wait = max(0.0, pending[0].due - time.monotonic()) if pending else None
            if not self._delivering.is_set():  # held: keep queueing, deliver nothing
                wait = 0.05 if wait is None else min(wait, 0.05)
            try:
                body = self._queue.get(timeout=wait)
            except queue.Empty:
                body = b""
            if body is None:
                return
            if body:
                event = json.loads(body)
                seq += 1
                heapq.heappush(
                    pending, Delivery(time.monotonic(), seq, body, event["id"], event["type"])
                )
            while (
                pending
                and pending[0].due <= time.monotonic()
                and self._delivering.is_set()
                and not self._stopping.is_set()
            ):
                delivery = heapq.heappop(pending)
                if not self._attempt(delivery):
                    self._retry_later(delivery, pending)

    def _retry_later(self, delivery: Delivery, pending: list[Delivery]) -> None:
        if delivery.attempt > len(self.retry_delays):
            self.sent.append((delivery.event_type, delivery.status))
            self._say(
                f"gave up on {delivery.event_id} ({delivery.event_type}) after"
                f" {delivery.attempt} attempts; `statebus reconcile` repairs what it missed"
            )
            return
        delay = self.retry_delays[delivery.attempt - 1]
        self._say(f"  retry {delivery.attempt} of {len(self.retry_delays)} in {delay:g} s")
        delivery.attempt += 1
        delivery.due = time.monotonic() + delay
        heapq.heappush(pending, delivery)

    def _attempt(self, delivery: Delivery) -> bool:
        """POSTs once; True when the server took the event (2xx)."""
        request = urllib.request.Request(
            self.url,
            data=delivery.body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign_payload(delivery.body, self.secret),
            },
        )
        error = ""
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, error_of(exc)
        except OSError:
            status = 0
        delivery.status = status
        self.attempts.append(
            Attempt(delivery.event_id, delivery.event_type, delivery.attempt, status, error)
        )
        answer = f"{status}" if status else "no answer"
        self._say(
            f"{delivery.event_type} {delivery.event_id}: {answer}"
            + (f" ({error})" if error else "")
        )
        if 200 <= status < 300:
            self.sent.append((delivery.event_type, status))
            self._explained.clear()  # a later refusal is news again
            return True
        hint = why(status, error, self.url)
        if hint not in self._explained:
            self._explained.add(hint)
            self._say(f"  {hint}")
        return False

    def _say(self, text: str) -> None:
        if self.report is not None:
            self.report(f"fake Stripe: {text}")


def error_of(exc: urllib.error.HTTPError) -> str:
    """The server's `{"error", "message"}` answer as one short string, if it sent one."""
    try:
        body = json.loads(exc.read(4096))
        return f"{body['error']}: {body['message']}"[:200]
    except (ValueError, KeyError, TypeError, OSError):
        return ""


def why(status: int, error: str, url: str) -> str:
    """What a developer changes for each way statebus refuses a webhook."""
    if status == 0:
        return f"nothing answers at {url}; is `statebus serve` running there?"
    refuses = "the server refuses this fake's events:"
    if error.startswith("stripe_not_configured"):
        return (
            f"{refuses} it runs without STRIPE_WEBHOOK_SECRET. Stop it, paste the `export`"
            " line printed above into its shell and start it again; events are retried meanwhile"
        )
    if error.startswith("bad_signature"):
        return (
            f"{refuses} its STRIPE_WEBHOOK_SECRET is not this fake's. Paste the `export` line"
            " printed above into the server's shell and restart it"
        )
    if status == 404:
        return f"no webhook route at {url}; statebus's is /v1/stripe/webhook"
    return f"{refuses} HTTP {status}" + (f": {error}" if error else "")
