-- tunewatch schema v3: indexes the engine's hot queries need at thousands of trainings.

-- claim_due and next_poll_at walk unfinished trainings in due order and stop at the first rows
-- (or at once when nothing is due) instead of scanning and sorting every training each tick.
CREATE INDEX trainings_due ON trainings (next_poll_at) WHERE terminal IS NULL;
