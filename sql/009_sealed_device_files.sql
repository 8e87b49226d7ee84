-- Rendered configs carry every secret of a device (its credential, its lines' SIP passwords,
-- users' PINs, access codes): they are stored AES-GCM encrypted under the vault key
-- (provisioner/sealing.py). Rows written before this migration are in clear (sealed = false)
-- until the start-up pass that needs the key seals them; readers accept both.
ALTER TABLE device_files ADD COLUMN sealed boolean NOT NULL DEFAULT false;
CREATE INDEX device_files_clear_idx ON device_files (mac) WHERE NOT sealed;
