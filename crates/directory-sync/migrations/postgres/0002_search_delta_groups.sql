-- Search columns compare byte-wise (lower-cased already), so a prefix is an index range
-- whatever the database's collation, and listing order is the same on every server.
DROP INDEX directory_users_by_name;
DROP INDEX directory_users_by_upn;
DROP INDEX directory_users_by_mail;
DROP INDEX directory_users_by_name_prefix;
ALTER TABLE directory_users
    ALTER COLUMN search_name TYPE TEXT COLLATE "C",
    ALTER COLUMN search_upn TYPE TEXT COLLATE "C",
    ALTER COLUMN search_mail TYPE TEXT COLLATE "C";
CREATE INDEX directory_users_by_name ON directory_users (tenant_id, search_name, object_id);
CREATE INDEX directory_users_by_upn ON directory_users (tenant_id, search_upn);
CREATE INDEX directory_users_by_mail ON directory_users (tenant_id, search_mail);

-- The delta cursor of each directory: the whole deltaLink, as Graph returned it.
CREATE TABLE directory_sync_state (
    tenant_id     TEXT   PRIMARY KEY,
    delta_link    TEXT   NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- Groups whose transitive user members are mirrored, and those members.
CREATE TABLE directory_groups (
    tenant_id      TEXT   NOT NULL,
    group_id       TEXT   NOT NULL,
    display_name   TEXT   NOT NULL,
    member_count   BIGINT NOT NULL,
    synced_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, group_id)
);

CREATE TABLE directory_group_members (
    tenant_id TEXT NOT NULL,
    group_id  TEXT NOT NULL,
    object_id TEXT NOT NULL,
    seen_run  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, group_id, object_id)
);
CREATE INDEX directory_group_members_by_user ON directory_group_members (tenant_id, object_id);
