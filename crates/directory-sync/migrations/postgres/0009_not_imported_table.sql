-- Issue 17. The marks become a table of the users not (yet) known imported: marking a user
-- imported deletes its row instead of updating it. An update of `imported` changed the partial
-- index's condition, so Postgres wrote a new row version and a new primary-key entry for every
-- imported user (about 20 µs each in a batch of 50,000); a delete writes no index entry (about
-- 11 µs). `seq` is the registry feed number of the change that last (re)added the row (0: the
-- user was just mirrored); a listing's confirmation deletes only rows no newer than the feed
-- number it had followed.
CREATE TABLE directory_not_imported (
    tenant_id   TEXT   NOT NULL,
    object_id   TEXT   NOT NULL,
    search_name TEXT   NOT NULL,
    seq         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, object_id)
);
INSERT INTO directory_not_imported (tenant_id, object_id, search_name, seq)
SELECT tenant_id, object_id, search_name, seq FROM directory_import_marks WHERE imported = false;
CREATE INDEX directory_not_imported_by_name
    ON directory_not_imported (tenant_id, search_name, object_id);
DROP TABLE directory_import_marks;
