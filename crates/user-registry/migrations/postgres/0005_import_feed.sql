-- Issue 15. The import-state feed directory-sync follows to keep its mirror's imported marks.

-- One row per user whose import state ever changed: its latest state and the sequence number
-- of the transaction that set it. A re-import after a delete moves the row to a later seq.
CREATE TABLE import_feed (
    tenant_id TEXT    NOT NULL,
    object_id TEXT    NOT NULL,
    seq       BIGINT  NOT NULL,
    imported  BOOLEAN NOT NULL,
    PRIMARY KEY (tenant_id, object_id)
);
CREATE INDEX import_feed_by_seq ON import_feed (tenant_id, seq, object_id);

-- The last sequence number handed out. A transaction that changes import state increments it
-- as its last write; the row lock, held to commit, makes sequence order commit order.
CREATE TABLE import_feed_head (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT  NOT NULL
);
INSERT INTO import_feed_head (id, seq) VALUES (1, 0);

-- Users imported before the feed existed, all at seq 1.
UPDATE import_feed_head SET seq = 1;
INSERT INTO import_feed (tenant_id, object_id, seq, imported)
SELECT tenant_id, object_id, 1, true FROM users;
