-- Capture at commit: a transaction's users get their versions (and the versions rows'
-- locks) only while it commits, not from its first captured statement on.
--
-- The statement triggers now only collect the users a transaction touched (in a
-- transaction-local setting, statebus.dirty); the first of them also inserts one row
-- here, whose deferred constraint trigger (sql/triggers/10_capture.sql) bumps every
-- collected user at commit, in one sorted pass, and deletes the row again.
-- Unlogged: a row lives only until its own transaction's commit, so there is nothing
-- to recover after a crash. Keyed by transaction so the flush deletes its row by index.
CREATE UNLOGGED TABLE statebus.commit_hook (
    txid xid8 PRIMARY KEY
);
