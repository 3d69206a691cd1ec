-- Several nodes (SPEC §8, docs/operations.md "Running several nodes"): a run that a node
-- starts itself (webhook, command, noop, backend) carries that node's id and a lease the
-- node renews while the action runs. A run whose lease ran out (its node died or stalled)
-- is failed `interrupted` by any node and retried. worker_id / lease_until_ms stay the
-- external workers' own: a worker run has no node lease, a node run no worker lease.
-- No index: leases are checked every few seconds through runs_active (the active runs
-- only), so starting and ending a run costs no extra index write.
ALTER TABLE runs ADD COLUMN node_id TEXT;
ALTER TABLE runs ADD COLUMN node_lease_until_ms INTEGER;
