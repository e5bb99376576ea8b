-- The provider inventory: what was changed through the API (config
-- providers live in the config; a row here lays its fields over them).
-- `inventory_version` has one row; every change bumps it first, in the
-- same transaction, so nodes sharing the database see that something moved.
CREATE TABLE inventory_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
) STRICT;
INSERT INTO inventory_version (id, version) VALUES (1, 0);

-- Provider id → the fields set through the API, as a JSON object.
CREATE TABLE inventory_providers (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at REAL NOT NULL
) STRICT;

-- Endpoints that have had routes, with the number of their next route id.
CREATE TABLE inventory_endpoints (
    name TEXT PRIMARY KEY,
    next_route INTEGER NOT NULL,
    created_at REAL NOT NULL
) STRICT;

CREATE TABLE inventory_routes (
    endpoint TEXT NOT NULL,
    id TEXT NOT NULL,
    selector TEXT NOT NULL,
    weight INTEGER NOT NULL CHECK (weight >= 0),
    strategy TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (endpoint, id)
) STRICT;

-- Issued bearer tokens: the SHA-256 of the secret, never the secret.
CREATE TABLE inventory_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
) STRICT;
