-- Secrets every node of a database shares (issue 16: several nodes on one PostgreSQL), by
-- name. 'console': the web console's cookie-signing secret (hex). Until now it was the
-- file <db>.console-secret beside each node's database path, so a console session made
-- through one node was refused by another; the first start after this migration carries
-- that file's secret over (sessions signed in before the upgrade stay valid), or makes a
-- new one, and every node reads it from here. Nothing here is ever logged or returned.
CREATE TABLE IF NOT EXISTS shared_secrets (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
) STRICT;
