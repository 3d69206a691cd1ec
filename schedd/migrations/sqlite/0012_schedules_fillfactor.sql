-- The twin of postgres/0012_schedules_fillfactor.sql, which leaves room on PostgreSQL's
-- pages of `schedules` for HOT updates. SQLite has no fillfactor (a row is rewritten in
-- place in its b-tree page): nothing to do.
SELECT 1;
