-- The newest revision a device fetched of its own (personal) files: what confirms a push.
-- Shared files (a Yealink common file) carry no change of the device and confirm nothing.
ALTER TABLE devices ADD COLUMN fetched_revision integer NOT NULL DEFAULT 0;
