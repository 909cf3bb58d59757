"""Metrics of the relay tier (relay and edge), in the process's one registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from statebus.metrics import registry

relay_leader = Gauge(
    "statebus_relay_leader", "1 while this relay holds the lease and publishes", registry=registry
)
relay_published = Counter(
    "statebus_relay_published", "messages sent to NATS (first sends and retries)", registry=registry
)
relay_acknowledged = Counter(
    "statebus_relay_acknowledged", "messages NATS JetStream acknowledged", registry=registry
)
relay_retried = Counter(
    "statebus_relay_retried",
    "messages sent again (no acknowledgement in time, or an error)",
    registry=registry,
)
relay_unpublished_age = Gauge(
    "statebus_relay_oldest_unpublished_seconds",
    "age of the oldest notification not yet acknowledged by NATS (0: none)",
    registry=registry,
)
relay_catch_up_pairs = Counter(
    "statebus_relay_catch_up_pairs",
    "versions published on taking the lease (committed while no relay led)",
    registry=registry,
)
edge_subscriptions = Gauge(
    "statebus_edge_nats_subscriptions", "NATS subscriptions this edge holds", registry=registry
)
edge_messages = Counter(
    "statebus_edge_nats_messages", "relay messages this edge received", registry=registry
)
edge_catch_ups = Counter(
    "statebus_edge_catch_ups",
    "re-reads of every watched user after a gap, by reason",
    ["reason"],
    registry=registry,
)
replica_reads = Counter(
    "statebus_replica_envelope_reads",
    "envelopes read from the replica (STATEBUS_READ_DATABASE_URL) at the notified version",
    registry=registry,
)
replica_fallbacks = Counter(
    "statebus_replica_fallbacks",
    "envelopes read from the primary because the replica had not replayed the version yet",
    registry=registry,
)
