//! The mirror's imported marks (issue 15): which users the registry holds, as far as this
//! service has followed the registry's import feed.
//!
//! A mark is a hint that makes "not imported" an index range; listings confirm every page
//! with the registry. Each mark keeps the feed number it came from (`seq`) and a change
//! applies only over an older one, so two readers applying overlapping pages in any order end
//! with the newest state.
//!
//! Marks live in `directory_import_marks`, one narrow row per mirror user, not in
//! `directory_users`: there a mark rewrote the user's row and an entry in each of its ten
//! indexes (migration 0007). [`track_users`] gives every newly mirrored user its row.

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
            "UPDATE directory_import_marks SET imported = r.imported, seq = r.seq FROM {rows} \
             WHERE directory_import_marks.tenant_id = r.tenant_id \
             AND directory_import_marks.object_id = r.object_id \
             AND directory_import_marks.seq < r.seq"
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
            "UPDATE directory_import_marks SET imported = true FROM {rows} \
             WHERE directory_import_marks.tenant_id = r.tenant_id \
             AND directory_import_marks.object_id = r.object_id \
             AND directory_import_marks.imported = false AND directory_import_marks.seq <= $2"
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
        sqlx::query("REINDEX INDEX CONCURRENTLY directory_import_marks_not_imported")
            .execute(&mut *conn)
            .await
            .map_err(Error::internal("rebuild the index of unmarked users"))?;
        sqlx::query("ANALYZE directory_import_marks")
            .execute(conn)
            .await
            .map_err(Error::internal("analyze the mirror"))?;
    }
    Ok(())
}

static TRACK_USERS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(
            backend,
            &[
                ("tenant_id", "text"),
                ("object_id", "text"),
                ("search_name", "text"),
            ],
        );
        // `WHERE true` resolves SQLite's upsert parsing ambiguity.
        format!(
            "INSERT INTO directory_import_marks (tenant_id, object_id, search_name) \
             SELECT r.tenant_id, r.object_id, r.search_name FROM {rows} WHERE true \
             ON CONFLICT (tenant_id, object_id) DO UPDATE SET search_name = excluded.search_name \
             WHERE directory_import_marks.search_name <> excluded.search_name"
        )
    })
});

/// Gives users just mirrored or changed (object id, lower-cased display name) their mark row,
/// not imported until the feed says otherwise, and keeps a renamed user's row in its place in
/// name order.
pub async fn track_users(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    users: &[(&str, &str)],
) -> Result<(), Error> {
    if users.is_empty() {
        return Ok(());
    }
    let param = rows_text(
        backend,
        users
            .iter()
            .map(|(object_id, name)| [tenant_id, *object_id, *name]),
    )
    .context("encode mirrored users")?;
    sqlx::query(TRACK_USERS.get(backend))
        .bind(param)
        .execute(conn)
        .await
        .map_err(Error::internal("track mirrored users' marks"))?;
    Ok(())
}

/// How many of the tenant's users are not marked imported, counting no further than `upto`.
pub async fn count_unmarked(
    conn: &mut AnyConnection,
    tenant_id: &str,
    upto: u64,
) -> Result<u64, Error> {
    // `imported = false` as a literal, the partial index's condition (SQLite needs it).
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT 1 FROM directory_import_marks \
         WHERE tenant_id = $1 AND imported = false LIMIT $2) AS unmarked",
    )
    .bind(tenant_id)
    .bind(i64::try_from(upto).unwrap_or(i64::MAX))
    .fetch_one(conn)
    .await
    .map_err(Error::internal("count unmarked users"))?;
    Ok(u64::try_from(n).unwrap_or(0))
}
