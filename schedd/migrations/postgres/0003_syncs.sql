-- PostgreSQL twin of migrations/sqlite/0003_syncs.sql: the same tables and indexes;
-- INTEGER is BIGINT, TEXT is COLLATE "C" (SQLite's binary order), seq an identity.
-- The Syncs API (seed 004, SPEC 7.3). A sync IS a schedule (same id): its timing, action,
-- retries and runs are the schedule's; what the seed adds is kept beside it here.
CREATE TABLE syncs (
    id                     TEXT COLLATE "C" PRIMARY KEY REFERENCES schedules(id) ON DELETE CASCADE,
    tenant_id              TEXT COLLATE "C" NOT NULL,
    connection_id          TEXT COLLATE "C" NOT NULL,
    provider_key           TEXT COLLATE "C" NOT NULL,
    slug                   TEXT COLLATE "C",
    task_slug              TEXT COLLATE "C",
    status                 TEXT COLLATE "C" NOT NULL,     -- draft | active | paused | archived (error is derived)
    trigger_mode           TEXT COLLATE "C" NOT NULL,     -- manual | scheduled | on_create
    execution_backend      TEXT COLLATE "C" NOT NULL,     -- native | external | prefect
    execution_mode         TEXT COLLATE "C" NOT NULL,
    execution_config       TEXT COLLATE "C" NOT NULL,     -- JSON, as the client sent it
    source_config          TEXT COLLATE "C" NOT NULL,     -- JSON
    destination_config     TEXT COLLATE "C" NOT NULL,     -- JSON
    entities               TEXT COLLATE "C" NOT NULL,     -- JSON list
    table_bindings         TEXT COLLATE "C" NOT NULL,     -- JSON list
    freshness_sla_seconds  BIGINT,
    has_schedule           BIGINT NOT NULL,  -- 0: the schedule row's timing is a placeholder
    on_create_fired        BIGINT NOT NULL,  -- 1: the on_create run was made
    created_by             TEXT COLLATE "C",
    updated_by             TEXT COLLATE "C",
    created_ms             BIGINT NOT NULL,
    updated_ms             BIGINT NOT NULL
);
CREATE INDEX syncs_tenant ON syncs(tenant_id, created_ms);

-- What a sync run adds to its run. Scheduled runs and automatic retries get a row only when
-- a backend records something on them; reads fall back to the chain's first attempt.
CREATE TABLE sync_runs (
    run_id                TEXT COLLATE "C" PRIMARY KEY
                          REFERENCES runs(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    run_mode              TEXT COLLATE "C",
    triggered_by          TEXT COLLATE "C",
    backend_run_ref       TEXT COLLATE "C",
    backend_run_url       TEXT COLLATE "C",
    backend_status        TEXT COLLATE "C",               -- JSON
    backend_heartbeat_ms  BIGINT,
    cancel_requested_by   TEXT COLLATE "C"
);
