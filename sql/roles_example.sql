-- An example role set-up for statebus. NOT applied by `statebus migrate`: read it, rename
-- the roles to your taste, and run it as the role that owns statebus's objects
-- (`statebus psql -f sql/roles_example.sql`). The integration tests apply this very file.
--
-- Three kinds of role:
--
--   owner             The role that runs `statebus migrate` and `statebus serve`. It owns
--                     schema statebus, its tables and functions, and the six subscription
--                     tables; the server's Stripe writers and readers connect as it. Give
--                     it its own role rather than a superuser's.
--   statebus_app      The host application: reads and writes the subscription tables (and
--                     tables joined with statebus.track()). Its commits are captured by the
--                     triggers like anyone's; it gets nothing in schema statebus.
--   statebus_monitor  Dashboards and alerts: reads statebus.history and
--                     statebus.stripe_events, and nothing else.
--
-- Nobody but the owner may execute statebus's functions (sql/triggers/90_privileges.sql
-- revokes EXECUTE from PUBLIC on every migrate); capture triggers fire for every writer
-- all the same, since a trigger's function is checked when the trigger is created.
-- Give each LOGIN role a password yourself (psql: \password statebus_app).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'statebus_app') THEN
        CREATE ROLE statebus_app LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'statebus_monitor') THEN
        CREATE ROLE statebus_monitor LOGIN;
    END IF;
END $$;

-- The host application (writer).
GRANT USAGE ON SCHEMA public TO statebus_app;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON public.users, public.user_subscriptions, public.user_billing,
       public.user_usage, public.user_system_data
    TO statebus_app;
-- Plans are part of every user's state; the app reads them. Grant INSERT, UPDATE too if
-- the app, rather than the owner, manages plans.
GRANT SELECT ON public.plans TO statebus_app;
-- A table joined with statebus.track() needs the same grants, e.g.:
--   GRANT SELECT, INSERT, UPDATE, DELETE ON public.my_table TO statebus_app;
-- and, when the app owns that table, the owner needs TRIGGER on it to install capture:
--   GRANT TRIGGER ON public.my_table TO <owner>;

-- Monitoring (read-only): history of versions and the Stripe inbox.
GRANT USAGE ON SCHEMA statebus TO statebus_monitor;
GRANT SELECT ON statebus.history, statebus.stripe_events TO statebus_monitor;
-- Guards against mistakes only (a role may turn it off for itself); the grants above are
-- what keeps the monitor from writing.
ALTER ROLE statebus_monitor SET default_transaction_read_only = on;

-- No session may sit idle in a transaction for long: one that also LISTENs (any role may
-- LISTEN) pins PostgreSQL's NOTIFY queue, and once that is full every tracked commit fails
-- ("too many notifications in the NOTIFY queue"). A dashboard never needs an open
-- transaction between queries; the app gets a minute for work between its statements.
-- (Like default_transaction_read_only, a role may change it for its own sessions; see
-- docs/operations.md for the query that names a session pinning the queue.)
ALTER ROLE statebus_monitor SET idle_in_transaction_session_timeout = '5s';
ALTER ROLE statebus_app SET idle_in_transaction_session_timeout = '60s';

-- A backend service that LISTENs on channel statebus and reads envelopes: the
-- notifications carry only (user_id, version) pairs, and the read is SECURITY INVOKER,
-- so the reader needs SELECT on what a document is made of, e.g.:
--   GRANT USAGE ON SCHEMA statebus TO my_reader;
--   GRANT EXECUTE ON FUNCTION statebus.envelopes(text[]) TO my_reader;
--   GRANT SELECT ON statebus.versions, public.plans, public.users, public.user_subscriptions,
--       public.user_billing, public.user_usage, public.user_system_data TO my_reader;

-- Optional hardening, for the whole database and every role in it: PUBLIC may create
-- temporary tables by default (needed by no statebus role).
--   REVOKE TEMPORARY ON DATABASE <database> FROM PUBLIC;
--
-- Optional: statebus creates functions at run time (statebus.track()) and revokes
-- EXECUTE on them itself. With an owner role that creates nothing outside statebus,
-- this makes PUBLIC's EXECUTE off by default for everything the owner creates:
--   ALTER DEFAULT PRIVILEGES FOR ROLE <owner> REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
