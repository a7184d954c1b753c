-- Group-to-role rules (issue 8): members of directory group group_id get role_id, in company
-- ('' for every company). The registry keeps each rule's grants under the source
-- 'rule:<rule_id>'. A rule being removed stays, marked, until every grant it made is revoked,
-- so a removal that fails part-way is finished by the next one (or the next reconcile).
CREATE TABLE role_rules (
    rule_id       TEXT    PRIMARY KEY,
    group_id      TEXT    NOT NULL,
    role_id       TEXT    NOT NULL,
    company       TEXT    NOT NULL,
    created_by    TEXT    NOT NULL,
    created_at_ms BIGINT  NOT NULL,
    removing      BOOLEAN NOT NULL DEFAULT false,
    UNIQUE (group_id, role_id, company)
);
