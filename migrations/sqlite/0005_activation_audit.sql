-- Audit fields of an activation (SPEC §4): why the privilege was asked for and the ticket it
-- serves, as the webhook gave them (NULL when not given). Shown by `status`.
ALTER TABLE activations ADD COLUMN justification TEXT;   -- at most 1,000 characters
ALTER TABLE activations ADD COLUMN ticket_number TEXT;   -- at most 100 characters
ALTER TABLE activations ADD COLUMN ticket_system TEXT;   -- at most 100 characters
