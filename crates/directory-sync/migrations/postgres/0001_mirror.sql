-- The mirror of the directory's users. Search columns hold lower-cased copies for prefix
-- search; content_hash tells a changed user from an unchanged one during a full sync.
CREATE TABLE directory_users (
    tenant_id           TEXT    NOT NULL,
    object_id           TEXT    NOT NULL,
    user_principal_name TEXT    NOT NULL,
    mail                TEXT    NOT NULL,
    display_name        TEXT    NOT NULL,
    given_name          TEXT    NOT NULL,
    surname             TEXT    NOT NULL,
    account_enabled     BOOLEAN NOT NULL,
    account_type        TEXT    NOT NULL CHECK (account_type IN ('member', 'guest')),
    deletion_state      TEXT    NOT NULL CHECK (deletion_state IN ('present', 'soft_deleted', 'hard_deleted')),
    search_name         TEXT    NOT NULL,
    search_upn          TEXT    NOT NULL,
    search_mail         TEXT    NOT NULL,
    content_hash        BIGINT  NOT NULL,
    first_seen_run      TEXT    NOT NULL,
    last_seen_run       TEXT    NOT NULL,
    changed_run         TEXT    NOT NULL,
    updated_at_ms       BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, object_id)
);
-- Listing is ordered by display name; the search indexes serve prefix matches.
CREATE INDEX directory_users_by_name ON directory_users (tenant_id, search_name, object_id);
CREATE INDEX directory_users_by_upn ON directory_users (tenant_id, search_upn text_pattern_ops);
CREATE INDEX directory_users_by_mail ON directory_users (tenant_id, search_mail text_pattern_ops);
CREATE INDEX directory_users_by_name_prefix ON directory_users (tenant_id, search_name text_pattern_ops);

-- One row per sync round.
CREATE TABLE sync_runs (
    run_id         TEXT   PRIMARY KEY,
    tenant_id      TEXT   NOT NULL,
    mode           TEXT   NOT NULL CHECK (mode IN ('full', 'delta')),
    status         TEXT   NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'awaiting_approval', 'rejected')),
    started_at_ms  BIGINT NOT NULL,
    finished_at_ms BIGINT NOT NULL,
    users_seen     BIGINT NOT NULL,
    users_created  BIGINT NOT NULL,
    users_updated  BIGINT NOT NULL,
    users_removed  BIGINT NOT NULL,
    users_rejected BIGINT NOT NULL,
    error          TEXT   NOT NULL
);
CREATE INDEX sync_runs_by_start ON sync_runs (started_at_ms);
