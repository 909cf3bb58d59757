-- The Stripe inbox, bounded and private (docs/stripe.md "Inbox retention", docs/security.md).
--
-- Processed events (applied or ignored) are deleted once older than the
-- `stripe_events_retention` setting (statebus.prune_stripe_events(), hourly); failed and
-- waiting ones are never deleted. Re-runnable as a whole: every statement is idempotent.

-- statebus.check_setting() (sql/triggers/60_history.sql) refuses names it does not know,
-- and the copy installed by an earlier release does not know this one yet.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
               WHERE tgrelid = 'statebus.settings'::regclass
                 AND tgname = 'statebus_check_setting') THEN
        ALTER TABLE statebus.settings DISABLE TRIGGER statebus_check_setting;
        INSERT INTO statebus.settings (name, value) VALUES ('stripe_events_retention', '30 days')
        ON CONFLICT (name) DO NOTHING;
        ALTER TABLE statebus.settings ENABLE TRIGGER statebus_check_setting;
    ELSE
        INSERT INTO statebus.settings (name, value) VALUES ('stripe_events_retention', '30 days')
        ON CONFLICT (name) DO NOTHING;
    END IF;
END $$;

-- What the prune scans: processed events, oldest first.
CREATE INDEX IF NOT EXISTS stripe_events_processed_idx ON statebus.stripe_events (applied_at)
    WHERE status IN ('applied', 'ignored');

-- Stored events hold Stripe's objects (customer emails, addresses, ids): only the role
-- that owns them reads them. An earlier sql/roles_example.sql granted SELECT to the
-- monitor role; that grant, and any other role's, is taken back here. The monitor reads
-- statebus.stripe_event_counts instead (sql/triggers/70_stripe_inbox.sql).
DO $$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN
        SELECT DISTINCT a.grantee::regrole::text
        FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'statebus.stripe_events'::regclass
          AND a.grantee <> c.relowner AND a.grantee <> 0
        UNION
        SELECT DISTINCT a.grantee::regrole::text
        FROM pg_catalog.pg_attribute t, aclexplode(t.attacl) a
        WHERE t.attrelid = 'statebus.stripe_events'::regclass AND a.grantee <> 0
          AND a.grantee <> (SELECT relowner FROM pg_catalog.pg_class
                            WHERE oid = 'statebus.stripe_events'::regclass)
    LOOP
        EXECUTE format('REVOKE ALL ON statebus.stripe_events FROM %s', grantee);
    END LOOP;
END $$;
