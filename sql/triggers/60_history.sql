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

-- statebus.settings is written by hand (UPDATE ... SET value = ...): a typo must fail
-- there, with a message that says what is allowed, not later inside a writer's commit
-- or silently as "off". The capture reads the settings on every captured statement.
CREATE OR REPLACE FUNCTION statebus.check_setting() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    retention interval;
    rows_on boolean;
    documents_on boolean;
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.name IN ('history_retention', 'history_rows', 'history_documents',
                        'stripe_events_retention') THEN
            RAISE EXCEPTION 'statebus setting % cannot be deleted', OLD.name
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Set it back to its default instead (docs/configuration.md).';
        END IF;
        RETURN OLD;
    END IF;
    IF NEW.name IN ('history_retention', 'stripe_events_retention') THEN
        BEGIN
            retention := NEW.value::interval;
        EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow
                       OR interval_field_overflow THEN
            retention := NULL;
        END;
        IF retention IS NULL OR retention < interval '0' THEN
            RAISE EXCEPTION 'statebus setting % must be an interval of zero or more, such as ''30 days''', NEW.name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSIF NEW.name IN ('history_rows', 'history_documents') THEN
        IF NEW.value NOT IN ('on', 'off') THEN
            RAISE EXCEPTION 'statebus setting % must be on or off', NEW.name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        -- Documents are kept in history rows: both on, or documents off.
        SELECT h.rows_on, h.documents_on INTO rows_on, documents_on
        FROM statebus.history_switches() h;
        IF NEW.name = 'history_rows' THEN
            rows_on := NEW.value = 'on';
        ELSE
            documents_on := NEW.value = 'on';
        END IF;
        IF documents_on AND NOT rows_on THEN
            RAISE EXCEPTION 'statebus setting history_documents = on needs history_rows = on'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Documents are kept in history rows. Turn history_documents off first.';
        END IF;
    ELSE
        RAISE EXCEPTION 'unknown statebus setting %', NEW.name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known settings: history_retention, history_rows, history_documents,'
                         ' stripe_events_retention.';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE TRIGGER statebus_check_setting BEFORE INSERT OR UPDATE OR DELETE
    ON statebus.settings FOR EACH ROW EXECUTE FUNCTION statebus.check_setting();
