-- Repair for databases whose 0003_lean_capture came from the release before history's
-- commit-time index became a BRIN index (added to 0003 later): swap it now.
DROP INDEX IF EXISTS statebus.history_committed_at_idx;
CREATE INDEX IF NOT EXISTS history_committed_at_brin ON statebus.history USING brin (committed_at);
