-- Issue 8. A grant carries its source: '' for an administrator's grant, 'rule:<rule id>' for
-- one a group-to-role rule made. Each source holds its own row, so a rule revokes exactly the
-- grants it made and never an administrator's (or another rule's) grant of the same role.
-- SQLite cannot change a primary key in place: the table is rebuilt.
CREATE TABLE role_assignments_new (
    tenant_id     TEXT    NOT NULL,
    object_id     TEXT    NOT NULL,
    role_id       TEXT    NOT NULL REFERENCES roles (role_id),
    company       TEXT    NOT NULL,
    granted_at_ms INTEGER NOT NULL,
    granted_by    TEXT    NOT NULL,
    source        TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, object_id, role_id, company, source),
    FOREIGN KEY (tenant_id, object_id) REFERENCES users (tenant_id, object_id)
);
INSERT INTO role_assignments_new (tenant_id, object_id, role_id, company, granted_at_ms, granted_by)
    SELECT tenant_id, object_id, role_id, company, granted_at_ms, granted_by FROM role_assignments;
DROP TABLE role_assignments;
ALTER TABLE role_assignments_new RENAME TO role_assignments;
CREATE INDEX role_assignments_source ON role_assignments (source, tenant_id, object_id);

-- When the directory hard-deleted the user; NULL while it has not. The user is kept (deleting
-- is a separate, opt-in policy).
ALTER TABLE users ADD COLUMN deleted_in_directory_at_ms INTEGER;
