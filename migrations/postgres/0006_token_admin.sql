-- Issued tokens are bound to the admin api_token they were issued with
-- (a short fingerprint of it, never the token): a token whose admin token
-- has been rotated away is refused. Rows from before are empty until the
-- first start after the upgrade binds them to the admin token in use.
ALTER TABLE inventory_tokens ADD COLUMN admin TEXT NOT NULL DEFAULT '';
