-- Issue 17. Search indexes set aside during a first full round (Postgres only; SQLite keeps
-- its indexes, so this table stays empty here). Kept on both backends so their migrations
-- stay in step.
CREATE TABLE directory_deferred_indexes (
    name       TEXT PRIMARY KEY,
    definition TEXT NOT NULL
);
