-- Push delivery (leases, target revisions, transports), device reachability, hot desking,
-- and replay protection for the PBX hooks.

ALTER TABLE push_jobs
    ADD COLUMN revision integer,
    ADD COLUMN lease_until timestamptz,
    ADD COLUMN worker text,
    ADD COLUMN transport text,
    ADD COLUMN notified_at timestamptz,
    ADD COLUMN fetched_at timestamptz;
CREATE INDEX push_jobs_claim_idx ON push_jobs (not_before) WHERE state = 'pending';
CREATE INDEX push_jobs_notified_idx ON push_jobs (mac) WHERE state = 'notified';

ALTER TABLE devices
    -- Where the PBX last saw the device register (the `registered` hook).
    ADD COLUMN sip_contact text,
    ADD COLUMN sip_contact_user text,
    ADD COLUMN sip_user_agent text,
    ADD COLUMN registered_at timestamptz,
    ADD COLUMN last_notify_at timestamptz,
    ADD COLUMN last_notify_result text;

-- An assignment made by a PIN login at the phone (hot desking), undone by logout.
ALTER TABLE device_assignments
    ADD COLUMN hotdesk boolean NOT NULL DEFAULT false;

CREATE TABLE hook_signatures (
    signature             text PRIMARY KEY,
    expires_at            timestamptz NOT NULL
);
CREATE INDEX hook_signatures_expires_idx ON hook_signatures (expires_at);
