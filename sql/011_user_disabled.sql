-- Disabled users (issue 11): a user who left the directory, or whom an admin disabled, keeps the
-- row and the device assignments but can no longer sign in, use a token or check a PIN.
-- disabled_by says who disabled the user: a directory sync enables again only its own.
ALTER TABLE users
    ADD COLUMN disabled_at timestamptz,
    ADD COLUMN disabled_by text CHECK (disabled_by IN ('admin', 'directory')),
    ADD CONSTRAINT users_disabled_by_set CHECK ((disabled_at IS NULL) = (disabled_by IS NULL));
