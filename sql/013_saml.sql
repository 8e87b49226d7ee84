-- SAML single sign-on (issue 11). saml_requests: the AuthnRequests this service sent and still
-- awaits an answer to; an answer is taken once, and only to a request listed here (no
-- IdP-initiated sign-on). saml_assertions: every assertion accepted, kept until it expires, so
-- that the same assertion posted again is refused. Both are purged once expired.
CREATE TABLE saml_requests (
    id          text PRIMARY KEY CHECK (length(id) <= 64),
    next_path   text NOT NULL CHECK (length(next_path) <= 2048),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX saml_requests_expires_idx ON saml_requests (expires_at);

CREATE TABLE saml_assertions (
    issuer      text NOT NULL CHECK (length(issuer) <= 1024),
    id          text NOT NULL CHECK (length(id) <= 256),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (issuer, id)
);
CREATE INDEX saml_assertions_expires_idx ON saml_assertions (expires_at);
