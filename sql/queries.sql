-- Queries the server runs, by name (loaded by statebus.sqlfiles).

-- name: envelopes
-- Current envelopes of the given users, each (version, document) from one snapshot.
SELECT user_id, version, committed_at, source, state FROM statebus.envelopes($1::text[]);

-- name: prune_history
SELECT statebus.prune_history();

-- name: prune_stripe_events
-- One batch of processed Stripe events past their retention (sql/triggers/70_stripe_inbox.sql).
SELECT statebus.prune_stripe_events($1);

-- name: migration_lock
-- Serialises concurrent `statebus migrate` runs (two servers starting at once).
SELECT pg_advisory_lock(7324001);

-- name: migration_unlock
SELECT pg_advisory_unlock(7324001);

-- name: applied_migrations
SELECT version, checksum FROM statebus.schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO statebus.schema_migrations (version, name, checksum) VALUES ($1, $2, $3);

-- name: routines_checksum
SELECT checksum FROM statebus.schema_routines;

-- name: record_routines
INSERT INTO statebus.schema_routines (checksum) VALUES ($1)
ON CONFLICT (id) DO UPDATE SET checksum = excluded.checksum, applied_at = now();

-- name: listener_probe
-- The LISTEN connection notifies itself: proof that notifications still arrive.
SELECT pg_notify($1, 'probe');

-- name: ping
SELECT 1;
