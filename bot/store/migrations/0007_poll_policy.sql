-- tunewatch schema v7: what the poll policy knows of each training and why it polls when it
-- does. observation: the stages seen and when (JSON, see bot/tracking/policy.py Observation);
-- last_polled_at: the last claim of the training; poll_reason: why next_poll_at is then.
ALTER TABLE trainings ADD COLUMN observation TEXT;
ALTER TABLE trainings ADD COLUMN last_polled_at REAL;
ALTER TABLE trainings ADD COLUMN poll_reason TEXT;
CREATE INDEX trainings_finished ON trainings (finished_at) WHERE observation IS NOT NULL;
