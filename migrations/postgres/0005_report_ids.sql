-- Nodes read buckets by id: "the rows after the last id I have". A
-- BIGSERIAL id is taken at INSERT but seen at COMMIT, so a later id can
-- commit first, and a poll between the two commits would skip the earlier
-- row for good. Ids now come from `report_seq`, one row that every bucket
-- insert bumps first in its transaction: its row lock makes writers take
-- ids in commit order (a rolled-back insert gives its id back), so every
-- id below one a reader sees is already visible to it.
CREATE TABLE report_seq (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_id BIGINT NOT NULL
);

-- Past every id the old sequence handed out, pruned rows' included.
INSERT INTO report_seq (id, last_id)
    SELECT 1, GREATEST(
        COALESCE((SELECT MAX(id) FROM report_buckets), 0),
        (SELECT last_value FROM report_buckets_id_seq)
    );

ALTER TABLE report_buckets ALTER COLUMN id DROP DEFAULT;
DROP INDEX report_buckets_fleet_received;
CREATE INDEX report_buckets_fleet_id ON report_buckets (fleet, id);
