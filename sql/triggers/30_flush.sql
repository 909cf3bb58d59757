-- Flush: at commit, turn the transaction's dirty users into new versions.
--
-- Runs once per transaction (deferred constraint trigger on pg_temp.statebus_commit).
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

CREATE OR REPLACE FUNCTION statebus.notification_payload(
    user_id text, version bigint, state jsonb, inline_limit int) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    -- NOTIFY payloads must stay under 8000 bytes: big documents travel by reference
    -- and listeners read them back from statebus.history.
    SELECT CASE WHEN octet_length(full_payload) <= inline_limit THEN full_payload
                ELSE jsonb_build_object('user_id', user_id, 'version', version, 'ref', true)::text
           END
    FROM (SELECT jsonb_build_object('user_id', user_id, 'version', version,
                                    'state', state)::text AS full_payload) AS p
$$;

CREATE OR REPLACE FUNCTION statebus.flush() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
    dirty := ARRAY(SELECT d.user_id FROM pg_temp.statebus_dirty d ORDER BY d.user_id);
    DELETE FROM pg_temp.statebus_dirty;
    IF cardinality(dirty) = 0 THEN
        RETURN NULL;
    END IF;

    INSERT INTO statebus.versions (user_id) SELECT unnest(dirty) ON CONFLICT DO NOTHING;
    -- Sorted, so two transactions with overlapping users cannot deadlock here.
    PERFORM 1 FROM statebus.versions v WHERE v.user_id = ANY (dirty) ORDER BY v.user_id FOR UPDATE;

    SELECT s.value::int INTO inline_limit FROM statebus.settings s WHERE s.name = 'notify_inline_limit';

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
    SELECT count(pg_notify('statebus', statebus.notification_payload(
                c.user_id, c.version, c.state, coalesce(inline_limit, 7900))))
    INTO notified
    FROM changed c;
    RETURN NULL;
END $$;
