-- Hourly sums per orchestrator and region, so an aggregated read over a
-- day hashes ~24 rows per pair plus the events of the two partial hours at
-- its edges, instead of every event in the window (143k rows for a day of
-- 1M over a week: ~100 ms of hashing on two cores). Means stay exact:
-- sum / n over the same events; see PostgresStore::aggregated.
--
-- hour = the h with h*3600 <= ts < (h+1)*3600 in float8 arithmetic:
-- floor(ts / 3600) can round up to the next hour for a ts one ulp below it,
-- hence the correction, which the read side repeats in Rust.
CREATE TABLE stats_hourly (
    hour BIGINT NOT NULL,
    orchestrator TEXT NOT NULL,
    region TEXT NOT NULL,
    n BIGINT NOT NULL,
    sum_success_rate DOUBLE PRECISION NOT NULL,
    sum_seg_duration DOUBLE PRECISION NOT NULL,
    sum_round_trip_time DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (hour, orchestrator, region)
);

CREATE INDEX stats_hourly_orchestrator_hour ON stats_hourly (orchestrator, hour);

INSERT INTO stats_hourly (hour, orchestrator, region, n, sum_success_rate, sum_seg_duration, sum_round_trip_time)
SELECT hour, orchestrator, region, COUNT(*), SUM(success_rate), SUM(seg_duration), SUM(round_trip_time)
FROM (
    SELECT floor(ts / 3600)::bigint - (floor(ts / 3600) * 3600 > ts)::int AS hour,
           orchestrator, region, success_rate, seg_duration, round_trip_time
    FROM stats_events
) e
GROUP BY hour, orchestrator, region;

-- A statement-level trigger keeps the sums in the inserting statement's
-- transaction (an event and its sums are stored together or not at all,
-- whoever inserts) and folds a bulk insert into one upsert per hour and pair.
CREATE FUNCTION stats_events_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_hourly AS h
        (hour, orchestrator, region, n, sum_success_rate, sum_seg_duration, sum_round_trip_time)
    SELECT hour, orchestrator, region, COUNT(*), SUM(success_rate), SUM(seg_duration), SUM(round_trip_time)
    FROM (
        SELECT floor(ts / 3600)::bigint - (floor(ts / 3600) * 3600 > ts)::int AS hour,
               orchestrator, region, success_rate, seg_duration, round_trip_time
        FROM new_rows
    ) e
    GROUP BY hour, orchestrator, region
    -- One lock order for every writer, so concurrent batches cannot deadlock.
    ORDER BY hour, orchestrator, region
    ON CONFLICT (hour, orchestrator, region) DO UPDATE SET
        n = h.n + excluded.n,
        sum_success_rate = h.sum_success_rate + excluded.sum_success_rate,
        sum_seg_duration = h.sum_seg_duration + excluded.sum_seg_duration,
        sum_round_trip_time = h.sum_round_trip_time + excluded.sum_round_trip_time;
    RETURN NULL;
END
$$;

CREATE TRIGGER stats_events_rollup
    AFTER INSERT ON stats_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION stats_events_rollup();
