-- Issue 17. An imported user's feed entry is its own row: users.feed_seq is the number of the
-- transaction that created it, and import_feed keeps only deletions (see the Postgres
-- migration of the same name for why).
ALTER TABLE users ADD COLUMN feed_seq INTEGER NOT NULL DEFAULT 1;
UPDATE users SET feed_seq = coalesce((SELECT f.seq FROM import_feed f
    WHERE f.tenant_id = users.tenant_id AND f.object_id = users.object_id AND f.imported), 1);
CREATE INDEX users_by_feed ON users (tenant_id, feed_seq, object_id);
DELETE FROM import_feed WHERE imported;
