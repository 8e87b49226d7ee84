-- When a push job last became pending: the debounce of a burst is capped from then, so a job
-- re-opened after a notification waits out the rest of the burst too.
ALTER TABLE push_jobs ADD COLUMN pending_since timestamptz NOT NULL DEFAULT now();
