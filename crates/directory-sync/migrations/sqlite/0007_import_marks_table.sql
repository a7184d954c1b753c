-- SQLite twin of the Postgres migration (issue 17): booleans are INTEGER; the partial index's
-- condition is written as the listing writes it (`imported = false`), which SQLite needs to
-- use it.
CREATE TABLE directory_import_marks (
    tenant_id   TEXT    NOT NULL,
    object_id   TEXT    NOT NULL,
    search_name TEXT    NOT NULL,
    imported    INTEGER NOT NULL DEFAULT 0,
    seq         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, object_id)
) WITHOUT ROWID;
INSERT INTO directory_import_marks (tenant_id, object_id, search_name, imported, seq)
SELECT tenant_id, object_id, search_name, imported, imported_seq FROM directory_users;
CREATE INDEX directory_import_marks_not_imported
    ON directory_import_marks (tenant_id, search_name, object_id) WHERE imported = false;
DROP INDEX directory_users_not_imported;
ALTER TABLE directory_users DROP COLUMN imported;
ALTER TABLE directory_users DROP COLUMN imported_seq;
