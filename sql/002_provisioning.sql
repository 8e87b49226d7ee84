-- Sites, device credentials, SIP accounts per line, rendered revisions and fetch records.

CREATE TABLE sites (
    name                  text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    registrar_host        text NOT NULL DEFAULT '',
    registrar_port        integer NOT NULL DEFAULT 5060 CHECK (registrar_port BETWEEN 1 AND 65535),
    transport             text NOT NULL DEFAULT 'udp' CHECK (transport IN ('udp', 'tcp', 'tls')),
    timezone              text NOT NULL DEFAULT 'Europe/Berlin',
    language              text NOT NULL DEFAULT 'de' CHECK (language IN ('de', 'en')),
    ntp_server            text NOT NULL DEFAULT 'pool.ntp.org',
    updated_at            timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sites (name) VALUES ('default');

-- Installation-wide secrets generated on first start (the phones' bootstrap credential).
CREATE TABLE generated_secrets (
    name                  text PRIMARY KEY,
    username              text NOT NULL,
    secret_encrypted      bytea NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE devices
    ADD COLUMN site text NOT NULL DEFAULT 'default' REFERENCES sites (name),
    -- The device's own provisioning password (AES-GCM); its username is the MAC.
    ADD COLUMN credential_encrypted bytea,
    -- Until the device fetched with its own credential, the site-wide bootstrap one opens it.
    ADD COLUMN bootstrap_allowed boolean NOT NULL DEFAULT true,
    ADD COLUMN revision integer NOT NULL DEFAULT 0,
    ADD COLUMN revision_hash text,
    ADD COLUMN rendered_at timestamptz,
    ADD COLUMN render_error text,
    ADD COLUMN render_error_at timestamptz,
    ADD COLUMN last_fetch_at timestamptz,
    ADD COLUMN last_fetch_revision integer,
    ADD COLUMN last_fetch_file text,
    ADD COLUMN last_fetch_source text;

ALTER TABLE device_assignments
    ADD COLUMN sip_user text NOT NULL DEFAULT '',
    ADD COLUMN sip_auth_user text NOT NULL DEFAULT '',
    ADD COLUMN sip_password_encrypted bytea;
CREATE UNIQUE INDEX device_assignments_sip_auth_user_idx ON device_assignments (sip_auth_user)
    WHERE sip_auth_user <> '';

-- The last good rendered revision of each device, file by file.
CREATE TABLE device_files (
    mac                   text NOT NULL REFERENCES devices (mac) ON DELETE CASCADE,
    name                  text NOT NULL,
    body                  bytea NOT NULL,
    etag                  text NOT NULL,
    PRIMARY KEY (mac, name)
);

CREATE TABLE device_fetches (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mac                   text NOT NULL REFERENCES devices (mac) ON DELETE CASCADE,
    file                  text NOT NULL,
    revision              integer NOT NULL,
    at                    timestamptz NOT NULL,
    source                text NOT NULL
);
CREATE INDEX device_fetches_mac_idx ON device_fetches (mac, at);
