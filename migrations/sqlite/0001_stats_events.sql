-- One row per posted test result. The numeric columns are what reads
-- aggregate; `payload` is the normalised record as JSON, returned by
-- /api/raw_stats. STRICT makes SQLite refuse a value of the wrong type
-- instead of storing it silently.
CREATE TABLE stats_events (
    id INTEGER PRIMARY KEY,
    region TEXT NOT NULL,
    orchestrator TEXT NOT NULL,
    ts REAL NOT NULL,
    received_at REAL NOT NULL,
    segments_sent INTEGER NOT NULL,
    segments_received INTEGER NOT NULL,
    success_rate REAL NOT NULL,
    seg_duration REAL NOT NULL,
    round_trip_time REAL NOT NULL,
    upload_time REAL NOT NULL,
    download_time REAL NOT NULL,
    transcode_time REAL NOT NULL,
    payload TEXT NOT NULL
) STRICT;

CREATE INDEX stats_events_region_ts ON stats_events (region, ts);
CREATE INDEX stats_events_orchestrator_ts ON stats_events (orchestrator, ts);
CREATE INDEX stats_events_ts ON stats_events (ts);
