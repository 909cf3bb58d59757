-- Flush: at commit, turn the transaction's dirty users into new versions.
--
-- Runs once per transaction (deferred constraint trigger on statebus.commit_hook).
-- For each dirty user: lock the version row, assemble the state as of now, and when it
-- differs from the stored one, bump the version, keep it in history and NOTIFY.
-- Locking before assembling is what makes "the snapshot is the state as of commit"
-- hold under concurrency: a second transaction touching the same user waits here for
-- the first to commit, and its next statement then sees the first one's rows.

CREATE OR REPLACE FUNCTION statebus.write_source() RETURNS text
LANGUAGE sql STABLE AS $$
    -- statebus's own writers say who they are (SET LOCAL statebus.source = ...); anyone
    -- else is named by login role and application, so an admin's psql edit shows as such.
    SELECT coalesce(
        nullif(current_setting('statebus.source', true), ''),
        'sql:' || session_user
            || coalesce('/' || nullif(current_setting('application_name', true), ''), ''))
$$;

CREATE OR REPLACE FUNCTION statebus.flush() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog SET TimeZone = 'UTC'
    SET plan_cache_mode = 'force_generic_plan' AS $$
DECLARE
    dirty text[];
    src text := statebus.write_source();
    committed timestamptz := clock_timestamp();
    inline_limit int;
    notified bigint;
BEGIN
    -- Reset first: under SET CONSTRAINTS ALL IMMEDIATE this runs mid-transaction, and
    -- later statements must queue a new flush.
    PERFORM set_config('statebus.capturing', 'off', true);
    DELETE FROM statebus.commit_hook h WHERE h.txid = NEW.txid;
    dirty := ARRAY(SELECT d.user_id FROM statebus.dirty d WHERE d.txid = NEW.txid ORDER BY d.user_id);
    DELETE FROM statebus.dirty d WHERE d.txid = NEW.txid;
    IF cardinality(dirty) = 0 THEN
        RETURN NULL;
    END IF;

    INSERT INTO statebus.versions (user_id) SELECT unnest(dirty) ON CONFLICT DO NOTHING;
    -- Sorted, so two transactions with overlapping users cannot deadlock here.
    PERFORM 1 FROM statebus.versions v WHERE v.user_id = ANY (dirty) ORDER BY v.user_id FOR UPDATE;

    SELECT s.value::int INTO inline_limit FROM statebus.settings s WHERE s.name = 'notify_inline_limit';
    -- Plans: a generic one (cached, index lookups) for ordinary commits, since planning
    -- the state joins costs ~1.3 ms; a custom one, which sees the array's real length
    -- and picks hash joins, for bulk writes. The SET clause above restores it on exit.
    IF cardinality(dirty) > 200 THEN
        PERFORM set_config('plan_cache_mode', 'force_custom_plan', true);
    END IF;

    WITH fresh AS (
        SELECT b.user_id, b.state FROM statebus.build_states(dirty) b
    ), changed AS (
        UPDATE statebus.versions v
        SET version = v.version + 1, state = f.state, committed_at = committed, source = src
        FROM fresh f
        WHERE v.user_id = f.user_id AND v.state IS DISTINCT FROM f.state
        RETURNING v.user_id, v.version, v.state
    ), kept AS (
        INSERT INTO statebus.history (user_id, version, state, committed_at, source)
        SELECT c.user_id, c.version, c.state, committed, src FROM changed c
    )
    -- NOTIFY payloads must stay under 8000 bytes: big documents travel by reference
    -- and listeners read them back from statebus.history.
    SELECT count(pg_notify('statebus', CASE
               WHEN octet_length(p.inline) <= coalesce(inline_limit, 7900) THEN p.inline
               ELSE jsonb_build_object('user_id', p.user_id, 'version', p.version, 'ref', true)::text
           END))
    INTO notified
    FROM (SELECT c.user_id, c.version, jsonb_build_object(
              'user_id', c.user_id, 'version', c.version, 'state', c.state)::text AS inline
          FROM changed c) p;
    RETURN NULL;
END $$;

-- Constraint triggers have no OR REPLACE; this file runs in one transaction, so the
-- drop and create are atomic.
DROP TRIGGER IF EXISTS statebus_flush ON statebus.commit_hook;
CREATE CONSTRAINT TRIGGER statebus_flush AFTER INSERT ON statebus.commit_hook
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION statebus.flush();
