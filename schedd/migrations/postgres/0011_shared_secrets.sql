-- PostgreSQL twin of migrations/sqlite/0011_shared_secrets.sql: secrets every node of the
-- database shares, by name ('console': the web console's cookie-signing secret, which was
-- the file <db>.console-secret beside each node, so a session made through one node was
-- refused by another). Nothing here is ever logged or returned.
CREATE TABLE IF NOT EXISTS shared_secrets (
    name        TEXT COLLATE "C" PRIMARY KEY,
    value       TEXT COLLATE "C" NOT NULL,
    created_ms  BIGINT NOT NULL
);
