-- Idempotency keys of stats posts (header `Idempotency-Key`): a client
-- that retries a post after losing the reply sends the same key, and the
-- post is stored once. The key is inserted in the transaction that stores
-- the event, so a key exists exactly when its event does. `body_sha256`
-- tells a retry (same body: answered as the first was) from a reused key
-- (another body: refused). Keys older than a day are purged.
CREATE TABLE stats_idempotency (
    key TEXT PRIMARY KEY,
    body_sha256 TEXT NOT NULL,
    event_id BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);

CREATE INDEX stats_idempotency_created_at ON stats_idempotency (created_at);
