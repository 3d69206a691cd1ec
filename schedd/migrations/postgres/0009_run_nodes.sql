-- The twin of sqlite/0009_run_nodes.sql: a run a node started itself carries that node and
-- the lease it renews while the action runs (docs/operations.md "Running several nodes").
-- No index: leases are checked every few seconds through runs_active.
ALTER TABLE runs ADD COLUMN node_id TEXT COLLATE "C";
ALTER TABLE runs ADD COLUMN node_lease_until_ms BIGINT;
