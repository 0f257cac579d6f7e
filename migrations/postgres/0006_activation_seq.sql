-- PostgreSQL twin of migrations/sqlite/0006_activation_seq.sql (see there). Two replicas that
-- record at the same moment may get the same value: such arrivals have no order anyway, and
-- ties sort by id.
ALTER TABLE activations ADD COLUMN seq BIGINT;
