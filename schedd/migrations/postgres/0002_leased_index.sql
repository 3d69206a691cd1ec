-- PostgreSQL twin of migrations/sqlite/0002_leased_index.sql: the same tables and indexes;
-- INTEGER is BIGINT, TEXT is COLLATE "C" (SQLite's binary order), seq an identity.
-- Running runs that hold a worker's lease: what lease expiry and the next wake-up read.
-- runs_running indexed every running run, so every inline run (webhook, command, noop)
-- entered it when it started and left it when it ended, for nothing: inline runs hold no
-- lease. Crash recovery at start finds them through runs_active instead.
DROP INDEX runs_running;
CREATE INDEX runs_leased ON runs(lease_until_ms)
    WHERE status = 'running' AND lease_until_ms IS NOT NULL;
