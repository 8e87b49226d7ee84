-- The push workers' claim (store.claim_push_jobs) takes the due jobs in (not_before, id) order,
-- LIMIT the free slots. Indexed on not_before alone, the order needed a sort, and PostgreSQL
-- then read every due job of a backlog to keep a handful: during a burst of 20,000 PIN changes
-- each claim cost grew with the jobs still waiting (issue 14). With id in the index a claim
-- walks the index and stops at its LIMIT.
DROP INDEX push_jobs_claim_idx;
CREATE INDEX push_jobs_claim_idx ON push_jobs (not_before, id) WHERE state IN ('pending', 'scheduled');
