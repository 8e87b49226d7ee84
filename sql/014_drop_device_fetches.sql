-- A row per fetch was a log nobody read (issue 14, "Fetch records"). What delivery confirmation
-- and the admin pages need stays on the device row: last_fetch_file/revision/at/source (the
-- last-seen time written about once a minute per device) and fetched_revision.
DROP TABLE device_fetches;
