-- Bucket ids never come back. Nodes read "the rows after the last id I
-- have" and keep buckets apart by id; without AUTOINCREMENT SQLite may hand
-- a pruned row's id (the largest one, once it is deleted) to the next row,
-- which a node would then skip or merge with the old bucket. SQLite cannot
-- add AUTOINCREMENT to a table, so the table is rebuilt; copying the rows
-- with their ids seeds sqlite_sequence past every id in use.
CREATE TABLE report_buckets_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fleet TEXT NOT NULL,
    node TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    stop_ms INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    counts TEXT NOT NULL
) STRICT;

INSERT INTO report_buckets_new (id, fleet, node, start_ms, stop_ms, received_at, counts)
    SELECT id, fleet, node, start_ms, stop_ms, received_at, counts FROM report_buckets;

DROP TABLE report_buckets;
ALTER TABLE report_buckets_new RENAME TO report_buckets;

CREATE INDEX report_buckets_fleet_id ON report_buckets (fleet, id);
CREATE INDEX report_buckets_stop ON report_buckets (stop_ms);
