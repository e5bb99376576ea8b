-- One row per posted test result. The numeric columns are what reads
-- aggregate; `payload` is the normalised record as JSON text (the same
-- text SQLite keeps), returned by /api/raw_stats.
CREATE TABLE stats_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region TEXT NOT NULL,
    orchestrator TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    segments_sent BIGINT NOT NULL,
    segments_received BIGINT NOT NULL,
    success_rate DOUBLE PRECISION NOT NULL,
    seg_duration DOUBLE PRECISION NOT NULL,
    round_trip_time DOUBLE PRECISION NOT NULL,
    upload_time DOUBLE PRECISION NOT NULL,
    download_time DOUBLE PRECISION NOT NULL,
    transcode_time DOUBLE PRECISION NOT NULL,
    payload TEXT NOT NULL
);

CREATE INDEX stats_events_region_ts ON stats_events (region, ts);
CREATE INDEX stats_events_orchestrator_ts ON stats_events (orchestrator, ts);
CREATE INDEX stats_events_ts ON stats_events (ts);
