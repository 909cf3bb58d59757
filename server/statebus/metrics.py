"""Prometheus metrics, one registry for the process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

registry = CollectorRegistry()

notifications = Counter(
    "statebus_notifications", "NOTIFY messages received on channel statebus", registry=registry
)
listener_reconnects = Counter(
    "statebus_listener_reconnects",
    "times the LISTEN connection was re-established",
    registry=registry,
)
snapshots_sent = Counter(
    "statebus_snapshots_sent", "snapshots written to sockets", registry=registry
)
sockets = Gauge("statebus_sockets", "open authenticated WebSockets", registry=registry)
socket_closes = Counter(
    "statebus_socket_closes",
    "sockets closed by the server, by close code",
    ["code"],
    registry=registry,
)
webhooks = Counter(
    "statebus_stripe_webhooks",
    "Stripe webhook deliveries by outcome",
    ["outcome"],
    registry=registry,
)
stripe_events = Counter(
    "statebus_stripe_event_attempts",
    "attempts at applying stored Stripe events, by the status they left the event in",
    ["status"],
    registry=registry,
)
stripe_events_failed = Gauge(
    "statebus_stripe_events_failed",
    "stored Stripe events failed for good (see `statebus stripe-events --failed`)",
    registry=registry,
)
stripe_duplicates = Gauge(
    "statebus_stripe_duplicate_subscriptions",
    "users' second billed subscriptions, kept out of their state, for an operator to refund"
    " or cancel (see `statebus stripe-events`)",
    registry=registry,
)
