-- Capture: a committed transaction gives each user it touched one new version.
--
-- Everything here runs inside the writer's transaction, so it does as little as it can,
-- and holds nothing until it commits. A statement trigger per tracked table judges which
-- users' rows changed value and hands them to statebus.mark(), which only appends them
-- to a transaction-local set (the setting statebus.dirty); the transaction's first such
-- statement also inserts one row into statebus.commit_hook. That row's deferred
-- constraint trigger, statebus.flush(), runs once, at commit: statebus.bump() then
-- takes every collected user's version row in one sorted pass, counts one version per
-- transaction, keeps (version, committed_at, source) in statebus.history (unless the
-- history_rows setting is off) and NOTIFYs the (user_id, version) pairs. No document is
-- assembled here: readers do that with statebus.envelopes()
-- (sql/triggers/30_envelopes.sql), and only for users someone watches.
--
-- Why at commit: a version row stays locked from its UPDATE to the end of the
-- transaction. Bumped per statement, two transactions writing different rows of the
-- same users in different tables waited for each other for their whole length and
-- could deadlock; bumped at commit, in one order, they queue only for each other's
-- commit and never in a cycle (docs/architecture.md has the measurements).
--
-- Why statement triggers with transition tables: a 100,000-row UPDATE costs one
-- set-based step, not 100,000 calls. Why one generated function per table: static SQL
-- is planned once per session; EXECUTE format(...) would be planned on every statement.

-- The two history switches, with their defaults when a row is missing. One definition
-- for the capture (every captured statement) and the settings check. A set-returning
-- SQL function without SET clauses, so PostgreSQL inlines it into its caller's query.
CREATE OR REPLACE FUNCTION statebus.history_switches()
RETURNS TABLE (rows_on boolean, documents_on boolean)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(bool_and(s.value = 'on') FILTER (WHERE s.name = 'history_rows'), true),
           coalesce(bool_and(s.value = 'on') FILTER (WHERE s.name = 'history_documents'), false)
    FROM statebus.settings s WHERE s.name IN ('history_rows', 'history_documents')
$$;

