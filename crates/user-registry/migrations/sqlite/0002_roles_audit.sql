-- Security roles (D365 "Security roles"); a seeded catalog, read-only through the API.
-- all_companies: a grant of the role always covers every company (System administrator,
-- System user); otherwise a grant names one company or, left empty, covers them all.
CREATE TABLE roles (
    role_id       TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    description   TEXT    NOT NULL,
    all_companies INTEGER NOT NULL
);
INSERT INTO roles (role_id, name, description, all_companies) VALUES
    ('SYSADMIN', 'System administrator', 'Full access to every function and company.', 1),
    ('SYSTEMUSER', 'System user', 'Signs in and uses the common functions every user needs.', 1),
    ('ACCOUNTANT', 'Accountant', 'Records and reviews ledger transactions.', 0),
    ('AP_CLERK', 'Accounts payable clerk', 'Enters and pays vendor invoices.', 0),
    ('AR_CLERK', 'Accounts receivable clerk', 'Records customer invoices and payments.', 0),
    ('HR_ASSISTANT', 'Human resources assistant', 'Maintains worker records.', 0),
    ('PURCHASING_AGENT', 'Purchasing agent', 'Creates and follows purchase orders.', 0),
    ('SALES_CLERK', 'Sales clerk', 'Enters and follows sales orders.', 0);

-- Grants, keyed by the directory identity so a rename keeps them. company is '' for a grant
-- covering every company (a key column cannot be NULL).
CREATE TABLE role_assignments (
    tenant_id     TEXT   NOT NULL,
    object_id     TEXT   NOT NULL,
    role_id       TEXT   NOT NULL REFERENCES roles (role_id),
    company       TEXT   NOT NULL,
    granted_at_ms INTEGER NOT NULL,
    granted_by    TEXT   NOT NULL,
    PRIMARY KEY (tenant_id, object_id, role_id, company),
    FOREIGN KEY (tenant_id, object_id) REFERENCES users (tenant_id, object_id)
);

-- The audit trail: one row per change to a user, written in the change's transaction.
-- user_id is the id when the change happened; (tenant_id, object_id) follows the user
-- through renames. detail is JSON of the changed fields only, never credentials.
CREATE TABLE audit_events (
    event_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms     INTEGER NOT NULL,
    actor     TEXT   NOT NULL,
    action    TEXT   NOT NULL,
    tenant_id TEXT   NOT NULL,
    object_id TEXT   NOT NULL,
    user_id   TEXT   NOT NULL,
    via       TEXT   NOT NULL,
    detail    TEXT   NOT NULL
);
CREATE INDEX audit_events_object ON audit_events (tenant_id, object_id, event_id);
CREATE INDEX audit_events_via ON audit_events (via, event_id);
