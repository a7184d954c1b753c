-- Issue 8. A grant carries its source: '' for an administrator's grant, 'rule:<rule id>' for
-- one a group-to-role rule made. Each source holds its own row, so a rule revokes exactly the
-- grants it made and never an administrator's (or another rule's) grant of the same role.
ALTER TABLE role_assignments ADD COLUMN source TEXT NOT NULL DEFAULT '';
ALTER TABLE role_assignments DROP CONSTRAINT role_assignments_pkey;
ALTER TABLE role_assignments ADD PRIMARY KEY (tenant_id, object_id, role_id, company, source);
CREATE INDEX role_assignments_source ON role_assignments (source, tenant_id, object_id);

-- When the directory hard-deleted the user; NULL while it has not. The user is kept (deleting
-- is a separate, opt-in policy).
ALTER TABLE users ADD COLUMN deleted_in_directory_at_ms BIGINT;
