-- SQLite twin of the Postgres migration (issue 18). Resources Entra's provisioning service pushes over SCIM, as last written: a User's
-- id is its mirror object id (Entra's objectId when it sends one as externalId), a Group's
-- its group id. The mirror's own tables hold what the rest of the service reads; this keeps
-- the SCIM attributes to answer with, and the names that must stay unique.
CREATE TABLE scim_resources (
    tenant_id   TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    external_id TEXT,
    -- userName of a User, displayName of a Group, lower-cased (unique without case).
    unique_name TEXT   NOT NULL,
    body        TEXT   NOT NULL,
    version     INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    modified_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, kind, id)
);
CREATE UNIQUE INDEX scim_resources_by_name ON scim_resources (tenant_id, kind, unique_name);
CREATE INDEX scim_resources_by_external_id ON scim_resources (tenant_id, kind, external_id);

-- Bearer secrets Entra presents ("Secret Token"), kept as SHA-256 digests; several may be
-- live at once so a secret can be rotated without a gap.
CREATE TABLE scim_tokens (
    token_id     TEXT   PRIMARY KEY,
    tenant_id    TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    digest       TEXT   NOT NULL UNIQUE,
    created_ms   INTEGER NOT NULL,
    created_by   TEXT   NOT NULL,
    last_used_ms INTEGER,
    revoked_ms   INTEGER
);

-- SCIM rounds are sync runs of their own mode; SQLite changes a CHECK by rebuilding the table.
CREATE TABLE sync_runs_new (
    run_id         TEXT   PRIMARY KEY,
    tenant_id      TEXT   NOT NULL,
    mode           TEXT   NOT NULL CHECK (mode IN ('full', 'delta', 'scim')),
    status         TEXT   NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'awaiting_approval', 'rejected')),
    started_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER NOT NULL,
    users_seen     INTEGER NOT NULL,
    users_created  INTEGER NOT NULL,
    users_updated  INTEGER NOT NULL,
    users_removed  INTEGER NOT NULL,
    users_rejected INTEGER NOT NULL,
    error          TEXT   NOT NULL,
    pages_read     INTEGER NOT NULL DEFAULT 0,
    delta_fallback TEXT   NOT NULL DEFAULT '',
    recorded_at_ms INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO sync_runs_new (run_id, tenant_id, mode, status, started_at_ms, finished_at_ms,
    users_seen, users_created, users_updated, users_removed, users_rejected, error, pages_read,
    delta_fallback, recorded_at_ms)
SELECT run_id, tenant_id, mode, status, started_at_ms, finished_at_ms, users_seen,
    users_created, users_updated, users_removed, users_rejected, error, pages_read,
    delta_fallback, recorded_at_ms FROM sync_runs;
DROP TABLE sync_runs;
ALTER TABLE sync_runs_new RENAME TO sync_runs;
CREATE INDEX sync_runs_by_start ON sync_runs (started_at_ms);
CREATE INDEX sync_runs_running ON sync_runs (tenant_id) WHERE status = 'running';
