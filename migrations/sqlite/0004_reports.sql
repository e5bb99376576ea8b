-- Decision reports (issue 12): nodes register, and every interval write
-- one row per bucket of decision counts. Times are unix milliseconds.
-- Buckets are kept an hour, nodes two days (pruned by the nodes).
CREATE TABLE report_nodes (
    fleet TEXT NOT NULL,
    node TEXT NOT NULL,
    ip TEXT,
    version TEXT,
    apps TEXT NOT NULL,
    started INTEGER NOT NULL,
    interval_ms INTEGER NOT NULL,
    config_hash TEXT,
    snapshots TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    last_push INTEGER,
    PRIMARY KEY (fleet, node)
) STRICT;

-- `counts` is the bucket's {app: {provider: {reason: n}}} as JSON: one
-- row per bucket, so a bucket is stored whole or not at all.
CREATE TABLE report_buckets (
    id INTEGER PRIMARY KEY,
    fleet TEXT NOT NULL,
    node TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    stop_ms INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    counts TEXT NOT NULL
) STRICT;

CREATE INDEX report_buckets_fleet_received ON report_buckets (fleet, received_at);
CREATE INDEX report_buckets_stop ON report_buckets (stop_ms);
