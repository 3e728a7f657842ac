-- tunewatch schema v9: which instance sends a subscription's deliveries, until when. An instance
-- takes the lease before it reads a subscription's pending messages and gives it back when they
-- are sent; a lease not renewed (the instance died) ends at `expires_at`, and another one takes over.
-- Leases are not data: tunewatch migrate-db does not copy them.
CREATE TABLE delivery_leases (
    subscription_id BIGINT PRIMARY KEY REFERENCES subscriptions (id) ON DELETE CASCADE,
    owner TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
