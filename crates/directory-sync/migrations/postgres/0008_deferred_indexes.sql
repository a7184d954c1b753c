-- Issue 17. A tenant's first full round loads an empty mirror with its search indexes set
-- aside and builds them once the users are in: a sorted build of each index is many times
-- cheaper than a million random inserts into eight wide ones. The definitions wait here
-- (written in the transaction that drops the indexes) until they are built again, so a
-- process that dies mid-load rebuilds them at its next start.
CREATE TABLE directory_deferred_indexes (
    name       TEXT PRIMARY KEY,
    definition TEXT NOT NULL
);
