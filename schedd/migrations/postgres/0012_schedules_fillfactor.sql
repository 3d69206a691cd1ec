-- Room on each page of `schedules` for the updated versions of its rows (fillfactor 75:
-- inserts fill pages to 75 %). Recording an outcome changes a schedule's counters and last
-- run, no indexed column: with room on the row's page PostgreSQL writes that version as a
-- HOT update, without a new entry in each of the table's indexes (bench/RESULTS.md §PG2:
-- 4.6 -> 2.4 WAL records per tally). Pages written before this migration keep their fill
-- until rows move or the table is rewritten (VACUUM FULL, pg_repack).
ALTER TABLE schedules SET (fillfactor = 75);
