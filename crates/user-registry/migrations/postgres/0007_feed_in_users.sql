-- Issue 17. An imported user's feed entry is its own row: users.feed_seq is the number of the
-- transaction that created it, and import_feed keeps only deletions. Writing a separate feed
-- row per imported user cost a heap row, two index entries and a speculative insert, about
-- as much again as the user's audit row.
ALTER TABLE users ADD COLUMN feed_seq BIGINT;
UPDATE users SET feed_seq = f.seq FROM import_feed f
WHERE f.tenant_id = users.tenant_id AND f.object_id = users.object_id AND f.imported;
-- Imported before the feed kept their rows (none should be): the start of the feed.
UPDATE users SET feed_seq = 1 WHERE feed_seq IS NULL;
ALTER TABLE users ALTER COLUMN feed_seq SET NOT NULL;
-- Every insert is numbered, whoever writes it.
ALTER TABLE users ALTER COLUMN feed_seq SET DEFAULT pg_current_xact_id()::text::bigint;
CREATE INDEX users_by_feed ON users (tenant_id, feed_seq, object_id);
DELETE FROM import_feed WHERE imported;
