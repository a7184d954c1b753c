-- Companies (D365 legal entities). DAT exists from the start, as in D365.
CREATE TABLE companies (
    code          TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
INSERT INTO companies (code, name, created_at_ms) VALUES ('DAT', 'Default company', 0);

-- Users, keyed by the directory identity. user_key is the case-insensitive uniqueness key of
-- user_id; both are set once at import and changed only by an explicit rename. company has
-- no foreign key (a per-row trigger on the bulk path): imports lock the company row instead,
-- and companies are never deleted.
CREATE TABLE users (
    tenant_id         TEXT    NOT NULL,
    object_id         TEXT    NOT NULL,
    user_id           TEXT    NOT NULL,
    user_key          TEXT    NOT NULL,
    network_alias     TEXT    NOT NULL,
    network_domain    TEXT    NOT NULL,
    email             TEXT    NOT NULL,
    name              TEXT    NOT NULL,
    enabled           BOOLEAN NOT NULL,
    company           TEXT    NOT NULL,
    account_type      TEXT    NOT NULL CHECK (account_type IN ('member', 'guest')),
    created_at_ms     BIGINT  NOT NULL,
    updated_at_ms     BIGINT  NOT NULL,
    created_by_import TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, object_id),
    CONSTRAINT users_user_key_unique UNIQUE (user_key)
);
CREATE INDEX users_created_by_import ON users (created_by_import);

-- Collision counters: the next suffix number of each base user id that has collided.
CREATE TABLE user_id_families (
    base        TEXT PRIMARY KEY,
    next_suffix BIGINT NOT NULL
);
