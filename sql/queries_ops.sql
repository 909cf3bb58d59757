-- Queries of the operations side (statebus.sessions, statebus.monitor), by name.

-- name: session_guard
-- statebus's dedicated connections (LISTEN, envelope readers) never open a transaction:
-- one left open by a bug ends after 10 s instead of pinning the NOTIFY queue.
SET idle_in_transaction_session_timeout = '10s';

-- name: pool_session_guard
-- The pool's transactions may wait on Stripe calls (at most about a minute with the
-- client's timeout and retries); five minutes bounds a stuck one.
SET idle_in_transaction_session_timeout = '5min';

-- name: notify_queue_usage
-- Fraction of the NOTIFY queue in use (0 to 1); at 1 every notifying commit fails.
SELECT pg_notification_queue_usage();

-- name: stripe_inbox_backlog
-- Stored Stripe events not done yet, by status (the statuses /metrics shows).
SELECT status, count(*)::bigint AS n
FROM statebus.stripe_events
WHERE status IN ('pending', 'retrying', 'unmatched', 'failed')
GROUP BY status;

-- name: notify_queue_pinners
-- Sessions idle in a transaction, longest first: one of them that LISTENs pins the NOTIFY
-- queue (PostgreSQL shows no other session's LISTENs; each listener's queue position
-- waits for its transaction to end). End one with SELECT pg_terminate_backend(pid).
SELECT pid, usename, application_name, client_addr, now() - state_change AS idle_for,
       query AS last_query
FROM pg_catalog.pg_stat_activity
WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')
ORDER BY state_change;

-- name: backend_pid
-- Which server process runs this session (statebus.pooler compares two sessions').
SELECT pg_backend_pid();

-- name: check_incarnation
-- Restore detection (sql/triggers/70_incarnation.sql): (restored, users moved, reason).
SELECT restored, users, reason FROM statebus.check_incarnation();

-- name: repair_migration
-- A migration applied from an earlier edit of its file, repaired (sql/repairs/).
UPDATE statebus.schema_migrations SET checksum = $2 WHERE version = $1;
