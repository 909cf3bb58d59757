-- Least privilege for schema statebus, re-applied after every other trigger file.
--
-- PostgreSQL lets PUBLIC execute every new function. statebus's functions include
-- SECURITY DEFINER ones (the generated capture functions), which run as their owner: no role but the
-- owner (the role that runs `statebus migrate`) may call any of them directly. Triggers
-- still fire for every writer: a trigger's function is checked when the trigger is
-- created, not each time it fires, so the host app's writes are captured as before.
-- Readers and writers get exactly what the role set-up in sql/roles_example.sql grants.

REVOKE ALL ON SCHEMA statebus FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA statebus FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA statebus FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA statebus FROM PUBLIC;

-- For functions the migrating role creates later in this schema. PostgreSQL adds
-- per-schema defaults to the global ones and cannot take a global default away per
-- schema, so this alone does not stop PUBLIC from executing a new function: anything
-- statebus generates at run time (track()) revokes EXECUTE itself, and this file runs
-- again on every migrate. It is kept so that a per-schema GRANT made by hand is undone.
ALTER DEFAULT PRIVILEGES IN SCHEMA statebus REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA statebus REVOKE ALL ON TABLES FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA statebus REVOKE ALL ON SEQUENCES FROM PUBLIC;
