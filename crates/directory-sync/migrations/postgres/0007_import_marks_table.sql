-- Issue 17. The imported marks move out of directory_users into a narrow table of their own.
-- A mark changes a column the not-imported index is conditioned on, so Postgres writes a new
-- row version and a new entry in every index of the row's table: on directory_users that
-- was ten indexes per marked user, a third of the Postgres time of a batch import. Here it is
-- one narrow row and its key. A row exists for every mirror user (written when the user is
-- first mirrored, its name kept in step); search_name is the listing's order.
CREATE TABLE directory_import_marks (
    tenant_id   TEXT    NOT NULL,
    object_id   TEXT    NOT NULL,
    search_name TEXT    NOT NULL,
    imported    BOOLEAN NOT NULL DEFAULT false,
    -- The registry feed number of the change the mark came from (0: none); a change applies
    -- only over an older one.
    seq         BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, object_id)
);
INSERT INTO directory_import_marks (tenant_id, object_id, search_name, imported, seq)
SELECT tenant_id, object_id, search_name, imported, imported_seq FROM directory_users;
CREATE INDEX directory_import_marks_not_imported
    ON directory_import_marks (tenant_id, search_name, object_id) WHERE imported = false;
DROP INDEX directory_users_not_imported;
ALTER TABLE directory_users DROP COLUMN imported;
ALTER TABLE directory_users DROP COLUMN imported_seq;
