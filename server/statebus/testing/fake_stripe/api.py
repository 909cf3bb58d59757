"""A stateful fake of the Stripe HTTP API for tests, served on a local port.

The real ``stripe`` library talks to it through a base URL, so tests exercise the same
form encoding, headers, retries, idempotency keys and error mapping as production;
nothing mocks the library. It covers the subscription, customer and price calls statebus
makes (see ``stripe_routes``) plus failure injection: error statuses, latency, dropped
connections. Server code never imports it.

    with FakeStripe() as fake:
        fake.add_subscription(customer="cus_1", price="price_a", sub_id="sub_1")
        fake.client().v1.subscriptions.retrieve("sub_1")

"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe

from statebus.testing.fake_stripe.dashboard import Dashboard
from statebus.testing.fake_stripe.httpserver import LoopbackServer, drop, reply
from statebus.testing.fake_stripe.routes import ROUTES
from statebus.testing.fake_stripe.sessions import page
from statebus.testing.fake_stripe.state import StripeState
from statebus.testing.fake_stripe.webhooks import WebhookSender, new_webhook_secret
from statebus.testing.fake_stripe.wire import JSON, StripeError, new_id, parse_form

TEST_API_KEY = "sk_test_fake"

RequestLog = tuple[str, str, dict[str, str]]  # (method, path without query, lower-cased headers)


@dataclass
class _Rule:
    remaining: int
    path_prefix: str
    status: int  # 0: drop the connection after applying the request
    method: str | None = None  # None: any method


def _error_for(status: int) -> StripeError:
    if status == 429:
        return StripeError(429, "Too many requests (injected)", code="rate_limit")
    if status >= 500:
        return StripeError(status, "Injected failure", error_type="api_error")
    return StripeError(status, "Injected failure")


class FakeStripe(Dashboard):
    """Fake Stripe API server plus thread-safe direct access to its objects."""

    def __init__(
        self, *, webhook_url: str | None = None, webhook_secret: str | None = None
    ) -> None:
        self.state = StripeState()
        # With a webhook URL, every change is sent there as a signed event (see webhooks.py).
        self.webhooks: WebhookSender | None = None
        if webhook_url:
            self.webhooks = WebhookSender(webhook_url, webhook_secret or new_webhook_secret())
        self.url = ""
        self.requests: list[RequestLog] = []
        self.params_log: list[dict[str, str]] = []  # flat form fields, aligned with ``requests``
        self._lock = self.state.lock
        self._rules: list[_Rule] = []
        self._latency = 0.0
        self._unreachable = False
        # (Authorization, Idempotency-Key) -> (request fingerprint, status, body)
        self._idempotent: dict[tuple[str, str], tuple[object, int, JSON]] = {}
        self._server: LoopbackServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1 (a free port unless given); returns the base URL."""
        server = LoopbackServer(port, self._serve)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self.state.base_url = self.url
        if self.webhooks is not None:
            self.webhooks.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
        self._server = self._thread = None
        if self.webhooks is not None:
            self.webhooks.stop()

    def send_webhooks(self, url: str, secret: str | None = None) -> WebhookSender:
        """From now on, post every change to `url` as a signed event (after seeding, say)."""
        self._flush_events()  # changes made before are not sent
        self.webhooks = WebhookSender(url, secret or new_webhook_secret())
        if self._server is not None:
            self.webhooks.start()
        return self.webhooks

    def _flush_events(self) -> None:
        """Hands the changes made under the lock to the webhook sender (or drops them)."""
        with self._lock:
            events, self.state.outbox = self.state.outbox, []
        if self.webhooks is not None:
            for event_type, obj in events:
                self.webhooks.send(event_type, obj)

    def __enter__(self) -> FakeStripe:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def client(self, *, max_network_retries: int = 0, **kwargs: Any) -> stripe.StripeClient:
        """A real ``StripeClient`` pointed at this fake (no retries unless asked)."""
        return stripe.StripeClient(
            kwargs.pop("api_key", TEST_API_KEY),
            base_addresses={"api": self.url},
            max_network_retries=max_network_retries,
            **kwargs,
        )

    # -- failure injection -----------------------------------------------------------------

    def fail_next(
        self, n: int = 1, *, status: int = 500, path_prefix: str = "/v1/", method: str | None = None
    ) -> None:
        """The next ``n`` requests under ``path_prefix`` (of ``method``, if given) answer a
        Stripe error, unapplied."""
        with self._lock:
            self._rules.append(_Rule(n, path_prefix, status, method))

    def drop_next(
        self, n: int = 1, *, path_prefix: str = "/v1/", method: str | None = None
    ) -> None:
        """The next ``n`` requests (of ``method``, if given) are applied (and their idempotent
        result stored), then the connection drops unanswered: the client sees
        APIConnectionError for a done change."""
        with self._lock:
            self._rules.append(_Rule(n, path_prefix, 0, method))

    def set_latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = seconds

    def set_unreachable(self, flag: bool) -> None:
        """While set, every connection closes unanswered (APIConnectionError)."""
        with self._lock:
            self._unreachable = flag

    # -- HTTP ------------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        body = handler.rfile.read(int(headers.get("content-length") or 0)).decode()
        form = body if handler.command == "POST" else split.query
        with self._lock:
            self.requests.append((handler.command, split.path, headers))
            self.params_log.append(dict(parse_qsl(form, keep_blank_values=True)))
            latency = self._latency
        time.sleep(latency)
        if not split.path.startswith("/v1/"):
            self._serve_page(handler, split.path)
            return
        with self._lock:
            answer = (
                None
                if self._unreachable
                else self._answer(handler.command, split.path, headers, form)
            )
        self._flush_events()
        if answer is None:
            drop(handler)
            return
        status, payload, extra_headers = answer
        extra_headers["Request-Id"] = new_id("req")
        reply(handler, status, json.dumps(payload).encode(), "application/json", extra_headers)

    def _serve_page(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        with self._lock:
            found = page(self.state, handler.command, path)
        self._flush_events()
        status, text, extra = found or (404, "not found", {})
        reply(handler, status, text.encode(), "text/html; charset=utf-8", extra)

    def _answer(
        self, method: str, path: str, headers: dict[str, str], form: str
    ) -> tuple[int, JSON, dict[str, str]] | None:
        """Status, body and extra headers for one request, or None to drop it (lock held)."""
        rule = next(
            (
                r
                for r in self._rules
                if r.remaining and path.startswith(r.path_prefix) and r.method in (None, method)
            ),
            None,
        )
        if rule is not None:
            rule.remaining -= 1
            if rule.status:
                return rule.status, _error_for(rule.status).body, {}
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer sk_"):
            error = StripeError(401, f"Invalid API Key provided: {auth[7:] or '(none)'}")
            return 401, error.body, {}
        key = headers.get("idempotency-key", "") if method == "POST" else ""
        fingerprint = (path, sorted(parse_qsl(form, keep_blank_values=True)))
        stored = self._idempotent.get((auth, key)) if key else None
        if stored is not None and stored[0] != fingerprint:
            error = StripeError(
                400,
                "Keys for idempotent requests can only be used with the same parameters "
                f"they were first used with. Try using a key other than '{key}' if you meant "
                "to execute a different request.",
                error_type="idempotency_error",
            )
            return 400, error.body, {}
        if stored is not None:
            status, payload = stored[1], stored[2]
            extra = {"Idempotency-Key": key, "Idempotent-Replayed": "true"}
        else:
            status, payload = self._dispatch(method, path, form)
            if key and status < 400:  # Stripe saves no result for requests that failed validation
                self._idempotent[(auth, key)] = (fingerprint, status, payload)
            extra = {"Idempotency-Key": key} if key else {}
        return None if rule is not None else (status, payload, extra)

    def _dispatch(self, method: str, path: str, form: str) -> tuple[int, JSON]:
        for route_method, pattern, route in ROUTES:
            match = pattern.fullmatch(path)
            if match is not None and route_method == method:
                try:
                    return 200, route(self.state, match.group(1), parse_form(form))
                except StripeError as error:
                    return error.status, error.body
        message = f"Unrecognized request URL ({method}: {path})."
        return 404, StripeError(404, message).body
