-- PostgreSQL twin of migrations/sqlite/0005_activation_audit.sql: the audit fields of an
-- activation, NULL when not given (see there).
ALTER TABLE activations
    ADD COLUMN justification TEXT,
    ADD COLUMN ticket_number TEXT,
    ADD COLUMN ticket_system TEXT;
