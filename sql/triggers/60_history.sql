-- History retention: versions older than the configured interval are pruned, except
-- each user's latest (which is also in statebus.versions and must stay readable).
CREATE OR REPLACE FUNCTION statebus.prune_history() RETURNS bigint
LANGUAGE sql AS $$
    WITH pruned AS (
        DELETE FROM statebus.history h
        WHERE h.committed_at < now() - (SELECT value::interval FROM statebus.settings
                                        WHERE name = 'history_retention')
          AND h.version < (SELECT v.version FROM statebus.versions v WHERE v.user_id = h.user_id)
        RETURNING 1
    )
    SELECT count(*) FROM pruned
$$;