-- The label a version shows to clients. statebus's own writers and the host app say who
-- they are with SET LOCAL statebus.source; anything else is 'sql'. Role names stay in
-- history.actor and never reach a client.
CREATE OR REPLACE FUNCTION statebus.bump(users text[]) RETURNS void
-- Neither SECURITY DEFINER nor SET search_path: its only callers (the capture
-- functions, track and untrack) already run as statebus's owner with search_path
-- pinned to pg_catalog. Skipping both saves a user switch and a GUC save/restore on
-- every captured statement. Nobody else may EXECUTE it (sql/triggers/90_privileges.sql).
LANGUAGE plpgsql AS $$
DECLARE
    src text := coalesce(nullif(current_setting('statebus.source', true), ''), 'sql');
    actor text;
    n bigint := coalesce(cardinality(users), 0);
    keep_rows boolean;
    keep_docs boolean;
    bumped_version bigint;
    bumped_users text[];
    bumped_versions bigint[];
    payload json;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    IF src <> 'sql' AND (length(src) > 64 OR src !~ '^[a-z][a-z0-9_]*(:[A-Za-z0-9_.:/-]+)?$') THEN
        src := 'sql';  -- a malformed label is not shown to clients
    END IF;
    actor := session_user || coalesce(
        '/' || nullif(current_setting('application_name', true), ''), '');
    SELECT h.rows_on, h.documents_on INTO keep_rows, keep_docs FROM statebus.history_switches() h;

    -- Existing version rows are bumped by a plain UPDATE: a HOT update of one heap
    -- page, without the index probe, row lock record and speculative insertion of
    -- INSERT ... ON CONFLICT. A transaction that already bumped a user (txid matches,
    -- written since it began: after a restore into a fresh cluster transaction ids
    -- start again and a stored one may come round) does not count again: one
    -- transaction, one version. Bump and history row are one statement.
    IF n = 1 THEN
        -- The common case, one user per statement, without the set machinery below.
        -- Two statements on purpose: one UPDATE with `user_id = ANY (users)` serving
        -- both cases roughly doubled a captured single-row UPDATE (measured 165-250 ->
        -- 375-440 us per statement in a loop of 5,000 single-row UPDATEs).
        WITH bumped AS (
            UPDATE statebus.versions v
            SET version = v.version + 1, txid = pg_current_xact_id(),
                committed_at = clock_timestamp(), source = src
            WHERE v.user_id = users[1]
              AND (v.txid IS DISTINCT FROM pg_current_xact_id() OR v.committed_at < now())
            RETURNING v.user_id, v.version, v.committed_at
        ), kept AS (
            INSERT INTO statebus.history (user_id, version, committed_at, source, actor)
            SELECT b.user_id, b.version, b.committed_at, src, actor FROM bumped b
            WHERE keep_rows
        )
        SELECT b.version INTO bumped_version FROM bumped b;
        IF bumped_version IS NOT NULL THEN
            PERFORM pg_notify('statebus', json_build_array(
                json_build_array(users[1], bumped_version))::text);
        ELSE
            -- No row bumped: the user's first write, or this transaction's second.
            PERFORM statebus.bump_first(users, src, actor, keep_rows);
        END IF;
    ELSE
        -- Many users (an admin's UPDATE, or a transaction's users at commit): one
        -- UPDATE joined to the array. Its rows are locked first, in byte order of the
        -- user id (LockRows runs above the sort), whatever join the planner picks:
        -- two transactions committing overlapping users take them in the same order,
        -- so their commits can queue but never wait for each other in a cycle.
        WITH bumped AS (
            UPDATE statebus.versions v
            SET version = v.version + 1, txid = pg_current_xact_id(),
                committed_at = clock_timestamp(), source = src
            FROM (SELECT x.user_id FROM statebus.versions x WHERE x.user_id = ANY (users)
                  ORDER BY x.user_id COLLATE "C" FOR UPDATE) AS l
            WHERE v.user_id = l.user_id
              AND (v.txid IS DISTINCT FROM pg_current_xact_id() OR v.committed_at < now())
            RETURNING v.user_id, v.version, v.committed_at
        ), kept AS (
            INSERT INTO statebus.history (user_id, version, committed_at, source, actor)
            SELECT b.user_id, b.version, b.committed_at, src, actor FROM bumped b
            WHERE keep_rows
        )
        SELECT array_agg(b.user_id), array_agg(b.version),
               -- A few users (a transaction's commit): their one notification is
               -- built here, without announce()'s chunking query.
               json_agg(json_build_array(b.user_id, b.version)) FILTER (WHERE n <= 16)
        INTO bumped_users, bumped_versions, payload FROM bumped b;
        IF payload IS NOT NULL AND octet_length(payload::text) < 7900 THEN
            PERFORM pg_notify('statebus', payload::text);
        ELSE
            PERFORM statebus.announce(bumped_users, bumped_versions);
        END IF;
        -- Only when some users were not bumped (first writes, or users this
        -- transaction already bumped) is the array probed again, user by user.
        IF coalesce(cardinality(bumped_users), 0) < n THEN
            PERFORM statebus.bump_first(users, src, actor, keep_rows);
        END IF;
    END IF;

    IF keep_rows AND keep_docs THEN
        PERFORM statebus.keep_documents(users);
    END IF;
END $$;

-- Adds users to the transaction's dirty set. The set is a transaction-local setting
-- holding a text[] literal: it costs no row, is rolled back with a savepoint exactly
-- like the rows that put users in it, and quotes any user id. Appending splices the
-- literals (drop the old '}' and the new '{'), so a transaction of 10,000 statements
-- pays a string copy per statement, never a parse; the set is parsed once, at commit.
-- The first users of a transaction (or of the first statement after a flush, under
-- SET CONSTRAINTS ... IMMEDIATE) also insert the row whose deferred trigger flushes
-- them: exactly one flush is queued while the set is non-empty, and a savepoint
-- rollback discards the queued flush together with the set it would have read.
CREATE OR REPLACE FUNCTION statebus.mark(users text[]) RETURNS void
-- Like bump(): only statebus's own SECURITY DEFINER functions call it.
LANGUAGE plpgsql AS $$
DECLARE
    dirty text;
BEGIN
    IF coalesce(cardinality(users), 0) = 0 THEN
        RETURN;
    END IF;
    dirty := current_setting('statebus.dirty', true);
    IF coalesce(dirty, '') = '' THEN
        PERFORM set_config('statebus.dirty', users::text, true);
        -- ON CONFLICT: if the set was emptied by hand, the flush already queued serves.
        INSERT INTO statebus.commit_hook (txid) VALUES (pg_current_xact_id())
        ON CONFLICT (txid) DO NOTHING;
    ELSE
        PERFORM set_config('statebus.dirty',
                           left(dirty, -1) || ',' || substr(users::text, 2), true);
    END IF;
END $$;

-- The commit step: the deferred constraint trigger of statebus.commit_hook. It runs as
-- the writer's role at commit (or at SET CONSTRAINTS ... IMMEDIATE), hence SECURITY
-- DEFINER. It empties the set before bumping, so a later statement of the same
-- transaction starts a new one (the bump itself never counts a transaction twice).
--
-- Generic plans for everything it runs (bump() included): the statements take the user
-- array as a parameter, and PostgreSQL's plan cache, seeing a custom plan for a 2-user
-- array estimated cheaper than the generic one, planned them again on every commit
-- (measured: 830 against 180 us per bump of two users).
CREATE OR REPLACE FUNCTION statebus.flush() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    dirty text := current_setting('statebus.dirty', true);
    users text[];
BEGIN
    DELETE FROM statebus.commit_hook h WHERE h.txid = NEW.txid;
    IF coalesce(dirty, '') = '' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('statebus.dirty', '', true);
    users := dirty::text[];
    -- Each statement added its users: drop repeats (two users without a query).
    IF cardinality(users) > 2 THEN
        users := ARRAY(SELECT DISTINCT u FROM unnest(users) AS u);
    ELSIF cardinality(users) = 2 AND users[1] = users[2] THEN
        users := users[1:1];
    END IF;
    PERFORM statebus.bump(users);
    RETURN NULL;
END $$;

-- Users of `users` without a version row get version 1 (history row and notification
-- included). The upsert settles a race with a concurrent first write of the same user:
-- whichever commits second bumps the row the first one inserted.
DROP FUNCTION IF EXISTS statebus.bump_first(text[], text, text);
CREATE OR REPLACE FUNCTION statebus.bump_first(
    users text[], src text, actor text, keep_rows boolean
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bumped_users text[];
    bumped_versions bigint[];
BEGIN
    -- "C" collation wherever rows are sorted: byte order is all that is needed.
    WITH bumped AS (
        INSERT INTO statebus.versions AS v (user_id, version, txid, committed_at, source)
        SELECT DISTINCT u COLLATE "C", 1, pg_current_xact_id(), clock_timestamp(), src
        FROM unnest(users) AS u
        WHERE NOT EXISTS (SELECT 1 FROM statebus.versions x WHERE x.user_id = u)
        ORDER BY 1
        ON CONFLICT (user_id) DO UPDATE
            SET version = v.version + 1, txid = excluded.txid,
                committed_at = excluded.committed_at, source = excluded.source
            WHERE v.txid IS DISTINCT FROM excluded.txid OR v.committed_at < now()
        RETURNING v.user_id, v.version, v.committed_at
    ), kept AS (
        INSERT INTO statebus.history (user_id, version, committed_at, source, actor)
        SELECT b.user_id, b.version, b.committed_at, src, actor FROM bumped b
        WHERE keep_rows
    )
    SELECT array_agg(b.user_id), array_agg(b.version)
    INTO bumped_users, bumped_versions FROM bumped b;
    PERFORM statebus.announce(bumped_users, bumped_versions);
END $$;

-- NOTIFYs (user_id, version) pairs on channel statebus. Payloads must stay under
-- NOTIFY's 8000 bytes: pairs are cut into chunks of about 7,000 bytes by their exact
-- JSON length, summed in the order they come (no sort: for 100,000 pairs a sort by
-- user spilled to disk and cost more than the notifications themselves).
CREATE OR REPLACE FUNCTION statebus.announce(users text[], versions bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF users IS NULL THEN
        RETURN;
    END IF;
    PERFORM pg_notify('statebus', json_agg(json_build_array(p.user_id, p.version))::text)
    FROM (SELECT q.user_id, q.version,
                 sum(octet_length(to_json(q.user_id)::text) + 24)
                     OVER (ROWS UNBOUNDED PRECEDING) / 7000 AS chunk
          FROM unnest(users, versions) AS q (user_id, version)) p
    GROUP BY p.chunk;
END $$;

-- The generated function's name: stable for the table's lifetime, whatever it is renamed to.
CREATE OR REPLACE FUNCTION statebus.capture_function_name(tbl regclass) RETURNS name
LANGUAGE sql IMMUTABLE AS $$ SELECT ('capture_' || tbl::oid)::name $$;

-- Generates the statement trigger function of one tracked table. The user column is
-- spliced in as an identifier and the table as a regclass: nothing the caller passes
-- becomes SQL text. An UPDATE counts only users whose rows changed value (a write that
-- changes nothing gives no version); a row moved between users counts for both.
--
-- Old and new rows are paired by primary key and compared by binary image (*=, which
-- works for every column type, json included): for 100,000 rows a hash join, ~10x
-- cheaper than comparing rows as text. How the users are read off the pairs depends on
-- the key: when the user column is part of it, a row that changes user changes key, so
-- each unpaired or changed row names its own user (coalesce), and when the key is the
-- user column alone no user can come twice (no DISTINCT). Otherwise both sides' users
-- are taken. A table without a primary key falls back to the text comparison.
CREATE OR REPLACE FUNCTION statebus.capture_function_sql(tbl regclass, user_column name)
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    key_match text;
    key_columns name[];
    changed text;
    changed_users text;
BEGIN
    SELECT string_agg(format('o.%1$I = n.%1$I', a.attname), ' AND ' ORDER BY k.ord),
           array_agg(a.attname ORDER BY k.ord)
    INTO key_match, key_columns
    FROM pg_index ix
    CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k (attnum, ord)
    JOIN pg_attribute a ON a.attrelid = tbl AND a.attnum = k.attnum
    WHERE ix.indrelid = tbl AND ix.indisprimary;
    IF key_match IS NOT NULL THEN
        changed := format('n.%1$I IS NULL OR o.%1$I IS NULL OR NOT n *= o', key_columns[1]);
    END IF;

    IF key_match IS NULL THEN
        changed_users := format($q$
            SELECT DISTINCT c.u FROM (
                (SELECT n.%1$I::text AS u, n::text AS r FROM new_rows n
                 EXCEPT ALL SELECT o.%1$I::text, o::text FROM old_rows o)
                UNION ALL
                (SELECT o.%1$I::text, o::text FROM old_rows o
                 EXCEPT ALL SELECT n.%1$I::text, n::text FROM new_rows n)) c
            WHERE c.u IS NOT NULL$q$, user_column);
    ELSIF key_columns = ARRAY[user_column] THEN
        changed_users := format($q$
            SELECT coalesce(n.%1$I, o.%1$I)::text
            FROM new_rows n FULL JOIN old_rows o ON %2$s
            WHERE %3$s$q$, user_column, key_match, changed);
    ELSIF user_column = ANY (key_columns) THEN
        changed_users := format($q$
            SELECT DISTINCT coalesce(n.%1$I, o.%1$I)::text
            FROM new_rows n FULL JOIN old_rows o ON %2$s
            WHERE %3$s$q$, user_column, key_match, changed);
    ELSE
        changed_users := format($q$
            SELECT DISTINCT v.u FROM new_rows n FULL JOIN old_rows o ON %1$s
            CROSS JOIN LATERAL (VALUES (n.%2$I::text), (o.%2$I::text)) AS v (u)
            WHERE v.u IS NOT NULL AND (%3$s)$q$,
            key_match, user_column, changed);
    END IF;

    RETURN format($f$
CREATE OR REPLACE FUNCTION statebus.%1$I() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        PERFORM statebus.mark(ARRAY(%4$s));
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM statebus.mark(ARRAY(
            SELECT DISTINCT n.%2$I::text FROM new_rows n WHERE n.%2$I IS NOT NULL));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM statebus.mark(ARRAY(
            SELECT DISTINCT o.%2$I::text FROM old_rows o WHERE o.%2$I IS NOT NULL));
    ELSE  -- BEFORE TRUNCATE: the rows are still there to be read. TRUNCATE holds the
          -- table exclusively until commit anyway, so its users are bumped right away.
        PERFORM statebus.bump(ARRAY(
            SELECT DISTINCT t.%2$I::text FROM %3$s t WHERE t.%2$I IS NOT NULL));
    END IF;
    RETURN NULL;
END $body$;
$f$, statebus.capture_function_name(tbl), user_column, tbl, changed_users);
END $$;

-- Installs capture on a table: the generated function and its four statement triggers
-- (transition tables need one trigger per event).
CREATE OR REPLACE FUNCTION statebus.install_capture(tbl regclass, user_column name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    fn name := statebus.capture_function_name(tbl);
BEGIN
    EXECUTE statebus.capture_function_sql(tbl, user_column);
    EXECUTE format('REVOKE ALL ON FUNCTION statebus.%I() FROM PUBLIC', fn);
    EXECUTE format('CREATE OR REPLACE TRIGGER statebus_capture_insert AFTER INSERT ON %s
                    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
                    EXECUTE FUNCTION statebus.%I()', tbl, fn);
    EXECUTE format('CREATE OR REPLACE TRIGGER statebus_capture_update AFTER UPDATE ON %s
                    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
                    EXECUTE FUNCTION statebus.%I()', tbl, fn);
    EXECUTE format('CREATE OR REPLACE TRIGGER statebus_capture_delete AFTER DELETE ON %s
                    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
                    EXECUTE FUNCTION statebus.%I()', tbl, fn);
    EXECUTE format('CREATE OR REPLACE TRIGGER statebus_capture_truncate BEFORE TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION statebus.%I()', tbl, fn);
END $$;

CREATE OR REPLACE FUNCTION statebus.remove_capture(tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    event text;
BEGIN
    FOREACH event IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'statebus_capture_' || event, tbl);
    END LOOP;
    EXECUTE format('DROP FUNCTION IF EXISTS statebus.%I()', statebus.capture_function_name(tbl));
END $$;

-- A plan's name, rank or limits are part of the state of every user on it.
CREATE OR REPLACE FUNCTION statebus.capture_plans() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM statebus.mark(ARRAY(
        SELECT s.user_id FROM public.user_subscriptions s
        WHERE s.plan IN (SELECT c.code FROM (SELECT n.code, n::text FROM new_rows n
                                             EXCEPT SELECT o.code, o::text FROM old_rows o) c)));
    RETURN NULL;
END $$;

-- One flush per transaction, at commit. CREATE OR REPLACE does not take constraint
-- triggers, hence the drop (this file is applied in one transaction).
DROP TRIGGER IF EXISTS statebus_flush ON statebus.commit_hook;
CREATE CONSTRAINT TRIGGER statebus_flush AFTER INSERT ON statebus.commit_hook
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION statebus.flush();
