-- The Syncs API (seed 004, SPEC 7.3). A sync IS a schedule (same id): its timing, action,
-- retries and runs are the schedule's; what the seed adds is kept beside it here.
CREATE TABLE syncs (
    id                     TEXT PRIMARY KEY REFERENCES schedules(id) ON DELETE CASCADE,
    tenant_id              TEXT NOT NULL,
    connection_id          TEXT NOT NULL,
    provider_key           TEXT NOT NULL,
    slug                   TEXT,
    task_slug              TEXT,
    status                 TEXT NOT NULL,     -- draft | active | paused | archived (error is derived)
    trigger_mode           TEXT NOT NULL,     -- manual | scheduled | on_create
    execution_backend      TEXT NOT NULL,     -- native | external | prefect
    execution_mode         TEXT NOT NULL,
    execution_config       TEXT NOT NULL,     -- JSON, as the client sent it
    source_config          TEXT NOT NULL,     -- JSON
    destination_config     TEXT NOT NULL,     -- JSON
    entities               TEXT NOT NULL,     -- JSON list
    table_bindings         TEXT NOT NULL,     -- JSON list
    freshness_sla_seconds  INTEGER,
    has_schedule           INTEGER NOT NULL,  -- 0: the schedule row's timing is a placeholder
    on_create_fired        INTEGER NOT NULL,  -- 1: the on_create run was made
    created_by             TEXT,
    updated_by             TEXT,
    created_ms             INTEGER NOT NULL,
    updated_ms             INTEGER NOT NULL
) STRICT;
CREATE INDEX syncs_tenant ON syncs(tenant_id, created_ms);

-- What a sync run adds to its run. Scheduled runs and automatic retries get a row only when
-- a backend records something on them; reads fall back to the chain's first attempt.
CREATE TABLE sync_runs (
    run_id                TEXT PRIMARY KEY
                          REFERENCES runs(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    run_mode              TEXT,
    triggered_by          TEXT,
    backend_run_ref       TEXT,
    backend_run_url       TEXT,
    backend_status        TEXT,               -- JSON
    backend_heartbeat_ms  INTEGER,
    cancel_requested_by   TEXT
) STRICT;
