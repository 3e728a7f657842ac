-- tunewatch schema v5: when a delivery's send last began. A row attempted and not marked sent
-- may be on Discord already (the bot died between the send and the mark).
ALTER TABLE deliveries ADD COLUMN attempted_at REAL;
