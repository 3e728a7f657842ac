-- tunewatch schema v1: trainings polled, events seen, subscriptions, and the delivery outbox.

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per training and whose key polls it (key_ref names the key; the key is never stored here).
CREATE TABLE trainings (
    training_id TEXT NOT NULL,
    key_ref TEXT NOT NULL,
    state TEXT,                         -- raw state as the API last said it
    last_seq INTEGER NOT NULL DEFAULT -1, -- highest log position recorded as an event
    eta_minutes INTEGER,
    total_steps INTEGER,
    terminal TEXT CHECK (terminal IN ('ready', 'failed', 'unknown')),
    failure_reason TEXT,
    next_poll_at REAL NOT NULL,
    consecutive_errors INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    not_found_count INTEGER NOT NULL DEFAULT 0,
    first_not_found_at REAL,
    last_ok_at REAL,
    created_at REAL NOT NULL,
    finished_at REAL,
    PRIMARY KEY (training_id, key_ref)
) WITHOUT ROWID;

-- A step line by its position in the log (printed numbers can repeat), or the terminal event.
CREATE TABLE events (
    training_id TEXT NOT NULL,
    key_ref TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('step', 'ready', 'failed', 'unknown')),
    number INTEGER,
    label TEXT,
    steps_to_go INTEGER,
    eta_minutes INTEGER,
    raw TEXT,
    detail TEXT,
    late INTEGER NOT NULL DEFAULT 0,
    observed_at REAL NOT NULL,
    PRIMARY KEY (training_id, key_ref, seq)
) WITHOUT ROWID;

CREATE TABLE subscriptions (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('channel', 'dm')),
    guild_id INTEGER,
    channel_id INTEGER,
    user_id INTEGER NOT NULL,           -- who created it (the DM recipient for kind = dm)
    training_id TEXT NOT NULL,
    key_ref TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'paused', 'done')),
    reason TEXT,
    baseline_seq INTEGER NOT NULL,      -- events at or below it were already done when subscribing
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX subscriptions_channel ON subscriptions (training_id, channel_id)
    WHERE kind = 'channel';
CREATE UNIQUE INDEX subscriptions_dm ON subscriptions (training_id, user_id) WHERE kind = 'dm';
CREATE INDEX subscriptions_training ON subscriptions (training_id, key_ref, status);
CREATE INDEX subscriptions_guild ON subscriptions (guild_id, status);
CREATE INDEX subscriptions_user ON subscriptions (user_id, kind, status);

-- The outbox: one row per (subscription, event) to send; the sent mark is written after the send.
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    subscription_id INTEGER NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    training_id TEXT NOT NULL,
    key_ref TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'dropped')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    message_id INTEGER,
    created_at REAL NOT NULL,
    sent_at REAL,
    UNIQUE (subscription_id, seq)
);
CREATE INDEX deliveries_pending ON deliveries (subscription_id, seq) WHERE status = 'pending';
