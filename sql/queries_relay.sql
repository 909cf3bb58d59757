-- Queries of `statebus relay` (statebus/relay.py), by name.

-- name: relay_acquire
-- Take the lease when it expired or its holder's session is gone (kill -9 of a relay or
-- a cut connection ends the backend at once; the expiry covers a session that lingers).
-- Concurrent takers serialise on the row; the loser re-checks and finds a live holder.
UPDATE statebus.relay_lease l
SET token = l.token + 1,
    holder = $1,
    holder_pid = pg_backend_pid(),
    holder_started = (SELECT a.backend_start FROM pg_stat_activity a
                      WHERE a.pid = pg_backend_pid()),
    expires_at = now() + make_interval(secs => $2)
WHERE l.expires_at < now()
   OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                  WHERE a.pid = l.holder_pid AND a.backend_start = l.holder_started)
RETURNING l.token, l.watermark::text AS watermark;

-- name: relay_renew
UPDATE statebus.relay_lease
SET expires_at = now() + make_interval(secs => $2)
WHERE token = $1 AND holder_pid = pg_backend_pid()
RETURNING token;

-- name: relay_holder
-- Who leads, for a relay standing by to say.
SELECT holder, holder_pid, token, expires_at > now() AS live FROM statebus.relay_lease;

-- name: relay_snapshot_xmin
-- Every transaction older than this has ended (committed or not).
SELECT pg_snapshot_xmin(pg_current_snapshot())::text;

-- name: relay_record_watermark
UPDATE statebus.relay_lease
SET watermark = greatest(watermark, $2::text::xid8)
WHERE token = $1 AND holder_pid = pg_backend_pid()
RETURNING token;

-- name: relay_versions_since
-- Users whose latest version was made by a transaction at or after the watermark: what
-- may have been committed while no relay led. One scan of statebus.versions: an index on
-- txid would cost every writer its HOT update, for a query run once per change of leader.
SELECT user_id, version FROM statebus.versions WHERE txid >= $1::text::xid8;
