-- SQLite twin of the Postgres migration (booleans, counts and timestamps are INTEGER).
-- Batch jobs: scope, the D365 batch options, planning state (a lease so a replica that dies
-- mid-planning is replaced, and a cursor so its successor resumes), and progress counters
-- that chunk results update in their own transaction.
ALTER TABLE jobs ADD COLUMN scope_group TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN batch_group TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN critical INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN monitoring_category TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN chunks_planned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN chunks_done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN chunks_dead_lettered INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN planning_done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN plan_cursor TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN lease_expires_at_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_to_plan ON jobs (status, lease_expires_at_ms);

-- Every chunk a planner cut: the object id range it covers (after, last], how many users,
-- and where it stands. (job_id, seq) makes a chunk's result count once, however often the
-- chunk is delivered.
CREATE TABLE job_chunks (
    job_id          TEXT   NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    after_object_id TEXT   NOT NULL,
    last_object_id  TEXT   NOT NULL,
    users           INTEGER NOT NULL,
    state           TEXT   NOT NULL CHECK (state IN ('planned', 'published', 'done', 'dead_lettered', 'discarded')),
    processed_at_ms INTEGER NOT NULL DEFAULT 0,
    error           TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

-- Messages of a job that could not be read at all and went to the dead-letter queue.
CREATE TABLE job_dead_letters (
    job_id     TEXT   NOT NULL,
    message_id TEXT   NOT NULL,
    error      TEXT   NOT NULL,
    at_ms      INTEGER NOT NULL,
    PRIMARY KEY (job_id, message_id)
) WITHOUT ROWID;
