-- statebus.track(): any table with a user column joins the state with one call.
--
--   SELECT statebus.track('my_table', user_column => 'user_id', key => 'my_key');
--
-- key is the document key (default: the table's name); row_key, when given, turns a
-- many-rows-per-user table into an object keyed by that column.

CREATE OR REPLACE FUNCTION statebus.track(
    table_name regclass, user_column name DEFAULT 'user_id', key text DEFAULT NULL,
    row_key name DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    doc_key text := coalesce(key, (SELECT c.relname FROM pg_class c WHERE c.oid = table_name));
    table_schema name := (SELECT n.nspname FROM pg_class c
                          JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = table_name);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = table_name
                   AND attname = user_column AND attnum > 0 AND NOT attisdropped) THEN
        RAISE EXCEPTION 'statebus.track: table % has no column %', table_name, user_column
            USING ERRCODE = 'undefined_column';
    END IF;
    IF row_key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = table_name
                   AND attname = row_key AND attnum > 0 AND NOT attisdropped) THEN
        RAISE EXCEPTION 'statebus.track: table % has no column %', table_name, row_key
            USING ERRCODE = 'undefined_column';
    END IF;
    -- statebus's own tables would capture their own bookkeeping (each version bump
    -- capturing another); system catalogs cannot carry triggers.
    IF table_schema IN ('statebus', 'information_schema') OR table_schema LIKE 'pg\_%' THEN
        RAISE EXCEPTION 'statebus.track: % is a system or statebus table', table_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = table_name) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'statebus.track: % is not a table', table_name
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF doc_key IN ('plan', 'subscription', 'billing', 'usage', 'system')
       OR table_name IN ('public.plans'::regclass, 'public.users'::regclass,
                         'public.user_subscriptions'::regclass, 'public.user_billing'::regclass,
                         'public.user_usage'::regclass, 'public.user_system_data'::regclass) THEN
        RAISE EXCEPTION 'statebus.track: % is part of the core state already', doc_key
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF doc_key !~ '^[A-Za-z_][A-Za-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'statebus.track: key % must be an identifier', doc_key
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM statebus.tracked t WHERE t.state_key = doc_key
               AND t.table_name <> track.table_name) THEN
        RAISE EXCEPTION 'statebus.track: key % is taken by another table', doc_key
            USING ERRCODE = 'unique_violation';
    END IF;

    INSERT INTO statebus.tracked (table_name, user_column, state_key, row_key)
    VALUES (table_name, user_column, doc_key, row_key)
    ON CONFLICT ON CONSTRAINT tracked_pkey DO UPDATE
        SET user_column = excluded.user_column, state_key = excluded.state_key,
            row_key = excluded.row_key;
    PERFORM statebus.install_capture(table_name, user_column);
    PERFORM statebus.rebuild_extra_states();
    -- Users with rows get a new version at commit, with the new key in it (re-tracking
    -- under another key or shape changes their documents too).
    PERFORM statebus.bump(statebus.users_of_table(table_name, user_column));
END $$;

-- The users with rows in a tracked table. Not SECURITY DEFINER: it runs with the rights
-- of whoever calls track() or untrack(), who must be able to read the table anyway.
CREATE OR REPLACE FUNCTION statebus.users_of_table(tbl regclass, user_column name) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    users text[];
BEGIN
    EXECUTE format('SELECT array_agg(DISTINCT t.%1$I::text) FROM %2$s t WHERE t.%1$I IS NOT NULL',
                   user_column, tbl) INTO users;
    RETURN coalesce(users, ARRAY[]::text[]);
END $$;

CREATE OR REPLACE FUNCTION statebus.untrack(table_name regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    col name;
BEGIN
    DELETE FROM statebus.tracked t WHERE t.table_name = untrack.table_name RETURNING t.user_column INTO col;
    IF col IS NULL THEN
        RAISE EXCEPTION 'statebus.untrack: % is not tracked', table_name
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM statebus.remove_capture(table_name);
    PERFORM statebus.rebuild_extra_states();
    PERFORM statebus.bump(statebus.users_of_table(table_name, col));
END $$;
