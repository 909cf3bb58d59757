-- Capture: which users did this transaction touch?
--
-- Statement-level triggers with transition tables put the affected user ids into
-- statebus.dirty under the transaction's id, so a 100,000-row UPDATE costs one
-- INSERT ... SELECT. The first capture of a transaction also inserts one row into
-- statebus.commit_hook, whose deferred constraint trigger runs statebus.flush() once,
-- at commit (sql/triggers/30_flush.sql). The hook row goes in after the dirty rows:
-- under SET CONSTRAINTS ALL IMMEDIATE the flush fires as soon as it is inserted, and
-- must then find this statement's users already there. Both tables are unlogged: their rows never
-- outlive the transaction. (Session temp tables were measured too: an insert into one
-- cost ~0.7 ms against ~0.1 ms for an unlogged table, on every commit.)

CREATE OR REPLACE FUNCTION statebus.queue_flush() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    -- A transaction-local flag: reset at commit, rollback and rollback to savepoint,
    -- exactly when the commit_hook row it guards disappears too.
    IF current_setting('statebus.capturing', true) = 'on' THEN
        RETURN;
    END IF;
    -- Flag first: under immediate constraints the insert runs the flush, which clears it.
    PERFORM set_config('statebus.capturing', 'on', true);
    INSERT INTO statebus.commit_hook (txid) VALUES (pg_current_xact_id())
    ON CONFLICT DO NOTHING;
END $$;

-- Statement trigger on a tracked table. TG_ARGV[0] is the user column.
CREATE OR REPLACE FUNCTION statebus.capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    col text := TG_ARGV[0];
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO statebus.dirty (txid, user_id)
                        SELECT DISTINCT pg_current_xact_id(), %1$I::text FROM new_rows
                        WHERE %1$I IS NOT NULL ON CONFLICT DO NOTHING', col);
    ELSIF TG_OP = 'UPDATE' THEN
        -- Both sides: a row moved from one user to another changes both states.
        EXECUTE format('INSERT INTO statebus.dirty (txid, user_id)
                        SELECT pg_current_xact_id(), u FROM (
                            SELECT %1$I::text AS u FROM new_rows WHERE %1$I IS NOT NULL
                            UNION SELECT %1$I::text FROM old_rows WHERE %1$I IS NOT NULL) s
                        ON CONFLICT DO NOTHING', col);
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('INSERT INTO statebus.dirty (txid, user_id)
                        SELECT DISTINCT pg_current_xact_id(), %1$I::text FROM old_rows
                        WHERE %1$I IS NOT NULL ON CONFLICT DO NOTHING', col);
    ELSIF TG_OP = 'TRUNCATE' THEN
        -- BEFORE TRUNCATE: the rows are still there to be read.
        PERFORM statebus.mark_table(TG_RELID::regclass, col);
    END IF;
    PERFORM statebus.queue_flush();
    RETURN NULL;
END $$;

-- Marks the users with rows in a table (truncate, track and untrack change them all).
CREATE OR REPLACE FUNCTION statebus.mark_table(tbl regclass, user_column name) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    EXECUTE format('INSERT INTO statebus.dirty (txid, user_id)
                    SELECT DISTINCT pg_current_xact_id(), %1$I::text FROM %2$s
                    WHERE %1$I IS NOT NULL ON CONFLICT DO NOTHING', user_column, tbl);
    PERFORM statebus.queue_flush();
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO statebus.dirty (txid, user_id)
    SELECT pg_current_xact_id(), s.user_id FROM public.user_subscriptions s
    WHERE s.plan IN (SELECT code FROM (SELECT * FROM new_rows EXCEPT SELECT * FROM old_rows) AS changed)
    ON CONFLICT DO NOTHING;
    PERFORM statebus.queue_flush();
    RETURN NULL;
END $$;
