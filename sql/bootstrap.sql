-- Run by the migration runner before anything else (in its own transaction, before the
-- migration lock on statebus.schema_migrations, which this creates, can be taken).
CREATE SCHEMA IF NOT EXISTS statebus;

CREATE TABLE IF NOT EXISTS statebus.schema_migrations (
    version    int PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Checksum of the sql/triggers/ files last applied; they are re-applied when it changes.
CREATE TABLE IF NOT EXISTS statebus.schema_routines (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
