-- tunewatch schema v2: per-user API keys, encrypted (Fernet, TUNEWATCH_SECRET) before they get here.
-- Nothing derived from the key (not even its last characters) is stored in clear.
CREATE TABLE user_keys (
    user_id BIGINT PRIMARY KEY,         -- Discord user id
    ciphertext BYTEA NOT NULL,
    created_at DOUBLE PRECISION,
    updated_at DOUBLE PRECISION
);
