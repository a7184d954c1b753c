-- SQLite twin of the Postgres migration (issue 15): booleans are INTEGER. The partial index's
-- condition is written as the listing writes it (`imported = false`), which SQLite needs to
-- use it.
ALTER TABLE directory_users ADD COLUMN imported INTEGER NOT NULL DEFAULT 0;
ALTER TABLE directory_users ADD COLUMN imported_seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX directory_users_not_imported ON directory_users (tenant_id, search_name, object_id)
    WHERE deletion_state = 'present' AND imported = false;

CREATE TABLE import_feed_positions (
    tenant_id TEXT    PRIMARY KEY,
    seq       INTEGER NOT NULL,
    object_id TEXT    NOT NULL
) WITHOUT ROWID;
