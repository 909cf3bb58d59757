-- Restore detection: called by every server process before it serves and after each
-- LISTEN reconnect (statebus/restore.py).
--
-- Compares the cluster (pg_control_system()), the database (its oid) and the WAL timeline
-- with what statebus.incarnation recorded. The first call records them. On a difference
-- (a dump restored into another cluster or database, a point-in-time recovery, a promoted
-- standby) every user's version jumps by `jump`, past anything a client could hold, and
-- the recorded transaction ids are forgotten (a new cluster reuses them, and capture
-- reads "same transaction" from them). Concurrent callers serialize on the row: one moves
-- the versions, the others then find the new values recorded.
CREATE OR REPLACE FUNCTION statebus.check_incarnation(jump bigint DEFAULT 1000000000)
RETURNS TABLE (restored boolean, users bigint, reason text)
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    live_system bigint := (SELECT system_identifier FROM pg_control_system());
    live_database oid := (SELECT oid FROM pg_database WHERE datname = current_database());
    -- The first 8 hex digits of the current WAL file's name are its timeline.
    live_timeline integer :=
        ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::integer;
    known statebus.incarnation;
    why text;
    moved bigint;
BEGIN
    SELECT * INTO known FROM statebus.incarnation FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO statebus.incarnation (system_identifier, database_oid, timeline)
        VALUES (live_system, live_database, live_timeline)
        ON CONFLICT (id) DO NOTHING;
        RETURN QUERY SELECT false, 0::bigint, NULL::text;
        RETURN;
    END IF;
    IF known.system_identifier <> live_system THEN
        why := 'the database now runs on another PostgreSQL cluster';
    ELSIF known.database_oid <> live_database THEN
        why := 'the database was restored or copied into a new database';
    ELSIF known.timeline <> live_timeline THEN
        why := format('the cluster moved from timeline %s to %s (a point-in-time recovery'
                      ' or a promoted standby)', known.timeline, live_timeline);
    ELSE
        RETURN QUERY SELECT false, 0::bigint, NULL::text;
        RETURN;
    END IF;
    UPDATE statebus.versions SET version = version + jump, txid = NULL;
    GET DIAGNOSTICS moved = ROW_COUNT;
    UPDATE statebus.incarnation
    SET system_identifier = live_system, database_oid = live_database,
        timeline = live_timeline, recorded_at = now();
    RETURN QUERY SELECT true, moved, why;
END $$;
