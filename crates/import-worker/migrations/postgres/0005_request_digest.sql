-- Issue 14. A select import's request id is an idempotency key of one caller's one request:
-- the job records a digest of what was asked (company and object ids), and the same key sent
-- again with anything else is refused. '' for jobs from before, and for batch jobs.
ALTER TABLE jobs ADD COLUMN request_digest TEXT NOT NULL DEFAULT '';
