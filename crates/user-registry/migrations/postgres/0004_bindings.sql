-- Issue 14. Trust boundaries.

-- The service identity that made a change for the person in `actor` ('' when the actor
-- called directly), so the trail names both.
ALTER TABLE audit_events ADD COLUMN service TEXT NOT NULL DEFAULT '';

-- Every import id, bound at its first call to who sent it (principal: the authenticated
-- caller; actor: the person it is for), its company and whether it is a private job. A later
-- call with the same id differing in any of them is refused, so an id cannot be borrowed to
-- record users against someone else's job. private imports' users and events are shown to
-- their actor (and service identities) only.
CREATE TABLE imports (
    import_id     TEXT    PRIMARY KEY,
    principal     TEXT    NOT NULL,
    actor         TEXT    NOT NULL,
    company       TEXT    NOT NULL,
    private       BOOLEAN NOT NULL,
    created_at_ms BIGINT  NOT NULL
);

-- The group-to-role rules import-worker holds, as it registered them: ApplyRuleGrants grants
-- only under a registered, unretired rule and only its role in its company. role_id is the
-- catalog's id; company is '' for every company.
CREATE TABLE role_rules (
    rule_id          TEXT    PRIMARY KEY,
    role_id          TEXT    NOT NULL REFERENCES roles (role_id),
    company          TEXT    NOT NULL,
    retired          BOOLEAN NOT NULL,
    registered_by    TEXT    NOT NULL,
    registered_at_ms BIGINT  NOT NULL
);
