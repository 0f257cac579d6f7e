-- The order in which this store recorded activations, for "oldest first" where several were
-- received in the same millisecond (`received_at` has millisecond precision): set on insert to
-- one more than the largest so far. Activations recorded before this migration keep NULL and
-- sort by `received_at` and id, as before.
ALTER TABLE activations ADD COLUMN seq BIGINT;
