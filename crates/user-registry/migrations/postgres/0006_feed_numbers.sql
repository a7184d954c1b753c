-- Issue 17. On Postgres the import feed is numbered by the writing transaction's id
-- (pg_current_xact_id), and readers stop below the oldest transaction still running; the
-- counter row, whose lock every import held to its commit, serialised all imports' commits.
-- Every number handed out so far is below every transaction id to come (each came from a
-- transaction of its own), so positions already read stay valid.
DROP TABLE import_feed_head;
