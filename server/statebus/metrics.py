"""Prometheus metrics, one registry for the process."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

registry = CollectorRegistry()
# process_resident_memory_bytes, process_open_fds, process_max_fds,
# process_cpu_seconds_total (Linux), and python_info.
ProcessCollector(registry=registry)
PlatformCollector(registry=registry)
build_info = Gauge(
    "statebus_build_info",
    "always 1; the labels say which build runs (commit: unknown when not known)",
    ["version", "commit"],
    registry=registry,
)

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

# -- delivery health (delivery.py, listener.py) ------------------------------------------

ready = Gauge("statebus_ready", "1 while /readyz would answer 200", registry=registry)
readiness_lost = Counter(
    "statebus_readiness_lost", "times the process turned not ready", registry=registry
)
oldest_pending_seconds = Gauge(
    "statebus_oldest_pending_notification_seconds",
    "age of the oldest notification received and not yet turned into frames",
    registry=registry,
)
event_loop_stalls = Counter(
    "statebus_event_loop_stalls",
    "times the event loop did not run for longer than the readiness threshold",
    registry=registry,
)
commit_to_socket = Histogram(
    "statebus_commit_to_socket_seconds",
    "from a version's committed_at to its frame being handed to sockets",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=registry,
)
undecodable_notifications = Counter(
    "statebus_notifications_undecodable",
    "notifications on channel statebus this process could not decode",
    registry=registry,
)
listen_connected = Gauge(
    "statebus_listen_connected", "1 while the LISTEN connection is live", registry=registry
)
readers_connected = Gauge(
    "statebus_envelope_readers_connected",
    "envelope readers holding a database connection",
    registry=registry,
)

# -- polled from the database and the pool (monitor.py) -----------------------------------

notify_queue_usage = Gauge(
    "statebus_notify_queue_usage",
    "fraction of PostgreSQL's NOTIFY queue in use (pg_notification_queue_usage()); "
    "at 1 every tracked commit fails",
    registry=registry,
)
stripe_inbox = Gauge(
    "statebus_stripe_inbox_events",
    "stored Stripe events not done yet, by status",
    ["status"],
    registry=registry,
)
pool_connections = Gauge(
    "statebus_pool_connections",
    "connections of the process's pool, by state (in_use, idle)",
    ["state"],
    registry=registry,
)
pool_waiting = Gauge(
    "statebus_pool_waiting", "requests waiting for a pool connection", registry=registry
)
