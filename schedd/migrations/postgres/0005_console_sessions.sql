-- PostgreSQL twin of migrations/sqlite/0005_console_sessions.sql: the same tables and indexes;
-- INTEGER is BIGINT, TEXT is COLLATE "C" (SQLite's binary order), seq an identity.
-- Web console sessions (schedd/console). The cookie holds a random token; only its sha256
-- is stored, so a copy of the database does not hand out live sessions. A session belongs
-- to the key that signed in: revoking the key ends it at the next request (the lookup
-- joins api_keys), signing out deletes the row.
CREATE TABLE console_sessions (
    token_hash  TEXT COLLATE "C" PRIMARY KEY,
    key_id      TEXT COLLATE "C" NOT NULL REFERENCES api_keys(id),
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions(expires_ms);
