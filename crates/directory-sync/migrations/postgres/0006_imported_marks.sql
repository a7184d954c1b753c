-- Issue 15. Which mirror users the registry holds, so the not-imported listing is an index
-- range. The registry stays the authority: a listing confirms every page with CheckImported.
-- imported_seq is the registry feed number of the change the mark came from (0: none); a
-- change applies only over an older one, so replays and racing readers never move a mark back.
ALTER TABLE directory_users ADD COLUMN imported BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE directory_users ADD COLUMN imported_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX directory_users_not_imported ON directory_users (tenant_id, search_name, object_id)
    WHERE deletion_state = 'present' AND imported = false;

-- How far each tenant's marks have followed the registry's import feed.
CREATE TABLE import_feed_positions (
    tenant_id TEXT   PRIMARY KEY,
    seq       BIGINT NOT NULL,
    object_id TEXT   NOT NULL
);
