-- Reading envelopes: the one call that turns user ids into current (version, document).
--
--   SELECT * FROM statebus.envelopes(ARRAY['user_2z...', 'user_9q...']);
--
-- The version row and the tables are read in one statement, so both come from the same
-- snapshot: the document is exactly the state as of the version's commit (or of a newer
-- commit, with its newer version). A user with no version row is at version 0 with a
-- NULL document. SECURITY INVOKER on purpose: whoever reads needs SELECT on the tables,
-- so reading documents follows table privileges.
CREATE OR REPLACE FUNCTION statebus.envelopes(users text[])
RETURNS TABLE (user_id text, version bigint, committed_at text, source text, state jsonb)
LANGUAGE plpgsql SET search_path = pg_catalog SET TimeZone = 'UTC'
    SET plan_cache_mode = 'force_generic_plan' AS $$
BEGIN
    -- A generic plan (cached per session, index lookups) serves the users of a
    -- notification and the listener's batches of up to 1,000: planning the joins would
    -- cost more than running them, and a custom plan for 1,000 of 100,000 users picks
    -- hash joins over whole tables (measured: 15 such batches took 3 s, index lookups
    -- a tenth of that). Only a caller asking for more gets a custom plan.
    -- The SET clause restores the mode on exit.
    IF cardinality(users) > 5000 THEN
        PERFORM set_config('plan_cache_mode', 'force_custom_plan', true);
    END IF;
    RETURN QUERY
    SELECT b.user_id, coalesce(v.version, 0),
           to_char(v.committed_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), v.source, b.state
    FROM statebus.build_states(users) b
    LEFT JOIN statebus.versions v ON v.user_id = b.user_id;
END $$;

-- Opt-in (settings.history_documents = 'on', called by statebus.bump()): the history
-- row of each user's current version holds the document as of this statement. Every later statement of the same
-- transaction that touches the user writes it again, so at commit it is the committed state.
CREATE OR REPLACE FUNCTION statebus.keep_documents(users text[]) RETURNS void
-- plpgsql with a generic plan, cached per session: as a SQL function (not inlinable
-- with its SET clause) the joins were planned on every call, ~6x the cost of a commit.
LANGUAGE plpgsql SET search_path = pg_catalog SET TimeZone = 'UTC'
    SET plan_cache_mode = 'force_generic_plan' AS $$
BEGIN
    UPDATE statebus.history h SET state = b.state
    FROM statebus.build_states(users) b
    JOIN statebus.versions v ON v.user_id = b.user_id
    WHERE h.user_id = b.user_id AND h.version = v.version;
END $$;
