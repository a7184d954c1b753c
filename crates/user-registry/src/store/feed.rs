//! The import-state feed (issue 15): which users became imported or were deleted, in commit
//! order, for directory-sync's imported marks.
//!
//! An imported user's entry is its own row: `users.feed_seq` is the number of the transaction
//! that created it. A deletion leaves a row in `import_feed` (imported = false) under the
//! number of the transaction that deleted. A reader reads both in (number, object id) order,
//! so a user deleted and imported again shows both, the later last. (A separate feed row per
//! imported user cost about as much again as its audit row; BENCHMARKS.md.)
//!
//! The numbering makes one promise: once a reader has read up to a position, nothing can
//! later commit below it. On Postgres the number is the writing transaction's own id
//! (`pg_current_xact_id()`, 64 bits, never wrapping), and a reader only reads numbers below
//! the oldest transaction still running when its statement began (`pg_snapshot_xmin`):
//! every transaction below that has ended, so what it wrote is visible or was rolled back,
//! and every transaction that has not ended has a number at or above it. Writers share
//! nothing: a counter row held to commit serialised every import's commit behind the one
//! before (ImportUsers at 8 in flight fell from 19,894 to 6,580 users/s). A transaction left
//! open anywhere on the server holds readers back until it ends, which delays marks, never
//! loses them.
//!
//! SQLite runs one write transaction at a time, so there a counter row (`import_feed_head`),
//! moved once per transaction by [`number_transaction`], costs nothing and gives the same
//! promise.

use std::sync::LazyLock;

use anyhow::Context as _;
use service_runtime::storage::{Backend, Dialects, flag, rows_from, rows_text};
use sqlx::{AnyConnection, Row as _};

use crate::error::Error;

/// One change of a user's import state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportChange {
    pub seq: i64,
    pub object_id: String,
    pub imported: bool,
}

static NEXT_SEQ: &str = "UPDATE import_feed_head SET seq = seq + 1 WHERE id = 1";

/// This transaction's feed number, as an SQL expression (see the module's comment); on SQLite
/// valid after [`number_transaction`].
pub fn transaction_number(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "pg_current_xact_id()::text::bigint",
        Backend::Sqlite => "(SELECT seq FROM import_feed_head WHERE id = 1)",
    }
}

/// Gives this transaction its feed number before its first change of import state: on
/// SQLite the next count of the head row, on Postgres nothing (the number is its id).
pub async fn number_transaction(conn: &mut AnyConnection, backend: Backend) -> Result<(), Error> {
    if backend == Backend::Sqlite {
        sqlx::query(NEXT_SEQ)
            .execute(conn)
            .await
            .map_err(Error::internal("take the next import feed number"))?;
    }
    Ok(())
}

static RECORD_DELETIONS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("tenant_id", "text"), ("object_id", "text")]);
        let seq = transaction_number(backend);
        let deleted = match backend {
            Backend::Postgres => "false",
            Backend::Sqlite => "0",
        };
        // `WHERE true` resolves SQLite's upsert parsing ambiguity.
        format!(
            "INSERT INTO import_feed (tenant_id, object_id, seq, imported) \
             SELECT r.tenant_id, r.object_id, {seq}, {deleted} FROM {rows} WHERE true \
             ON CONFLICT (tenant_id, object_id) DO UPDATE SET seq = excluded.seq, \
             imported = excluded.imported"
        )
    })
});

/// Records that these users (tenant, object id) were deleted, under this transaction's feed
/// number (taken here).
pub async fn record_deletions(
    conn: &mut AnyConnection,
    backend: Backend,
    users: &[(&str, &str)],
) -> Result<(), Error> {
    if users.is_empty() {
        return Ok(());
    }
    number_transaction(conn, backend).await?;
    let param =
        rows_text(backend, users.iter().map(|(t, o)| [*t, *o])).context("encode deletions")?;
    sqlx::query(RECORD_DELETIONS.get(backend))
        .bind(param)
        .execute(&mut *conn)
        .await
        .map_err(Error::internal("record deletions"))?;
    Ok(())
}

static READ_FEED: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        // Only numbers of transactions that have ended (see the module's comment).
        let settled = |column: &str| match backend {
            Backend::Postgres => {
                format!("AND {column} < pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            }
            Backend::Sqlite => String::new(),
        };
        let imported = match backend {
            Backend::Postgres => "true",
            Backend::Sqlite => "1",
        };
        // Each side cut to a page in its own index order before the merge.
        format!(
            "SELECT seq, object_id, imported FROM (\
             SELECT * FROM (SELECT feed_seq AS seq, object_id, {imported} AS imported FROM users \
             WHERE tenant_id = $1 AND (feed_seq, object_id) > ($2, $3) {users_settled} \
             ORDER BY feed_seq, object_id LIMIT $4) AS imports \
             UNION ALL \
             SELECT * FROM (SELECT seq, object_id, imported FROM import_feed \
             WHERE tenant_id = $1 AND (seq, object_id) > ($2, $3) {feed_settled} \
             ORDER BY seq, object_id LIMIT $4) AS deletions\
             ) AS changes ORDER BY seq, object_id LIMIT $4",
            users_settled = settled("feed_seq"),
            feed_settled = settled("seq"),
        )
    })
});

/// The tenant's changes after the position (`after_seq`, `after_object_id`), in position
/// order, at most `limit`.
pub async fn import_changes_after(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    after_seq: i64,
    after_object_id: &str,
    limit: u32,
) -> Result<Vec<ImportChange>, Error> {
    // A row-value comparison, which both backends read as one range of the (tenant, seq,
    // object id) index; SQLite scanned the whole feed for the equivalent OR.
    let rows = sqlx::query(READ_FEED.get(backend))
        .bind(tenant_id)
        .bind(after_seq)
        .bind(after_object_id)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await
        .map_err(Error::internal("read import changes"))?;
    rows.iter()
        .map(|row| {
            Ok(ImportChange {
                seq: row.try_get("seq")?,
                object_id: row.try_get("object_id")?,
                imported: flag(row, "imported")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::internal("read import changes"))
}
