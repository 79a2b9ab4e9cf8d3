-- The chat widget's identity verification: a host site may vouch for its
-- signed-in user with an HMAC of the user's id. Such a user is one visitor,
-- with one open conversation, on every device they use.

-- The host site's id of a verified user; NULL for anonymous visitors.
ALTER TABLE visitors ADD COLUMN user_id text UNIQUE
    CHECK (char_length(user_id) BETWEEN 1 AND 255);

-- Further tokens of a visitor: each device of a verified user gets its own.
-- The token a visitor was created with stays in visitors.token_hash.
-- As there, only the SHA-256 of a token is stored.
CREATE TABLE visitor_tokens (
    token_hash  bytea PRIMARY KEY,
    visitor_id  uuid NOT NULL REFERENCES visitors (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
