-- tunewatch schema v6: the trainer's "Time Elapsed" of a step line, for the step's message.
ALTER TABLE events ADD COLUMN elapsed_seconds DOUBLE PRECISION;
