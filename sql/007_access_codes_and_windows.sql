-- DECT access codes as a secret of their own, maintenance windows for devices that restart to
-- apply a configuration, and the push-job state that waits for such a window.

-- The code a DECT handset enters to subscribe to this base (AES-GCM, bound to the MAC); NULL
-- for desk phones, and until the device is first rendered.
ALTER TABLE devices ADD COLUMN access_code_encrypted bytea;

-- "HH:MM-HH:MM" in the site's time zone; a window may run past midnight ("23:00-01:00").
ALTER TABLE sites ADD COLUMN maintenance_window text NOT NULL DEFAULT '02:00-04:00'
    CHECK (maintenance_window ~ '^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$');

-- 'scheduled': rendered, waiting for the site's maintenance window (not_before = its start).
ALTER TABLE push_jobs DROP CONSTRAINT push_jobs_state_check;
ALTER TABLE push_jobs ADD CONSTRAINT push_jobs_state_check
    CHECK (state IN ('pending', 'scheduled', 'notified', 'fetched', 'failed'));
DROP INDEX push_jobs_one_open_per_device;
CREATE UNIQUE INDEX push_jobs_one_open_per_device ON push_jobs (mac)
    WHERE state IN ('pending', 'scheduled', 'notified');
DROP INDEX push_jobs_claim_idx;
CREATE INDEX push_jobs_claim_idx ON push_jobs (not_before) WHERE state IN ('pending', 'scheduled');
