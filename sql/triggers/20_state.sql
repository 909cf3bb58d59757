-- State assembly: the contract's state document for many users in one set-based query.
--
-- Called by statebus.envelopes() (sql/triggers/30_envelopes.sql) with the users a
-- reader wants: a re-sync of 15,000 watched users is one execution of these joins, not
-- 15,000 function calls. The functions are plain SQL with no SET clause so the planner
-- inlines them into the caller's cached plan (a non-inlined SQL function is planned
-- again on every call: ~1.5 ms). Callers render timestamps in UTC (SET TimeZone), so a
-- session's TimeZone never changes a document.

CREATE OR REPLACE FUNCTION statebus.core_states(users text[])
RETURNS TABLE (user_id text, state jsonb)
LANGUAGE sql STABLE AS $$
    SELECT u.id,
           CASE WHEN us.id IS NULL AND s.user_id IS NULL AND b.user_id IS NULL
                     AND sd.user_id IS NULL AND ug.usage IS NULL THEN NULL
           ELSE jsonb_build_object(
               'plan', CASE WHEN p.code IS NOT NULL THEN jsonb_build_object(
                   'code', p.code, 'name', p.name, 'rank', p.rank, 'limits', p.limits) END,
               'subscription', CASE WHEN s.user_id IS NOT NULL THEN jsonb_build_object(
                   'status', s.status,
                   'current_period_end', s.current_period_end,
                   'cancel_at_period_end', s.cancel_at_period_end,
                   'cancel_at', s.cancel_at) END,
               -- Raw Stripe ids stay out of documents that reach browsers.
               'billing', CASE WHEN b.user_id IS NOT NULL THEN jsonb_build_object(
                   'has_stripe_customer', b.stripe_customer_id IS NOT NULL) END,
               'usage', coalesce(ug.usage, '{}'::jsonb),
               'system', CASE WHEN sd.user_id IS NOT NULL THEN jsonb_build_object(
                   'onboarding_completed', sd.onboarding_completed) END)
           END
    FROM unnest(users) AS u (id)
    LEFT JOIN public.users us ON us.id = u.id
    LEFT JOIN public.user_subscriptions s ON s.user_id = u.id
    LEFT JOIN public.plans p ON p.code = s.plan
    LEFT JOIN public.user_billing b ON b.user_id = u.id
    LEFT JOIN public.user_system_data sd ON sd.user_id = u.id
    -- LATERAL: each user's usage rows by index. A grouped subquery joined on user_id
    -- was planned (generically, for an unknown number of users) as a nested loop over
    -- every group: 1,000 users compared 500,000 pairs, 9 of every 10 ms of a batch.
    LEFT JOIN LATERAL (
        SELECT jsonb_object_agg(g.metric, jsonb_build_object(
                   'used', g.used, 'period_start', g.period_start)) AS usage
        FROM public.user_usage g
        WHERE g.user_id = u.id
    ) ug ON true
$$;

-- One user's keys from tracked tables, joined LATERAL per user by build_states():
-- joining a set of users to a set of per-user rows was planned (generically, for an
-- unknown number of users) as a nested loop comparing every pair, 500,000 comparisons
-- for a batch of 1,000. Placeholder until rebuild_extra_states() generates the real one.
DO $$
BEGIN
    IF to_regprocedure('statebus.extra_state(text)') IS NULL THEN
        CREATE FUNCTION statebus.extra_state(user_id text)
        RETURNS TABLE (state jsonb)
        LANGUAGE sql STABLE AS 'SELECT NULL::jsonb WHERE false';
    END IF;
END $$;
DROP FUNCTION IF EXISTS statebus.extra_states(text[]);  -- the set-at-a-time predecessor

-- Regenerates statebus.extra_state() from statebus.tracked: one LEFT JOIN per table.
-- A tracked key appears only for users with rows in that table, so tracking a table
-- changes the documents of exactly those users (and track() re-versions them).
CREATE OR REPLACE FUNCTION statebus.rebuild_extra_states() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    t record;
    i int := 0;
    joins text := '';
    parts text[] := ARRAY[]::text[];
    present text[] := ARRAY[]::text[];
    body text;
