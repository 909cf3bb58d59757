-- The relay tier (docs/scaling.md): which `statebus relay` leads, and how far the
-- leaders have published.
--
-- Leadership is this one row, not an advisory lock: any role may take any advisory lock
-- key, and pg_locks shows every held key to every role, so a key cannot be kept secret
-- from a role that wants to hold it hostage. Only the role that owns schema statebus may
-- read or write this table (sql/triggers/90_privileges.sql revokes everything else).
CREATE TABLE statebus.relay_lease (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    -- Fencing token: one more at every change of leader. Every write of the leader names
    -- it, and every message it publishes carries it, so a relay that lost the lease can
    -- neither write here nor be taken by an edge for the current leader.
    token          bigint      NOT NULL DEFAULT 0,
    holder         text,        -- the relay's name, for people (`statebus relay --name`)
    holder_pid     integer,     -- the backend of the leader's LISTENing session ...
    holder_started timestamptz, -- ... and when it started (a pid is reused)
    expires_at     timestamptz NOT NULL DEFAULT '-infinity',
    -- Every transaction older than this one was published and acknowledged by NATS;
    -- a new leader publishes the versions of transactions from here on.
    watermark      xid8
);
INSERT INTO statebus.relay_lease DEFAULT VALUES;
