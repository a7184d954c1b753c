-- Issue 17. A processed chunk keeps its own counts instead of adding them to its job's row:
-- every chunk of a job updating that one row made the chunk commits of all workers wait on
-- each other's row lock. A job's counts are its row's (jobs from before, dead letters and
-- planning failures) plus those of its chunks with tallied = 1.
ALTER TABLE job_chunks ADD COLUMN tallied INTEGER NOT NULL DEFAULT 0;
ALTER TABLE job_chunks ADD COLUMN created BIGINT NOT NULL DEFAULT 0;
ALTER TABLE job_chunks ADD COLUMN already_present BIGINT NOT NULL DEFAULT 0;
ALTER TABLE job_chunks ADD COLUMN skipped BIGINT NOT NULL DEFAULT 0;
ALTER TABLE job_chunks ADD COLUMN failed BIGINT NOT NULL DEFAULT 0;
-- Whether a job has chunks still to settle is one probe of this index, not a walk over the
-- job's settled chunks (each chunk asks, after its commit).
CREATE INDEX job_chunks_unsettled ON job_chunks (job_id) WHERE state IN ('planned', 'published');
