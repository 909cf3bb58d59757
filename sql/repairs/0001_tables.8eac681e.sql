-- Repair for databases created before 0001_tables' first comment line was reworded:
-- the tables are the same, so there is nothing to change; the new checksum is recorded.
SELECT 1;
