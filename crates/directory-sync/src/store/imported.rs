//! The mirror's imported marks (issue 15): which users the registry holds, as far as this
//! service has followed the registry's import feed.
//!
//! A mark is a hint that makes "not imported" an index range; listings confirm every page
//! with the registry. The marks are a table of the users not (yet) known imported,
//! `directory_not_imported`: marking a user imported deletes its row, which writes no index
//! entry (an update of a flag wrote a new row version and key entry, migration 0009).
//! [`track_users`] gives every newly mirrored user its row. Readers of the feed apply its
//! pages in turn, in feed order; a row keeps the feed number that (re)added it (`seq`), so a
//! listing's confirmation never removes a row newer than what the listing had followed.

use std::sync::LazyLock;

use anyhow::Context as _;
use service_runtime::storage::{Backend, Dialects, rows_from, rows_text};
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

/// Postgres locks the tenant's position row for the transaction; SQLite's write transaction
/// (`BEGIN IMMEDIATE`) already holds the database.
static LOCK_POSITION: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let lock = match backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        format!("SELECT seq, object_id FROM import_feed_positions WHERE tenant_id = $1{lock}")
    })
});

static FORGET_IMPORTED: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("tenant_id", "text"), ("object_id", "text")]);
        match backend {
            Backend::Postgres => format!(
                "DELETE FROM directory_not_imported n USING {rows} \
                 WHERE n.tenant_id = r.tenant_id AND n.object_id = r.object_id AND n.seq <= $2"
            ),
            // SQLite has no `DELETE … USING`.
            Backend::Sqlite => format!(
                "DELETE FROM directory_not_imported WHERE seq <= $2 \
                 AND (tenant_id, object_id) IN (SELECT r.tenant_id, r.object_id FROM {rows})"
            ),
        }
    })
});

static CONFIRM_IMPORTED: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("tenant_id", "text"), ("object_id", "text")]);
        match backend {
            // A reader of the feed applying a page holds some of these rows, and takes them in
            // its own order: waiting for them could deadlock. The rows it holds are being set
            // by changes at least as new as the listing's position; they are skipped, and a
            // later listing confirms them again if need be.
            Backend::Postgres => format!(
                "DELETE FROM directory_not_imported n USING \
                 (SELECT k.tenant_id, k.object_id FROM directory_not_imported k JOIN {rows} \
                  ON k.tenant_id = r.tenant_id AND k.object_id = r.object_id WHERE k.seq <= $2 \
                  FOR UPDATE OF k SKIP LOCKED) AS s \
                 WHERE n.tenant_id = s.tenant_id AND n.object_id = s.object_id"
            ),
            // SQLite's writers take turns.
            Backend::Sqlite => FORGET_IMPORTED.get(backend).0.to_owned(),
        }
    })
});

static ADD_NOT_IMPORTED: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(
            backend,
            &[
                ("tenant_id", "text"),
                ("object_id", "text"),
                ("seq", "bigint"),
            ],
        );
        // The mirror's row gives the name; users not mirrored yet are skipped (they get their
        // row when they are mirrored).
        format!(
            "INSERT INTO directory_not_imported (tenant_id, object_id, search_name, seq) \
             SELECT u.tenant_id, u.object_id, u.search_name, r.seq FROM {rows} \
             JOIN directory_users u ON u.tenant_id = r.tenant_id AND u.object_id = r.object_id \
             WHERE true ON CONFLICT (tenant_id, object_id) DO UPDATE SET seq = excluded.seq"
        )
    })
});

const ADVANCE_POSITION: &str = "INSERT INTO import_feed_positions (tenant_id, seq, object_id) \
     VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, \
     object_id = excluded.object_id \
     WHERE (import_feed_positions.seq, import_feed_positions.object_id) \
     < (excluded.seq, excluded.object_id)";

