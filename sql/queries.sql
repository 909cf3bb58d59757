-- Queries the server runs, by name (loaded by server/queries.py).

-- name: state_of
-- The latest envelope of one user; version 0 and no state before any row exists.
SELECT $1::text AS user_id, coalesce(v.version, 0) AS version, v.state
FROM (SELECT 1) AS one
LEFT JOIN statebus.versions v ON v.user_id = $1;

-- name: states_of
-- Latest envelopes of many users at once (re-sync after the LISTEN connection returns).
SELECT u.id AS user_id, coalesce(v.version, 0) AS version, v.state
FROM unnest($1::text[]) AS u (id)
LEFT JOIN statebus.versions v ON v.user_id = u.id;

-- name: version_of
-- A referenced (too big for NOTIFY) version, or the latest if it was already pruned.
SELECT h.user_id, h.version, h.state FROM statebus.history h
WHERE h.user_id = $1 AND h.version = $2
UNION ALL
SELECT v.user_id, v.version, v.state FROM statebus.versions v
WHERE v.user_id = $1 AND NOT EXISTS (
    SELECT 1 FROM statebus.history h WHERE h.user_id = $1 AND h.version = $2)
LIMIT 1;

-- name: prune_history
SELECT statebus.prune_history();

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
