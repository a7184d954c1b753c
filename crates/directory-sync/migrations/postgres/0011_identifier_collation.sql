-- Issue 17. Identifiers compare byte by byte (collation "C"), whatever the database's default
-- collation is, as the search columns already do (migration 0002): tenant, user and group ids
-- are GUIDs whose order carries no language, and byte order is the order Rust compares them
-- in. Under a language collation (the C.UTF-8 or en_US.utf8 of a stock Postgres image) every
-- B-tree comparison of these keys copies both strings and calls strcoll; in "C" it is one
-- memcmp. Every column joined with another changes with it, or the join could not use the
-- other's index. The not-imported names sort as the mirror's names do. No table is rewritten
-- (the type stays text); the indexes on these columns are rebuilt under each table's lock,
-- about 16 s per million users on two cores.
ALTER TABLE directory_users
    ALTER COLUMN tenant_id TYPE TEXT COLLATE "C",
    ALTER COLUMN object_id TYPE TEXT COLLATE "C";
ALTER TABLE directory_not_imported
    ALTER COLUMN tenant_id TYPE TEXT COLLATE "C",
    ALTER COLUMN object_id TYPE TEXT COLLATE "C",
    ALTER COLUMN search_name TYPE TEXT COLLATE "C";
ALTER TABLE directory_groups
    ALTER COLUMN tenant_id TYPE TEXT COLLATE "C",
    ALTER COLUMN group_id TYPE TEXT COLLATE "C";
ALTER TABLE directory_group_members
    ALTER COLUMN tenant_id TYPE TEXT COLLATE "C",
    ALTER COLUMN group_id TYPE TEXT COLLATE "C",
    ALTER COLUMN object_id TYPE TEXT COLLATE "C";
ALTER TABLE import_feed_positions
    ALTER COLUMN tenant_id TYPE TEXT COLLATE "C",
    ALTER COLUMN object_id TYPE TEXT COLLATE "C";
