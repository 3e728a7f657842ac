-- tunewatch schema v4: the API a training is followed through (v3 fine_tune_status or the v6
-- trainer), since when its polls fail, steps folded into one event, and the outbox's heads.
ALTER TABLE trainings ADD COLUMN api TEXT NOT NULL DEFAULT 'v3';
ALTER TABLE trainings ADD COLUMN failing_since DOUBLE PRECISION;
ALTER TABLE events ADD COLUMN folded INTEGER NOT NULL DEFAULT 0;

-- The first pending delivery of each subscription and when it is due: the deliverer reads the
-- due heads through this index instead of comparing every pending row with every other.
CREATE INDEX deliveries_heads ON deliveries (subscription_id, seq, next_attempt_at)
    WHERE status = 'pending';
DROP INDEX deliveries_pending;
