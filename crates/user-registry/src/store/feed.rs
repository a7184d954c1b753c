//! The import-state feed (issue 15): which users became imported or were deleted, in commit
//! order, for directory-sync's imported marks.
//!
//! Every transaction that creates or deletes users upserts each user's latest state with a
//! number, and a reader reads in number order. The numbering must make one promise: once a
//! reader has read up to a position, nothing can later commit below it.
//!
//! On Postgres the number is the writing transaction's own id (`pg_current_xact_id()`, 64
//! bits, never wrapping), and a reader only reads numbers below the oldest transaction still
//! running when its statement began (`pg_snapshot_xmin`): every transaction below that has
//! ended, so what it wrote is visible or was rolled back, and every transaction that has not
//! ended has a number at or above it. Writers share nothing: a counter row held to commit
//! serialised every import's commit behind the one before (ImportUsers at 8 in flight fell
//! from 19,894 to 6,580 users/s; BENCHMARKS.md). A transaction left open anywhere in the
//! database holds readers back until it ends, which delays marks, never loses them.
//!
//! SQLite runs one write transaction at a time, so there a counter row (`import_feed_head`)
//! costs nothing and gives the same promise.

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

static NEXT_SEQ: &str = "UPDATE import_feed_head SET seq = seq + 1 WHERE id = 1 RETURNING seq";

static UPSERT_FEED: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("tenant_id", "text"), ("object_id", "text")]);
        let (seq, imported) = match backend {
            Backend::Postgres => (TRANSACTION_NUMBER, "$2::boolean"),
            Backend::Sqlite => ("$3", "$2"),
        };
        // `WHERE true` resolves SQLite's upsert parsing ambiguity.
        format!(
            "INSERT INTO import_feed (tenant_id, object_id, seq, imported) \
             SELECT r.tenant_id, r.object_id, {seq}, {imported} FROM {rows} WHERE true \
             ON CONFLICT (tenant_id, object_id) DO UPDATE SET seq = excluded.seq, \
             imported = excluded.imported"
        )
    })
});

/// This transaction's id as a feed number (Postgres).
const TRANSACTION_NUMBER: &str = "pg_current_xact_id()::text::bigint";

/// Records that these users (tenant, object id) became imported (`imported`) or were deleted,
/// under this transaction's feed number.
pub async fn record_import_changes(
    conn: &mut AnyConnection,
    backend: Backend,
    users: &[(&str, &str)],
    imported: bool,
) -> Result<(), Error> {
    if users.is_empty() {
        return Ok(());
    }
    let param =
        rows_text(backend, users.iter().map(|(t, o)| [*t, *o])).context("encode import changes")?;
    let query = sqlx::query(UPSERT_FEED.get(backend))
        .bind(param)
        .bind(service_runtime::storage::flag_text(imported));
    let query = match backend {
        Backend::Postgres => query,
        Backend::Sqlite => {
            let seq: i64 = sqlx::query_scalar(NEXT_SEQ)
                .fetch_one(&mut *conn)
                .await
                .map_err(Error::internal("take the next import feed number"))?;
            query.bind(seq)
        }
    };
    query
        .execute(&mut *conn)
        .await
        .map_err(Error::internal("record import changes"))?;
    Ok(())
}

static READ_FEED: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        // Only numbers of transactions that have ended (see the module's comment).
        let settled = match backend {
            Backend::Postgres => "AND seq < pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            Backend::Sqlite => "",
        };
        format!(
            "SELECT seq, object_id, imported FROM import_feed \
             WHERE tenant_id = $1 AND (seq, object_id) > ($2, $3) {settled} \
             ORDER BY seq, object_id LIMIT $4"
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
