-- Imports the worker ran or runs: select imports (answered in the request) and, later, batch
-- jobs. Counts are exact: every requested user is in exactly one of them.
CREATE TABLE jobs (
    job_id          TEXT   PRIMARY KEY,
    kind            TEXT   NOT NULL CHECK (kind IN ('select', 'batch', 'run_now')),
    status          TEXT   NOT NULL CHECK (status IN ('queued', 'planning', 'running', 'completed', 'failed', 'cancelled')),
    company         TEXT   NOT NULL,
    created_by      TEXT   NOT NULL,
    planned         BIGINT NOT NULL,
    created         BIGINT NOT NULL,
    already_present BIGINT NOT NULL,
    skipped         BIGINT NOT NULL,
    failed          BIGINT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    started_at_ms   BIGINT NOT NULL,
    finished_at_ms  BIGINT NOT NULL,
    error           TEXT   NOT NULL
);
CREATE INDEX jobs_by_creation ON jobs (created_at_ms);

-- Every user of a job that was not created, with the reason (the job's report).
CREATE TABLE job_outcomes (
    job_id    TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    object_id TEXT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('already_present', 'skipped', 'failed')),
    user_id   TEXT NOT NULL,
    reason    TEXT NOT NULL,
    PRIMARY KEY (job_id, object_id)
);
