//! The mirror's imported marks (issue 15): which users the registry holds, as far as this
//! service has followed the registry's import feed.
//!
//! A mark is a hint that makes "not imported" an index range; listings confirm every page
//! with the registry. Each mark keeps the feed number it came from (`imported_seq`) and a
//! change applies only over an older one, so two readers applying overlapping pages in any
//! order end with the newest state.

use std::sync::LazyLock;

use anyhow::Context as _;
use service_runtime::storage::{Backend, Dialects, RowsParam, flag_text, rows_from, rows_text};
use sqlx::{AnyConnection, Row as _};

use crate::error::Error;

/// One change of a user's import state, from the registry's feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportChange {
    pub seq: i64,
    pub object_id: String,
    pub imported: bool,
}

/// A position in the registry's import feed: the last change read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedPosition {
    pub seq: i64,
    pub object_id: String,
}

/// How far this tenant's marks have followed the feed (the start when never).
pub async fn feed_position(
    conn: &mut AnyConnection,
    tenant_id: &str,
) -> Result<FeedPosition, Error> {
    let row = sqlx::query("SELECT seq, object_id FROM import_feed_positions WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(conn)
        .await
        .map_err(Error::internal("read the import feed position"))?;
    match row {
        None => Ok(FeedPosition::default()),
        Some(row) => Ok(FeedPosition {
            seq: row
                .try_get("seq")
                .map_err(Error::internal("read the import feed position"))?,
            object_id: row
                .try_get("object_id")
                .map_err(Error::internal("read the import feed position"))?,
        }),
    }
}

static APPLY_CHANGES: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        // The tenant travels in each row rather than as a constant: SQLite plans
        // `tenant_id = $n` as a scan of the whole tenant with the batch inside.
        let rows = rows_from(
            backend,
            &[
                ("tenant_id", "text"),
                ("object_id", "text"),
                ("seq", "bigint"),
                ("imported", "boolean"),
            ],
        );
        format!(
            "UPDATE directory_users SET imported = r.imported, imported_seq = r.seq FROM {rows} \
             WHERE directory_users.tenant_id = r.tenant_id \
             AND directory_users.object_id = r.object_id AND directory_users.imported_seq < r.seq"
        )
    })
});

const ADVANCE_POSITION: &str = "INSERT INTO import_feed_positions (tenant_id, seq, object_id) \
     VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, \
     object_id = excluded.object_id \
     WHERE (import_feed_positions.seq, import_feed_positions.object_id) \
     < (excluded.seq, excluded.object_id)";

/// Applies one page of feed changes to the marks and moves the tenant's position to its last
/// change (never back). Users the mirror does not hold yet are skipped: they arrive unmarked,
/// which a listing's confirmation corrects.
pub async fn apply_import_changes(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    changes: &[ImportChange],
) -> Result<(), Error> {
    let Some(last) = changes.last() else {
        return Ok(());
    };
    let mut param = RowsParam::new(backend);
    for change in changes {
        let seq = change.seq.to_string();
        param
            .push(&[
                tenant_id,
                change.object_id.as_str(),
                seq.as_str(),
                flag_text(change.imported),
            ])
            .context("encode import changes")?;
    }
    sqlx::query(APPLY_CHANGES.get(backend))
        .bind(param.into_text())
        .execute(&mut *conn)
        .await
        .map_err(Error::internal("apply import changes"))?;
    sqlx::query(ADVANCE_POSITION)
        .bind(tenant_id)
        .bind(last.seq)
        .bind(&last.object_id)
        .execute(&mut *conn)
        .await
        .map_err(Error::internal("advance the import feed position"))?;
    Ok(())
}

static MARK_IMPORTED: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("tenant_id", "text"), ("object_id", "text")]);
        format!(
            "UPDATE directory_users SET imported = true FROM {rows} \
             WHERE directory_users.tenant_id = r.tenant_id \
             AND directory_users.object_id = r.object_id \
             AND directory_users.imported = false AND directory_users.imported_seq <= $2"
        )
    })
});

/// Marks users the registry just confirmed imported. `read_up_to` is the feed number the
/// caller had followed before it asked: a mark that a later change has set since (a deletion
/// after the confirmation) is newer and stays.
pub async fn mark_imported(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    object_ids: &[String],
    read_up_to: i64,
) -> Result<(), Error> {
    if object_ids.is_empty() {
        return Ok(());
    }
    let param = rows_text(
        backend,
        object_ids.iter().map(|id| [tenant_id, id.as_str()]),
    )
    .context("encode imported users")?;
    sqlx::query(MARK_IMPORTED.get(backend))
        .bind(param)
        .bind(read_up_to)
        .execute(conn)
        .await
        .map_err(Error::internal("mark users imported"))?;
    Ok(())
}

/// Rebuilds the partial index of unmarked users (Postgres; nothing on SQLite). Postgres keeps
/// an index's pages after their entries die: marking 999,000 of 1,000,000 users left the
/// index at 25,000 pages for 1,000 entries, and once statistics caught up the planner costed
/// it by its pages and chose a full scan (1.2 s) over the index (0.9 ms). Rebuilt
/// concurrently, so listings and marks go on meanwhile (3.4 s at 1M users).
pub async fn rebuild_unmarked_index(
    conn: &mut AnyConnection,
    backend: Backend,
) -> Result<(), Error> {
    if backend == Backend::Postgres {
        sqlx::query("REINDEX INDEX CONCURRENTLY directory_users_not_imported")
            .execute(&mut *conn)
            .await
            .map_err(Error::internal("rebuild the index of unmarked users"))?;
        sqlx::query("ANALYZE directory_users")
            .execute(conn)
            .await
            .map_err(Error::internal("analyze the mirror"))?;
    }
    Ok(())
}
