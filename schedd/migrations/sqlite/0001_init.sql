-- schedd schema, version 1. Instants are INTEGER epoch milliseconds (*_ms).
-- No column defaults read the clock: every instant is bound by the caller.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_ms  INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    prefix        TEXT NOT NULL,          -- first characters, to recognise a key in listings
    key_hash      TEXT NOT NULL UNIQUE,   -- sha256 hex of the whole key
    created_ms    INTEGER NOT NULL,
    last_used_ms  INTEGER,
    revoked_ms    INTEGER
) STRICT;

CREATE TABLE schedules (
    seq                           INTEGER PRIMARY KEY,   -- creation order ("oldest first")
    id                            TEXT NOT NULL UNIQUE,
    tenant_id                     TEXT NOT NULL REFERENCES tenants(id),
    name                          TEXT NOT NULL,
    description                   TEXT,
    schedule_type                 TEXT NOT NULL,
    schedule_expression           TEXT,
    timezone                      TEXT NOT NULL,
    start_ms                      INTEGER,
    end_ms                        INTEGER,
    action_type                   TEXT NOT NULL,
    action_config                 TEXT NOT NULL,         -- JSON
    customer_id                   TEXT,
    external_id                   TEXT,
    deduplication_key             TEXT,
    overlap_policy                TEXT NOT NULL,
    catchup_window_minutes        INTEGER NOT NULL,
    catchup_policy                TEXT NOT NULL,
    flexible_window_minutes       INTEGER NOT NULL,
    max_retries                   INTEGER NOT NULL,
    retry_backoff_seconds         INTEGER NOT NULL,
    pause_on_failure_count        INTEGER NOT NULL,
    rate_limit_per_minute         INTEGER,
    action_after_completion       TEXT NOT NULL,
    relative_entity_definition_id TEXT,
    relative_field_name           TEXT,
    relative_offset_days          INTEGER,
    relative_filter               TEXT,                  -- JSON
    status                        TEXT NOT NULL,
    paused_reason                 TEXT,
    next_run_ms                   INTEGER,               -- NULL: nothing more to fire
    last_run_ms                   INTEGER,
    last_run_status               TEXT,
    run_count                     INTEGER NOT NULL,
    consecutive_failures          INTEGER NOT NULL,
    missed_count                  INTEGER NOT NULL,
    last_error                    TEXT,                  -- why the engine could not plan it
    created_ms                    INTEGER NOT NULL,
    updated_ms                    INTEGER NOT NULL
) STRICT;

-- The engine's due query: the next active schedules by next_run_ms.
CREATE INDEX schedules_due ON schedules(next_run_ms) WHERE status = 'active' AND next_run_ms IS NOT NULL;
CREATE INDEX schedules_tenant ON schedules(tenant_id, seq);
CREATE UNIQUE INDEX schedules_dedup ON schedules(tenant_id, deduplication_key)
    WHERE deduplication_key IS NOT NULL;

CREATE TABLE runs (
    seq                      INTEGER PRIMARY KEY,        -- insertion order ("newest first")
    id                       TEXT NOT NULL UNIQUE,
    schedule_id              TEXT NOT NULL,              -- no FK: runs outlive a deleted schedule
    tenant_id                TEXT NOT NULL,
    status                   TEXT NOT NULL,
    trigger_type             TEXT NOT NULL,
    manual                   INTEGER NOT NULL,           -- 1: the chain began with a manual trigger
    scheduled_for_ms         INTEGER NOT NULL,
    due_ms                   INTEGER NOT NULL,
    triggered_ms             INTEGER NOT NULL,
    started_ms               INTEGER,
    completed_ms             INTEGER,
    attempt                  INTEGER NOT NULL,
    attempt_root_run_id      TEXT NOT NULL,
    previous_attempt_run_id  TEXT,
    next_attempt_run_id      TEXT,
    error_code               TEXT,
    error_message            TEXT,
    result                   TEXT,                       -- JSON
    resolved_payload         TEXT,                       -- JSON
    action_type              TEXT NOT NULL,
    queue                    TEXT,                       -- worker runs: the queue
    waiting                  INTEGER NOT NULL,           -- 1: buffered behind an active run
    worker_id                TEXT,
    lease_until_ms           INTEGER,
    last_heartbeat_ms        INTEGER,
    cancel_requested_ms      INTEGER,
    cancel_reason            TEXT
) STRICT;

-- SPEC 4.2: one run per (schedule, occurrence, attempt). Manual chains have their own
-- occurrences (the trigger instant) and are exempt, so a trigger never collides with a tick.
CREATE UNIQUE INDEX runs_occurrence ON runs(schedule_id, scheduled_for_ms, attempt) WHERE manual = 0;
CREATE INDEX runs_schedule ON runs(schedule_id, seq);
CREATE INDEX runs_tenant ON runs(tenant_id, seq);
-- pending work the engine starts itself (retries, deferred runs), and worker queues
CREATE INDEX runs_pending ON runs(due_ms) WHERE status = 'pending' AND queue IS NULL AND waiting = 0;
CREATE INDEX runs_queue ON runs(tenant_id, queue, due_ms)
    WHERE status = 'pending' AND queue IS NOT NULL AND waiting = 0;
-- overlap decisions: the pending or running runs of a schedule
CREATE INDEX runs_active ON runs(schedule_id) WHERE status IN ('pending', 'running');
-- running runs: crash recovery at start, and worker leases
CREATE INDEX runs_running ON runs(lease_until_ms) WHERE status = 'running';
