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
-- Serialises concurrent `statebus migrate` runs (two servers starting at once) for the
-- rest of the migrating transaction. A table lock, not an advisory one: only roles with
-- privileges on statebus.schema_migrations (its owner) may take it; any role may take
-- any advisory lock. SHARE ROW EXCLUSIVE conflicts with itself, not with readers.
LOCK TABLE statebus.schema_migrations IN SHARE ROW EXCLUSIVE MODE;

-- name: set_lock_timeout
-- lock_timeout for the rest of this transaction ($1 milliseconds).
SELECT set_config('lock_timeout', $1::int::text, true);

-- name: set_session_lock_timeout
-- lock_timeout for the rest of this session ($1 milliseconds). SET after connecting, not a
-- startup parameter: PgBouncer refuses startup parameters it does not know.
SELECT set_config('lock_timeout', $1::int::text, false);

-- name: lock_holders
-- Sessions holding locks on statebus's or the subscription tables: named in the error
-- when a wait for one of them timed out (who to ask, or which pid to end).
SELECT a.pid, a.usename AS role, a.application_name, a.state, a.xact_start,
       string_agg(DISTINCT c.relname || ' ' || l.mode, ', ') AS locks
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_class c ON c.oid = l.relation
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.locktype = 'relation' AND n.nspname IN ('statebus', 'public')
  AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
GROUP BY a.pid, a.usename, a.application_name, a.state, a.xact_start
ORDER BY a.xact_start NULLS LAST
LIMIT 5;

-- name: applied_migrations
SELECT version, name, checksum FROM statebus.schema_migrations ORDER BY version;

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
