-- Lean capture: the writer's commit bumps a version and says so; documents are
-- assembled by readers (statebus.envelopes), only for users somebody watches.
--
-- Before: a deferred trigger assembled, compared and stored every touched user's whole
-- document twice (versions.state, history.state) inside the writer's commit, through two
-- scratch tables. Now a statement trigger per table upserts statebus.versions once per
-- transaction per user and NOTIFYs (user_id, version) pairs. This migration removes the
-- old machinery; sql/triggers/ installs the new one.

-- Old capture triggers (core and tracked tables) point at functions dropped below; the
-- routines re-install them under the same names.
DO $$
DECLARE
    t regclass;
    event text;
BEGIN
    FOR t IN SELECT unnest(ARRAY['public.users', 'public.user_subscriptions', 'public.user_billing',
                                 'public.user_usage', 'public.user_system_data']::regclass[])
             UNION SELECT table_name FROM statebus.tracked LOOP
        FOREACH event IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'statebus_capture_' || event, t);
        END LOOP;
    END LOOP;
END $$;
DROP TRIGGER IF EXISTS statebus_capture_plans ON public.plans;

DROP TABLE statebus.commit_hook;  -- and its deferred statebus_flush trigger
DROP TABLE statebus.dirty;
DROP FUNCTION IF EXISTS statebus.flush();
DROP FUNCTION IF EXISTS statebus.queue_flush();
DROP FUNCTION IF EXISTS statebus.capture();
DROP FUNCTION IF EXISTS statebus.capture_plans();
DROP FUNCTION IF EXISTS statebus.mark_table(regclass, name);
DROP FUNCTION IF EXISTS statebus.write_source();

-- The document is no longer stored per version: readers assemble it. txid tells the
-- capture whether this transaction already counted its version for the user.
-- fillfactor leaves room on each page so version bumps are HOT updates (no index
-- column changes), which keeps the writer's cost to one heap page.
ALTER TABLE statebus.versions
    DROP COLUMN state,
    ADD COLUMN txid xid8;
ALTER TABLE statebus.versions SET (fillfactor = 70);

-- source is what clients see (statebus's labels, app:..., or sql); actor keeps the
-- role and application for operators, and never leaves the database.
ALTER TABLE statebus.history ADD COLUMN actor text;
-- Every captured commit inserts here; a BRIN index on the (nearly monotonic) commit
-- time costs the writer almost nothing and is all the hourly prune needs.
DROP INDEX statebus.history_committed_at_idx;
CREATE INDEX history_committed_at_brin ON statebus.history USING brin (committed_at);
UPDATE statebus.history SET actor = substr(source, 5), source = 'sql' WHERE source LIKE 'sql:%';
UPDATE statebus.versions SET source = 'sql' WHERE source LIKE 'sql:%';

DELETE FROM statebus.settings WHERE name = 'notify_inline_limit';
INSERT INTO statebus.settings (name, value) VALUES ('history_documents', 'off')
ON CONFLICT (name) DO NOTHING;
