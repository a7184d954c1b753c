-- SQLite twin of the Postgres migration (issue 17): the users not (yet) known imported, a
-- row each; marking a user imported deletes its row.
CREATE TABLE directory_not_imported (
    tenant_id   TEXT    NOT NULL,
    object_id   TEXT    NOT NULL,
    search_name TEXT    NOT NULL,
    seq         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, object_id)
) WITHOUT ROWID;
INSERT INTO directory_not_imported (tenant_id, object_id, search_name, seq)
SELECT tenant_id, object_id, search_name, seq FROM directory_import_marks WHERE imported = 0;
CREATE INDEX directory_not_imported_by_name
    ON directory_not_imported (tenant_id, search_name, object_id);
DROP TABLE directory_import_marks;
