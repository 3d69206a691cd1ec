-- The twin of sqlite/0010_sync_source_config_scrub.sql, which removes a sync's sourceConfig
-- copied into its schedule's action and its runs by earlier SQLite builds. A PostgreSQL
-- database is made by code that never wrote those copies (and data copied in from SQLite
-- comes from a database already at this version): nothing to do.
SELECT 1;
