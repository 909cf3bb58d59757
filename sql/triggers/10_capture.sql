-- Capture: which users did this transaction touch?
--
-- Statement-level triggers with transition tables put the affected user ids into a
-- session-local temp table, so a 100,000-row UPDATE costs one INSERT ... SELECT, and
-- concurrent writers never contend on a shared scratch table. The first capture of a
-- transaction also inserts one row into a second temp table whose deferred constraint
-- trigger runs statebus.flush() once, at commit (sql/triggers/30_flush.sql).

-- Creates the session's two temp tables and the commit trigger, once per session.
CREATE OR REPLACE FUNCTION statebus.begin_capture() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A transaction-local flag: reset at commit, rollback and rollback to savepoint,
    -- exactly when the commit row it guards disappears too.
    IF current_setting('statebus.capturing', true) = 'on' THEN
        RETURN;
    END IF;
    IF to_regclass('pg_temp.statebus_dirty') IS NULL THEN
        CREATE TEMP TABLE statebus_dirty (user_id text PRIMARY KEY) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE statebus_commit (at_commit boolean) ON COMMIT DELETE ROWS;
        CREATE CONSTRAINT TRIGGER statebus_flush AFTER INSERT ON pg_temp.statebus_commit
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION statebus.flush();
    END IF;
    INSERT INTO pg_temp.statebus_commit VALUES (true);
    PERFORM set_config('statebus.capturing', 'on', true);
END $$;

-- Statement trigger on a tracked table. TG_ARGV[0] is the user column.
CREATE OR REPLACE FUNCTION statebus.capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    col text := TG_ARGV[0];
BEGIN
    PERFORM statebus.begin_capture();
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO pg_temp.statebus_dirty SELECT DISTINCT %1$I::text FROM new_rows
                        WHERE %1$I IS NOT NULL ON CONFLICT DO NOTHING', col);
    ELSIF TG_OP = 'UPDATE' THEN
        -- Both sides: a row moved from one user to another changes both states.
        EXECUTE format('INSERT INTO pg_temp.statebus_dirty
                        SELECT %1$I::text FROM new_rows WHERE %1$I IS NOT NULL
                        UNION SELECT %1$I::text FROM old_rows WHERE %1$I IS NOT NULL
                        ON CONFLICT DO NOTHING', col);
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('INSERT INTO pg_temp.statebus_dirty SELECT DISTINCT %1$I::text FROM old_rows
                        WHERE %1$I IS NOT NULL ON CONFLICT DO NOTHING', col);
    ELSIF TG_OP = 'TRUNCATE' THEN
        -- BEFORE TRUNCATE: the rows are still there to be read.
        EXECUTE format('INSERT INTO pg_temp.statebus_dirty SELECT DISTINCT %1$I::text FROM %2$s
                        WHERE %1$I IS NOT NULL ON CONFLICT DO NOTHING', col, TG_RELID::regclass);
    END IF;
    RETURN NULL;
END $$;

-- Marks the users with rows in a table (track/untrack change their documents).
CREATE OR REPLACE FUNCTION statebus.mark_table(tbl regclass, user_column name) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM statebus.begin_capture();
    EXECUTE format('INSERT INTO pg_temp.statebus_dirty SELECT DISTINCT %1$I::text FROM %2$s
                    WHERE %1$I IS NOT NULL ON CONFLICT DO NOTHING', user_column, tbl);
END $$;

-- Installs the four statement triggers on a table. Transition tables need one trigger
-- per event, hence INSERT, UPDATE and DELETE apart.
CREATE OR REPLACE FUNCTION statebus.install_capture(tbl regclass, user_column name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    EXECUTE format('CREATE OR REPLACE TRIGGER statebus_capture_insert AFTER INSERT ON %s
                    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
                    EXECUTE FUNCTION statebus.capture(%L)', tbl, user_column);
    EXECUTE format('CREATE OR REPLACE TRIGGER statebus_capture_update AFTER UPDATE ON %s
                    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
                    EXECUTE FUNCTION statebus.capture(%L)', tbl, user_column);
    EXECUTE format('CREATE OR REPLACE TRIGGER statebus_capture_delete AFTER DELETE ON %s
                    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
                    EXECUTE FUNCTION statebus.capture(%L)', tbl, user_column);
    EXECUTE format('CREATE OR REPLACE TRIGGER statebus_capture_truncate BEFORE TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION statebus.capture(%L)', tbl, user_column);
END $$;

CREATE OR REPLACE FUNCTION statebus.remove_capture(tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    event text;
BEGIN
    FOREACH event IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'statebus_capture_' || event, tbl);
    END LOOP;
END $$;

-- A plan's name, rank or limits are part of the state of every user on it.
CREATE OR REPLACE FUNCTION statebus.capture_plans() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM statebus.begin_capture();
    INSERT INTO pg_temp.statebus_dirty
    SELECT s.user_id FROM public.user_subscriptions s
    WHERE s.plan IN (SELECT code FROM (SELECT * FROM new_rows EXCEPT SELECT * FROM old_rows) AS changed)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
