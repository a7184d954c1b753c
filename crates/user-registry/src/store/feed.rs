//! The import-state feed (issue 15): which users became imported or were deleted, in commit
//! order, for directory-sync's imported marks.
//!
//! Every transaction that creates or deletes users ends with [`record_import_changes`]: it
//! takes the next sequence number from `import_feed_head` (the single row's lock is held to
//! commit, so a transaction that takes a later number commits later) and upserts each user's
//! latest state with it. A reader that has read up to a position has therefore seen every
//! change committed before the number it read, and nothing committed later can land below
//! it. The lock is taken as the transaction's last write, so concurrent imports wait on each
//! other only for the feed upsert and the commit, not for their whole work.

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
        let imported = match backend {
            Backend::Postgres => "$3::boolean",
            Backend::Sqlite => "$3",
        };
        // `WHERE true` resolves SQLite's upsert parsing ambiguity.
        format!(
            "INSERT INTO import_feed (tenant_id, object_id, seq, imported) \
             SELECT r.tenant_id, r.object_id, $2, {imported} FROM {rows} WHERE true \
             ON CONFLICT (tenant_id, object_id) DO UPDATE SET seq = excluded.seq, \
             imported = excluded.imported"
        )
    })
});

/// Records that these users (tenant, object id) became imported (`imported`) or were deleted,
/// under the next sequence number. Call it as the transaction's last write.
pub async fn record_import_changes(
    conn: &mut AnyConnection,
    backend: Backend,
    users: &[(&str, &str)],
    imported: bool,
) -> Result<(), Error> {
    if users.is_empty() {
        return Ok(());
    }
    let seq: i64 = sqlx::query_scalar(NEXT_SEQ)
        .fetch_one(&mut *conn)
        .await
        .map_err(Error::internal("take the next import feed number"))?;
    let param =
        rows_text(backend, users.iter().map(|(t, o)| [*t, *o])).context("encode import changes")?;
    sqlx::query(UPSERT_FEED.get(backend))
        .bind(param)
        .bind(seq)
        .bind(service_runtime::storage::flag_text(imported))
        .execute(&mut *conn)
        .await
        .map_err(Error::internal("record import changes"))?;
    Ok(())
}

/// The tenant's changes after the position (`after_seq`, `after_object_id`), in position
/// order, at most `limit`.
pub async fn import_changes_after(
    conn: &mut AnyConnection,
    tenant_id: &str,
    after_seq: i64,
    after_object_id: &str,
    limit: u32,
) -> Result<Vec<ImportChange>, Error> {
    // A row-value comparison, which both backends read as one range of the (tenant, seq,
    // object id) index; SQLite scanned the whole feed for the equivalent OR.
    let rows = sqlx::query(
        "SELECT seq, object_id, imported FROM import_feed \
         WHERE tenant_id = $1 AND (seq, object_id) > ($2, $3) \
         ORDER BY seq, object_id LIMIT $4",
    )
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
