-- history_rows: whether every version writes its row to statebus.history. On by
-- default (who and when, for every version); an operator who does not need that record
-- can turn it off and save every writer the row (docs/configuration.md has the cost).
INSERT INTO statebus.settings (name, value) VALUES ('history_rows', 'on')
ON CONFLICT (name) DO NOTHING;