BEGIN
    FOR t IN SELECT * FROM statebus.tracked ORDER BY state_key LOOP
        i := i + 1;
        joins := joins || format(E'\n    LEFT JOIN LATERAL (%s) t%s ON true',
                                 statebus.tracked_value_sql(t.table_name, t.user_column, t.row_key), i);
        parts := parts || format('CASE WHEN t%s.value IS NOT NULL THEN jsonb_build_object(%L, t%s.value) ELSE %L::jsonb END',
                                 i, t.state_key, i, '{}');
        present := present || format('t%s.value IS NOT NULL', i);
    END LOOP;
    IF i = 0 THEN
        body := 'SELECT NULL::jsonb WHERE false';
    ELSE
        body := format(E'SELECT %s\n    FROM (VALUES ($1)) AS u (id)%s\n    WHERE %s',
                       array_to_string(parts, ' || '), joins, array_to_string(present, ' OR '));
    END IF;
    EXECUTE format(E'CREATE OR REPLACE FUNCTION statebus.extra_state(user_id text)\n'
                   'RETURNS TABLE (state jsonb)\n'
                   'LANGUAGE sql STABLE AS %L', body);
END $$;

-- The SQL that reads one tracked table's value for the user u.id: the row itself when
-- the user column is unique, an object keyed by row_key when given, else an array in
-- key order. NULL (or no row) when the user has no rows there. A text user column is
-- compared as it is, so its index serves the lookup; any other type is compared as
-- text, because a user id need not be valid input for it (a uuid column, say).
CREATE OR REPLACE FUNCTION statebus.tracked_value_sql(tbl regclass, user_column name, row_key name)
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    unique_user boolean;
    order_by text;
    user_match text;
BEGIN
    SELECT EXISTS (
        SELECT 1 FROM pg_index ix
        WHERE ix.indrelid = tbl AND ix.indisunique AND ix.indnkeyatts = 1
          AND ix.indkey[0] = (SELECT attnum FROM pg_attribute
                              WHERE attrelid = tbl AND attname = user_column)
    ) INTO unique_user;
    SELECT CASE WHEN a.atttypid IN ('text'::regtype, 'varchar'::regtype)
                THEN format('r.%I = u.id', user_column)
                ELSE format('r.%I::text = u.id', user_column) END
    INTO user_match
    FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = user_column;
    IF row_key IS NOT NULL THEN
        RETURN format('SELECT jsonb_object_agg(r.%1$I::text, to_jsonb(r) - %2$L - %3$L) AS value
                       FROM %4$s r WHERE %5$s',
                      row_key, user_column::text, row_key::text, tbl, user_match);
    ELSIF unique_user THEN
        RETURN format('SELECT to_jsonb(r) - %1$L AS value FROM %2$s r WHERE %3$s',
                      user_column::text, tbl, user_match);
    END IF;
    -- Array order: the primary key's columns, else the whole row as text (stable).
    SELECT string_agg(format('r.%I', a.attname), ', ' ORDER BY k.ord)
    INTO order_by
    FROM pg_index ix
    CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k (attnum, ord)
    JOIN pg_attribute a ON a.attrelid = tbl AND a.attnum = k.attnum
    WHERE ix.indrelid = tbl AND ix.indisprimary;
    RETURN format('SELECT jsonb_agg(to_jsonb(r) - %1$L ORDER BY %2$s) AS value
                   FROM %3$s r WHERE %4$s',
                  user_column::text, coalesce(order_by, 'r::text'), tbl, user_match);
END $$;

-- The document for each given user: core keys, then one key per tracked table that
-- has rows for the user. NULL when the user has no row anywhere.
CREATE OR REPLACE FUNCTION statebus.build_states(users text[])
RETURNS TABLE (user_id text, state jsonb)
LANGUAGE sql STABLE AS $$
    SELECT c.user_id,
           CASE WHEN c.state IS NULL AND e.state IS NULL THEN NULL
                ELSE coalesce(c.state, jsonb_build_object(
                         'plan', NULL, 'subscription', NULL, 'billing', NULL,
                         'usage', '{}'::jsonb, 'system', NULL))
                     || coalesce(e.state, '{}'::jsonb)
           END
    FROM statebus.core_states(users) c
    LEFT JOIN LATERAL statebus.extra_state(c.user_id) e ON true
$$;
