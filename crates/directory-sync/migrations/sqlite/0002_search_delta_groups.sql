-- SQLite twin of the Postgres migration. Its default collation is already byte-wise.

-- The delta cursor of each directory: the whole deltaLink, as Graph returned it.
CREATE TABLE directory_sync_state (
    tenant_id     TEXT    PRIMARY KEY,
    delta_link    TEXT    NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Groups whose transitive user members are mirrored, and those members.
CREATE TABLE directory_groups (
    tenant_id      TEXT    NOT NULL,
    group_id       TEXT    NOT NULL,
    display_name   TEXT    NOT NULL,
    member_count   INTEGER NOT NULL,
    synced_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, group_id)
) WITHOUT ROWID;

CREATE TABLE directory_group_members (
    tenant_id TEXT NOT NULL,
    group_id  TEXT NOT NULL,
    object_id TEXT NOT NULL,
    seen_run  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, group_id, object_id)
) WITHOUT ROWID;
CREATE INDEX directory_group_members_by_user ON directory_group_members (tenant_id, object_id);
