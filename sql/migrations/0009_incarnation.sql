-- Which database statebus last served from, so a restore is noticed rather than trusted
-- to a manual step (statebus.check_incarnation(), sql/triggers/70_incarnation.sql).
--
-- A pg_dump restored elsewhere brings this row along, naming the old cluster or the old
-- database; a point-in-time recovery or a promoted standby runs on a new timeline. Either
-- way, versions clients already hold may be reused for other content, so every version is
-- moved past them before anything is served. One row; none until the first start.
CREATE TABLE statebus.incarnation (
    id                boolean     PRIMARY KEY DEFAULT true CHECK (id),
    system_identifier bigint      NOT NULL,
    database_oid      oid         NOT NULL,
    timeline          integer     NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);
