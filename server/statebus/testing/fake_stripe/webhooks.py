"""Sending the fake's changes as signed webhook events, the way Stripe does.

Each change (a subscription created, updated or deleted; a checkout completed) becomes an
event posted to the webhook URL with a `Stripe-Signature` header made with the secret
(HMAC-SHA256 over "timestamp.body"), from one thread, in order. A failed delivery is
retried a few times with backoff, then given up (and printed), as Stripe would retry.
"""

from __future__ import annotations

import json
import queue
import secrets
import sys
import threading
import urllib.error
import urllib.request

from statebus import backoff
from statebus.testing.fake_stripe.signing import make_event, sign_payload
from statebus.testing.fake_stripe.wire import JSON

ATTEMPTS = 5


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_hex(24)


class WebhookSender:
    def __init__(self, url: str, secret: str) -> None:
        self.url, self.secret = url, secret
        self.sent: list[tuple[str, int]] = []  # (event type, HTTP status) for tests
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
        while (body := self._queue.get()) is not None:
            while not self._delivering.wait(0.05):
                if self._stopping.is_set():
                    return
            self._deliver(body)

    def _deliver(self, body: bytes) -> None:
        event_type = str(json.loads(body)["type"])
        for attempt in range(1, ATTEMPTS + 1):
            request = urllib.request.Request(
                self.url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "Stripe-Signature": sign_payload(body, self.secret),
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    self.sent.append((event_type, response.status))
                    return
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 0
            if self._stopping.wait(backoff.delay(attempt, base=0.5, cap=5.0)):
                break
        self.sent.append((event_type, status))
        print(
            f"fake Stripe: could not deliver {event_type} (last status {status})", file=sys.stderr
        )
