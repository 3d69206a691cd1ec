-- Entity records and relative schedules (SPEC 3.7).

CREATE TABLE entity_definitions (
    seq           INTEGER PRIMARY KEY,               -- creation order (lists)
    id            TEXT NOT NULL UNIQUE,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    name          TEXT NOT NULL,
    description   TEXT,
    fields        TEXT NOT NULL,                     -- JSON {"name": "date" | ...}
    record_count  INTEGER NOT NULL,                  -- kept by every record write
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX entity_definitions_name ON entity_definitions(tenant_id, name);
CREATE INDEX entity_definitions_tenant ON entity_definitions(tenant_id, seq);

-- A definition's records, in key order (the list's keyset pages).
CREATE TABLE records (
    definition_id TEXT NOT NULL,
    key           TEXT NOT NULL,
    data          TEXT NOT NULL,                     -- JSON object
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL,
    PRIMARY KEY (definition_id, key)
) STRICT, WITHOUT ROWID;

-- One row per (relative schedule, record) that has or had an occurrence: next_ms is its
-- pending occurrence (NULL: none), fired_ms the last occurrence claimed (a re-plan never
-- plans it, or anything before it, again). The engine finds a due schedule's occurrences
-- through occurrences_due, as it finds due schedules through schedules_due; the schedule's
-- next_run_ms is the least next_ms of its rows.
CREATE TABLE occurrences (
    schedule_id   TEXT NOT NULL,
    record_key    TEXT NOT NULL,
    next_ms       INTEGER,
    fired_ms      INTEGER,
    PRIMARY KEY (schedule_id, record_key)
) STRICT, WITHOUT ROWID;
CREATE INDEX occurrences_due ON occurrences(schedule_id, next_ms) WHERE next_ms IS NOT NULL;

-- The relative schedules of a definition: what a record write re-plans.
CREATE INDEX schedules_definition ON schedules(relative_entity_definition_id)
    WHERE relative_entity_definition_id IS NOT NULL;

-- Runs of a relative schedule name their record. SPEC 4.2 extends to
-- (schedule, record, occurrence, attempt): two records of one schedule share instants.
ALTER TABLE runs ADD COLUMN record_key TEXT;
DROP INDEX runs_occurrence;
CREATE UNIQUE INDEX runs_occurrence ON runs(schedule_id, scheduled_for_ms, attempt)
    WHERE manual = 0 AND record_key IS NULL;
CREATE UNIQUE INDEX runs_record_occurrence
    ON runs(schedule_id, record_key, scheduled_for_ms, attempt)
    WHERE manual = 0 AND record_key IS NOT NULL;
-- Overlap is decided per record for relative schedules: active runs by (schedule, record).
DROP INDEX runs_active;
CREATE INDEX runs_active ON runs(schedule_id, record_key) WHERE status IN ('pending', 'running');