/// Applies one page of feed changes (in feed order) to the marks and moves the tenant's
/// position to its last change. Readers apply in turn, holding the position for their
/// transaction, and skip what an earlier reader already applied, so the marks are always the
/// feed applied in order: a page read before another reader moved on cannot bring back a
/// user that a later change marked imported. Users the mirror does not hold yet are skipped:
/// they arrive unmarked, which a listing's confirmation corrects.
pub async fn apply_import_changes(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    changes: &[ImportChange],
) -> Result<(), Error> {
    let Some(last) = changes.last() else {
        return Ok(());
    };
    // A first reader creates the row, so that a second waits for it as for any other.
    sqlx::query(
        "INSERT INTO import_feed_positions (tenant_id, seq, object_id) VALUES ($1, 0, '') \
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant_id)
    .execute(&mut *conn)
    .await
    .map_err(Error::internal("read the import feed position"))?;
    let position = sqlx::query_as::<_, (i64, String)>(LOCK_POSITION.get(backend))
        .bind(tenant_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(Error::internal("read the import feed position"))?
        .unwrap_or_default();
    // A user's last change in the page is its state; one statement per kind of change.
    let mut latest: std::collections::HashMap<&str, &ImportChange> =
        std::collections::HashMap::with_capacity(changes.len());
    for change in changes {
        if (change.seq, change.object_id.as_str()) > (position.0, position.1.as_str()) {
            latest.insert(change.object_id.as_str(), change);
        }
    }
    let (imported, not_imported): (Vec<&ImportChange>, Vec<&ImportChange>) =
        latest.into_values().partition(|change| change.imported);
    if !imported.is_empty() {
        let param = rows_text(
            backend,
            imported.iter().map(|c| [tenant_id, c.object_id.as_str()]),
        )
        .context("encode import changes")?;
        // Every row of these users is older than the changes (rows are added by changes
        // before them in the feed, or by mirroring with 0).
        sqlx::query(FORGET_IMPORTED.get(backend))
            .bind(param)
            .bind(i64::MAX)
            .execute(&mut *conn)
            .await
            .map_err(Error::internal("apply import changes"))?;
    }
    if !not_imported.is_empty() {
        let seqs: Vec<String> = not_imported.iter().map(|c| c.seq.to_string()).collect();
        let param = rows_text(
            backend,
            not_imported
                .iter()
                .zip(&seqs)
                .map(|(c, seq)| [tenant_id, c.object_id.as_str(), seq.as_str()]),
        )
        .context("encode import changes")?;
        sqlx::query(ADD_NOT_IMPORTED.get(backend))
            .bind(param)
            .execute(&mut *conn)
            .await
            .map_err(Error::internal("apply import changes"))?;
    }
    sqlx::query(ADVANCE_POSITION)
        .bind(tenant_id)
        .bind(last.seq)
        .bind(&last.object_id)
        .execute(&mut *conn)
        .await
        .map_err(Error::internal("advance the import feed position"))?;
    Ok(())
}

/// Marks users the registry just confirmed imported. `read_up_to` is the feed number the
/// caller had followed before it asked: a user that a later change made not imported again
/// (a deletion after the confirmation) keeps its row.
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
    sqlx::query(CONFIRM_IMPORTED.get(backend))
        .bind(param)
        .bind(read_up_to)
        .execute(conn)
        .await
        .map_err(Error::internal("mark users imported"))?;
    Ok(())
}

/// Tidies the table of unmarked users after a burst of marks (Postgres; nothing on SQLite).
/// A mark deletes a row, and a listing joins every candidate to this table by key: until
/// autovacuum comes, each probe meets the dead rows of the burst and reads the heap, since no
/// page is known all-visible. `VACUUM` removes them and sets the visibility map. Postgres also
/// keeps an index's pages after their entries die: marking 999,000 of 1,000,000 users left
/// the name index at 25,000 pages for 1,000 entries, and once statistics caught up the planner
/// costed it by its pages and chose a full scan (1.2 s) over the index (0.9 ms); it is rebuilt
/// concurrently, so listings and marks go on meanwhile.
pub async fn rebuild_unmarked_index(
    conn: &mut AnyConnection,
    backend: Backend,
) -> Result<(), Error> {
    if backend == Backend::Postgres {
        sqlx::query("VACUUM (ANALYZE) directory_not_imported")
            .execute(&mut *conn)
            .await
            .map_err(Error::internal("vacuum the table of unmarked users"))?;
        sqlx::query("REINDEX INDEX CONCURRENTLY directory_not_imported_by_name")
            .execute(conn)
            .await
            .map_err(Error::internal("rebuild the index of unmarked users"))?;
    }
    Ok(())
}

static TRACK_NEW_USERS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(
            backend,
            &[
                ("tenant_id", "text"),
                ("object_id", "text"),
                ("search_name", "text"),
            ],
        );
        // `WHERE true` resolves SQLite's upsert parsing ambiguity. A replayed page finds
        // its rows there already.
        format!(
            "INSERT INTO directory_not_imported (tenant_id, object_id, search_name) \
             SELECT r.tenant_id, r.object_id, r.search_name FROM {rows} WHERE true \
             ON CONFLICT (tenant_id, object_id) DO NOTHING"
        )
    })
});

static RENAME_USERS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(
            backend,
            &[
                ("tenant_id", "text"),
                ("object_id", "text"),
                ("search_name", "text"),
            ],
        );
        format!(
            "UPDATE directory_not_imported SET search_name = r.search_name FROM {rows} \
             WHERE directory_not_imported.tenant_id = r.tenant_id \
             AND directory_not_imported.object_id = r.object_id \
             AND directory_not_imported.search_name <> r.search_name"
        )
    })
});

/// Gives users just mirrored (object id, lower-cased display name) their row among the not
/// imported, until the feed says otherwise, and keeps a changed user's row (if it has one: it
/// is not imported) in its place in name order.
pub async fn track_users(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    created: &[(&str, &str)],
    changed: &[(&str, &str)],
) -> Result<(), Error> {
    for (users, statement) in [(created, &TRACK_NEW_USERS), (changed, &RENAME_USERS)] {
        if users.is_empty() {
            continue;
        }
        let param = rows_text(
            backend,
            users
                .iter()
                .map(|(object_id, name)| [tenant_id, *object_id, *name]),
        )
        .context("encode mirrored users")?;
        sqlx::query(statement.get(backend))
            .bind(param)
            .execute(&mut *conn)
            .await
            .map_err(Error::internal("track mirrored users' marks"))?;
    }
    Ok(())
}

/// How many of the tenant's users are not marked imported, counting no further than `upto`.
pub async fn count_unmarked(
    conn: &mut AnyConnection,
    tenant_id: &str,
    upto: u64,
) -> Result<u64, Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT 1 FROM directory_not_imported \
         WHERE tenant_id = $1 LIMIT $2) AS unmarked",
    )
    .bind(tenant_id)
    .bind(i64::try_from(upto).unwrap_or(i64::MAX))
    .fetch_one(conn)
    .await
    .map_err(Error::internal("count unmarked users"))?;
    Ok(u64::try_from(n).unwrap_or(0))
}
