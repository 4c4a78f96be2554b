-- Customer portal links: a short-lived, read-only view of one account. Only the SHA-256 digest
-- of a link's token is kept, so the table cannot be used to open anybody's portal. The token
-- names its account, so a lookup is by (key_id, token_hash) and the table distributes by key_id
-- like every other per-account table.
CREATE TABLE portal_sessions (
    key_id      text NOT NULL REFERENCES accounts (key_id),
    id          uuid NOT NULL,
    token_hash  bytea NOT NULL CHECK (octet_length(token_hash) = 32),
    return_url  text,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (key_id, id),
    UNIQUE (key_id, token_hash),
    CHECK (created_at < expires_at)
);

-- The maintenance job forgets links a day after they expire.
CREATE INDEX portal_sessions_expires_at ON portal_sessions (expires_at);
