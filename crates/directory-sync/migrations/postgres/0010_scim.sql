-- Issue 18. Resources Entra's provisioning service pushes over SCIM, as last written: a User's
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
    version     BIGINT NOT NULL,
    created_ms  BIGINT NOT NULL,
    modified_ms BIGINT NOT NULL,
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
    created_ms   BIGINT NOT NULL,
    created_by   TEXT   NOT NULL,
    last_used_ms BIGINT,
    revoked_ms   BIGINT
);

-- SCIM rounds are sync runs of their own mode.
ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_mode_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_mode_check CHECK (mode IN ('full', 'delta', 'scim'));
