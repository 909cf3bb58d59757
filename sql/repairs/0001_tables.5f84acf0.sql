-- Repair for databases created by the first release, whose 0001_tables lacked the two
-- capture tables the next release added to it (statebus.dirty, statebus.commit_hook).
-- 0003_lean_capture drops both, so they are created only where it has not run yet; the
-- rest of that 0001 is the same as today's.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM statebus.schema_migrations WHERE version = 3) THEN
        CREATE UNLOGGED TABLE IF NOT EXISTS statebus.dirty (
            txid    xid8 NOT NULL,
            user_id text NOT NULL,
            PRIMARY KEY (txid, user_id)
        );
        CREATE UNLOGGED TABLE IF NOT EXISTS statebus.commit_hook (
            txid xid8 PRIMARY KEY
        );
    END IF;
END $$;
