-- Plug-and-play discovery (issue 12): phones of a known vendor that fetched with the bootstrap
-- credential for a MAC no device has, listed for an admin to adopt (POST /api/v1/devices).
-- Written only by provisioner/discovery.py, under an advisory lock that serialises its writes:
-- at most one new row per source address a minute, at most 1,000 rows per site (the least
-- recently seen go first). Every text comes from a phone's request: bounded here as well.
CREATE TABLE discovered_devices (
    mac         text PRIMARY KEY CHECK (mac ~ '^[0-9a-f]{12}$'),
    site        text NOT NULL DEFAULT 'default' REFERENCES sites (name) ON DELETE CASCADE,
    vendor      text NOT NULL CHECK (length(vendor) <= 32),
    -- As the User-Agent names it; NULL when it names none.
    model       text CHECK (length(model) <= 64),
    firmware    text CHECK (length(firmware) <= 64),
    source      text NOT NULL CHECK (length(source) <= 64),
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);
-- "Did this source add a row within the last minute?" and "which rows of a site go first?".
CREATE INDEX discovered_devices_source_idx ON discovered_devices (source, first_seen);
CREATE INDEX discovered_devices_site_seen_idx ON discovered_devices (site, last_seen);
