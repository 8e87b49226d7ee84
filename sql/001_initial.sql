-- Users, their credentials, sessions, audit log, and the device tables that PIN changes fan out to.

CREATE TABLE users (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username              text NOT NULL UNIQUE,
    display_name          text NOT NULL,
    extension             text UNIQUE,
    email                 text,
    auth_backend          text NOT NULL DEFAULT 'local'
                          CHECK (auth_backend IN ('local', 'ldap', 'saml')),
    role                  text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    language              text NOT NULL DEFAULT 'de' CHECK (language IN ('de', 'en')),
    -- PIN: argon2id verifier for checks, AES-GCM ciphertext for templates that must carry it.
    pin_hash              text,
    pin_encrypted         bytea,
    pin_changed_at        timestamptz,
    pin_failures          integer NOT NULL DEFAULT 0,
    pin_lockouts          integer NOT NULL DEFAULT 0,
    pin_locked_until      timestamptz,
    -- Client password (local backend only): argon2id hash.
    password_hash         text,
    password_changed_at   timestamptz,
    must_change_password  boolean NOT NULL DEFAULT false,
    -- Bumped by every password change: tokens issued under an older version are dead.
    credential_version    integer NOT NULL DEFAULT 1,
    login_failures        integer NOT NULL DEFAULT 0,
    login_locked_until    timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    token_hash            bytea PRIMARY KEY,
    user_id               bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_version    integer NOT NULL,
    impersonator_id       bigint REFERENCES users (id) ON DELETE CASCADE,
    impersonator_version  integer,
    password_change_only  boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    expires_at            timestamptz NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

CREATE TABLE audit_log (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at                    timestamptz NOT NULL DEFAULT now(),
    actor                 text,
    impersonator          text,
    target_user           text,
    action                text NOT NULL,
    source                text,
    details               jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_target_idx ON audit_log (target_user, at);
CREATE INDEX audit_log_action_idx ON audit_log (action, at);
CREATE INDEX audit_log_at_idx ON audit_log (at);

CREATE TABLE devices (
    mac                   text PRIMARY KEY CHECK (mac ~ '^[0-9a-f]{12}$'),
    vendor                text NOT NULL,
    model                 text NOT NULL,
    kind                  text NOT NULL CHECK (kind IN ('desk', 'dect')),
    label                 text NOT NULL DEFAULT '',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- A user on a line of a desk phone or a handset of a DECT system.
CREATE TABLE device_assignments (
    mac                   text NOT NULL REFERENCES devices (mac) ON DELETE CASCADE,
    slot                  integer NOT NULL CHECK (slot >= 1),
    user_id               bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    ipui                  text,
    PRIMARY KEY (mac, slot)
);
CREATE INDEX device_assignments_user_idx ON device_assignments (user_id);

-- Outbox: one open job per device; later changes fold into it.
CREATE TABLE push_jobs (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mac                   text NOT NULL REFERENCES devices (mac) ON DELETE CASCADE,
    state                 text NOT NULL DEFAULT 'pending'
                          CHECK (state IN ('pending', 'notified', 'fetched', 'failed')),
    reason                text NOT NULL,
    attempts              integer NOT NULL DEFAULT 0,
    last_error            text,
    not_before            timestamptz NOT NULL DEFAULT now(),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX push_jobs_one_open_per_device ON push_jobs (mac)
    WHERE state IN ('pending', 'notified');
CREATE INDEX push_jobs_state_idx ON push_jobs (state, not_before);
