-- The Stripe inbox's retention and the counts other roles may read of it.

-- Deletes up to `batch` processed (applied or ignored) events older than the
-- `stripe_events_retention` setting; returns how many. Failed, retrying, pending and
-- unmatched events are never deleted. Batches keep each transaction short (every
-- deleted payload is TOASTed data to free); SKIP LOCKED keeps several servers apart.
CREATE OR REPLACE FUNCTION statebus.prune_stripe_events(batch integer DEFAULT 10000)
RETURNS bigint
LANGUAGE sql AS $$
    WITH doomed AS (
        SELECT id FROM statebus.stripe_events
        WHERE status IN ('applied', 'ignored')
          AND applied_at < now() - (SELECT value::interval FROM statebus.settings
                                    WHERE name = 'stripe_events_retention')
        ORDER BY applied_at
        LIMIT batch
        FOR UPDATE SKIP LOCKED
    ), pruned AS (
        DELETE FROM statebus.stripe_events e USING doomed WHERE e.id = doomed.id
        RETURNING 1
    )
    SELECT count(*) FROM pruned
$$;

-- Operational counters of the inbox, without any of Stripe's data: what a monitoring role
-- is granted instead of the table (sql/roles_example.sql). A view reads the table with
-- its owner's privileges, so the reader needs SELECT on the view only.
CREATE OR REPLACE VIEW statebus.stripe_event_counts AS
SELECT status,
       count(*) AS events,
       min(received_at) AS oldest_received_at,
       max(received_at) AS newest_received_at,
       max(attempts) AS max_attempts
FROM statebus.stripe_events
GROUP BY status;
