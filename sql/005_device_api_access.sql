-- How to reach a device's own management API (a Mitel OMM's OM AXI), for vendors whose
-- changes are pushed through that API rather than by making the device fetch.
CREATE TABLE device_api_access (
    mac                   text PRIMARY KEY REFERENCES devices (mac) ON DELETE CASCADE,
    host                  text NOT NULL,
    port                  integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    username              text NOT NULL,
    password_encrypted    bytea NOT NULL,
    -- SHA-256 of the device's TLS certificate (DER), lower-case hex; NULL: verify against CAs.
    fingerprint           text CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
