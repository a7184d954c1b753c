-- SQLite twin of the Postgres migration (issue 15): booleans are INTEGER. SQLite has one
-- writer at a time, so sequence order is commit order by itself.
CREATE TABLE import_feed (
    tenant_id TEXT    NOT NULL,
    object_id TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    imported  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, object_id)
) WITHOUT ROWID;
CREATE INDEX import_feed_by_seq ON import_feed (tenant_id, seq, object_id);

CREATE TABLE import_feed_head (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO import_feed_head (id, seq) VALUES (1, 0);

UPDATE import_feed_head SET seq = 1;
INSERT INTO import_feed (tenant_id, object_id, seq, imported)
SELECT tenant_id, object_id, 1, 1 FROM users;
