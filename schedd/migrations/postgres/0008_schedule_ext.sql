-- PostgreSQL twin of migrations/sqlite/0008_schedule_ext.sql: the same tables and indexes;
-- INTEGER is BIGINT, TEXT is COLLATE "C" (SQLite's binary order), seq an identity.
-- What a compatibility router (docs/compat.md) keeps beside an ordinary schedule: the
-- fields of its own API that a schedule has no column for. Deleting the schedule (through
-- any API) deletes them with it.
CREATE TABLE schedule_ext (
    schedule_id  TEXT COLLATE "C" PRIMARY KEY REFERENCES schedules(id) ON DELETE CASCADE,
    tenant_id    TEXT COLLATE "C" NOT NULL,
    kind         TEXT COLLATE "C" NOT NULL,      -- which API made it: 'actions', 'kragle'
    scope        TEXT COLLATE "C" NOT NULL,      -- where it lives in that API (actions: [org, workspace, app] as JSON)
    created_ms   BIGINT NOT NULL,
    data         TEXT COLLATE "C" NOT NULL       -- JSON object
);
-- keyset pages of one scope, oldest first
CREATE INDEX schedule_ext_page ON schedule_ext(tenant_id, kind, scope, created_ms, schedule_id);

-- A manual trigger may carry a change to the action's config for its run (and that run's
-- retries): merged over the schedule's action_config when the run is resolved.
ALTER TABLE runs ADD COLUMN config_patch TEXT COLLATE "C";  -- JSON
