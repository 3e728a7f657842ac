-- tunewatch schema v8: how a channel follows a training (its style), whom its final message
-- pings, the message it keeps up to date, and where a DM alert made by a button came from.
-- Plain SQL for SQLite and PostgreSQL alike (BIGINT for Discord ids: snowflakes need 64 bits).

-- steps: a message per step (silent), then the final one; live: one message edited at each
-- step; thread: a summary message with a thread of step messages under it; final: the end only.
ALTER TABLE subscriptions ADD COLUMN style TEXT NOT NULL DEFAULT 'steps'
    CHECK (style IN ('steps', 'live', 'thread', 'final'));
-- Pinged by the final message only (a role or a member), when the outcome is mention_on.
ALTER TABLE subscriptions ADD COLUMN mention_kind TEXT CHECK (mention_kind IN ('role', 'user'));
ALTER TABLE subscriptions ADD COLUMN mention_id BIGINT;
ALTER TABLE subscriptions ADD COLUMN mention_on TEXT NOT NULL DEFAULT 'both'
    CHECK (mention_on IN ('ready', 'failed', 'both'));
-- The live message (style live) or the summary message (style thread; its thread has the same
-- id), written as soon as it is posted: before any edit of it, so a restart edits it again
-- instead of posting a second one.
ALTER TABLE subscriptions ADD COLUMN live_message_id BIGINT;
-- A DM alert made with a button: the channel it was clicked in and the live message to link to.
ALTER TABLE subscriptions ADD COLUMN origin_channel_id BIGINT;
ALTER TABLE subscriptions ADD COLUMN origin_message_id BIGINT;
