//! The mirror's tables (sqlx, Postgres or SQLite). Functions take a connection so they compose
//! in one transaction; batches are one statement each (one text parameter expanded by the
//! database, `service_runtime::storage::RowsParam`).

use std::sync::LazyLock;

use anyhow::Context as _;
use service_runtime::storage::{
    Backend, Dialects, Migrations, flag, flag_text, known, probe_join, rows_from, rows_text,
};
use sqlx::any::AnyRow;
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AssertSqlSafe, Row as _};

use crate::domain::{
    AccountType, DeletionState, ListFilter, MirrorUser, SyncMode, SyncRun, SyncRunStatus,
};
use crate::error::Error;

pub mod deferred;
mod delta;
mod groups;
pub mod imported;
mod runs;
pub mod scim;

pub use delta::*;
pub use groups::*;
pub use runs::*;

static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

/// directory-sync's migrations for both backends.
pub static MIGRATIONS: Migrations = Migrations {
    postgres: &POSTGRES,
    sqlite: &SQLITE,
};

const USER_COLUMNS: &str = "u.tenant_id, u.object_id, u.user_principal_name, u.mail, u.display_name, \
     u.given_name, u.surname, u.account_enabled, u.account_type, u.deletion_state, u.last_seen_run";

fn user_from_row(row: &AnyRow) -> Result<MirrorUser, sqlx::Error> {
    Ok(MirrorUser {
        tenant_id: row.try_get("tenant_id")?,
        object_id: row.try_get("object_id")?,
        user_principal_name: row.try_get("user_principal_name")?,
        mail: row.try_get("mail")?,
        display_name: row.try_get("display_name")?,
        given_name: row.try_get("given_name")?,
        surname: row.try_get("surname")?,
        account_enabled: flag(row, "account_enabled")?,
        account_type: known(row, "account_type", AccountType::parse)?,
        deletion_state: known(row, "deletion_state", DeletionState::parse)?,
        // SCIM runs are named `scim-…` (scim.rs); a write of either source sets last_seen_run.
        pushed: row
            .try_get::<String, _>("last_seen_run")?
            .starts_with("scim-"),
    })
}

fn users_from_rows(rows: &[AnyRow]) -> Result<Vec<MirrorUser>, Error> {
    rows.iter()
        .map(user_from_row)
        .collect::<Result<_, _>>()
        .map_err(Error::internal("read mirrored users"))
}

static UPSERT_USERS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(
            backend,
            &[
                ("object_id", "text"),
                ("user_principal_name", "text"),
                ("mail", "text"),
                ("display_name", "text"),
                ("given_name", "text"),
                ("surname", "text"),
                ("account_enabled", "boolean"),
                ("account_type", "text"),
                ("search_name", "text"),
                ("search_upn", "text"),
                ("search_mail", "text"),
                ("content_hash", "bigint"),
            ],
        );
        // Every row is touched (last_seen_run) so a full sync can sweep the unseen ones;
        // changed_run moves only when the content differs or the user comes back. A row this
        // run has already written with the same content (a replayed entry) is left alone and
        // not returned, so it is not counted twice.
        format!(
            "INSERT INTO directory_users AS d (tenant_id, object_id, user_principal_name, mail, \
             display_name, given_name, surname, account_enabled, account_type, deletion_state, \
             search_name, search_upn, search_mail, content_hash, first_seen_run, last_seen_run, \
             changed_run, updated_at_ms) \
             SELECT $2, r.object_id, r.user_principal_name, r.mail, r.display_name, r.given_name, \
             r.surname, r.account_enabled, r.account_type, 'present', r.search_name, r.search_upn, \
             r.search_mail, r.content_hash, $3, $3, $3, $4 FROM {rows} WHERE true \
             ON CONFLICT (tenant_id, object_id) DO UPDATE SET \
             user_principal_name = excluded.user_principal_name, mail = excluded.mail, \
             display_name = excluded.display_name, given_name = excluded.given_name, \
             surname = excluded.surname, account_enabled = excluded.account_enabled, \
             account_type = excluded.account_type, deletion_state = 'present', \
             search_name = excluded.search_name, search_upn = excluded.search_upn, \
             search_mail = excluded.search_mail, content_hash = excluded.content_hash, \
             last_seen_run = excluded.last_seen_run, \
             changed_run = CASE WHEN d.content_hash <> excluded.content_hash \
                 OR d.deletion_state <> 'present' THEN excluded.changed_run ELSE d.changed_run END, \
             updated_at_ms = CASE WHEN d.content_hash <> excluded.content_hash \
                 OR d.deletion_state <> 'present' THEN excluded.updated_at_ms ELSE d.updated_at_ms END \
             WHERE d.content_hash <> excluded.content_hash OR d.deletion_state <> 'present' \
                 OR d.last_seen_run <> excluded.last_seen_run \
             RETURNING object_id, search_name, first_seen_run, changed_run"
        )
    })
});

/// How many users an upsert created and changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UpsertCounts {
    pub created: u64,
    pub updated: u64,
}

/// Inserts or refreshes `users` (all of `tenant_id`) as seen by `run_id`, in one statement.
pub async fn upsert_users(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    users: &[MirrorUser],
    run_id: &str,
    now_ms: i64,
) -> Result<UpsertCounts, Error> {
    if users.is_empty() {
        return Ok(UpsertCounts::default());
    }
    // One statement may touch a row once: of a user listed twice in one page (Graph may
    // replay entries), the later entry wins.
    let mut last_of: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(users.len());
    for (i, user) in users.iter().enumerate() {
        last_of.insert(user.object_id.as_str(), i);
    }
    let users: Vec<&MirrorUser> = users
        .iter()
        .enumerate()
        .filter(|(i, u)| last_of[u.object_id.as_str()] == *i)
        .map(|(_, u)| u)
        .collect();
    // Derived columns are computed here so the statement stays a plain upsert.
    let derived: Vec<[String; 4]> = users
        .iter()
        .map(|u| {
            [
                u.display_name.to_lowercase(),
                u.user_principal_name.to_lowercase(),
                u.mail.to_lowercase(),
                u.content_hash().to_string(),
            ]
        })
        .collect();
    let param = rows_text(
        backend,
        users
            .iter()
            .zip(&derived)
            .map(|(u, [name, upn, mail, hash])| {
                [
                    u.object_id.as_str(),
                    &u.user_principal_name,
                    &u.mail,
                    &u.display_name,
                    &u.given_name,
                    &u.surname,
                    flag_text(u.account_enabled),
                    u.account_type.as_str(),
                    name,
                    upn,
                    mail,
                    hash,
                ]
            }),
    )
    .context("encode mirrored users")?;
    let returned = sqlx::query(UPSERT_USERS.get(backend))
        .bind(param)
        .bind(tenant_id)
        .bind(run_id)
        .bind(now_ms)
        .fetch_all(&mut *conn)
        .await
        .map_err(Error::internal("upsert mirrored users"))?;
    let mut counts = UpsertCounts::default();
    // New users get their mark; changed ones keep theirs in name order (a rename moves a user).
    let mut created: Vec<(String, String)> = Vec::new();
    let mut changed: Vec<(String, String)> = Vec::new();
    for row in &returned {
        let first: String = row
            .try_get("first_seen_run")
            .map_err(Error::internal("read upsert"))?;
        let changed_run: String = row
            .try_get("changed_run")
            .map_err(Error::internal("read upsert"))?;
        let tracked = if first == run_id {
            counts.created += 1;
            &mut created
        } else if changed_run == run_id {
            counts.updated += 1;
            &mut changed
        } else {
            continue;
        };
        tracked.push((
            row.try_get("object_id")
                .map_err(Error::internal("read upsert"))?,
            row.try_get("search_name")
                .map_err(Error::internal("read upsert"))?,
        ));
    }
    imported::track_users(conn, backend, tenant_id, &pairs(&created), &pairs(&changed)).await?;
    Ok(counts)
}

fn pairs(users: &[(String, String)]) -> Vec<(&str, &str)> {
    users
        .iter()
        .map(|(id, name)| (id.as_str(), name.as_str()))
        .collect()
}

fn id_rows(backend: Backend, ids: &[String]) -> Result<String, Error> {
    Ok(rows_text(backend, ids.iter().map(|id| [id.as_str()])).context("encode ids")?)
}

static TOUCH_SEEN: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("id", "text")]);
        format!(
            "UPDATE directory_users SET last_seen_run = $3 \
             WHERE tenant_id = $2 AND object_id IN (SELECT r.id FROM {rows})"
        )
    })
});

/// Marks users as seen by `run_id` without changing them (entries the directory listed but
/// that could not be read this round must not be swept as deleted).
pub async fn touch_seen(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    object_ids: &[String],
    run_id: &str,
) -> Result<(), Error> {
    if object_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(TOUCH_SEEN.get(backend))
        .bind(id_rows(backend, object_ids)?)
        .bind(tenant_id)
        .bind(run_id)
        .execute(conn)
        .await
        .map_err(Error::internal("touch seen users"))?;
    Ok(())
}

static MARK_RESTORABLE: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("id", "text")]);
        // last_seen_run moves too: the directory still holds the user (restorable), so the
        // sweep after this read does not conclude it is gone.
        format!(
            "UPDATE directory_users SET last_seen_run = $3, deletion_state = 'soft_deleted', \
             changed_run = CASE WHEN deletion_state <> 'soft_deleted' THEN $3 ELSE changed_run END, \
             updated_at_ms = CASE WHEN deletion_state <> 'soft_deleted' THEN $4 ELSE updated_at_ms END \
             WHERE tenant_id = $2 AND last_seen_run <> $3 AND object_id IN (SELECT r.id FROM {rows}) \
             RETURNING changed_run"
        )
    })
});

/// Records users a full round `run_id` found in the directory's deleted items (and not in
/// `/users`) as soft-deleted and seen: restorable, so not swept as gone. Also corrects users
/// an earlier round concluded were hard-deleted. Returns how many changed state.
pub async fn mark_restorable(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    object_ids: &[String],
    run_id: &str,
    now_ms: i64,
) -> Result<u64, Error> {
    if object_ids.is_empty() {
        return Ok(0);
    }
    let rows = sqlx::query(MARK_RESTORABLE.get(backend))
        .bind(id_rows(backend, object_ids)?)
        .bind(tenant_id)
        .bind(run_id)
        .bind(now_ms)
        .fetch_all(conn)
        .await
        .map_err(Error::internal("mark restorable users"))?;
    // Every listed user is touched; only those whose state this run changed count.
    let mut changed = 0;
    for row in &rows {
        let changed_run: String = row
            .try_get("changed_run")
            .map_err(Error::internal("read restorable users"))?;
        changed += u64::from(changed_run == run_id);
    }
    Ok(changed)
}

/// Object ids of the users a full sync `run_id` (started at `started_at_ms`) has not seen and
/// that its sweep would mark: the candidates for a hard deletion.
pub async fn unseen_users(
    conn: &mut AnyConnection,
    tenant_id: &str,
    run_id: &str,
    started_at_ms: i64,
) -> Result<Vec<String>, Error> {
    sqlx::query_scalar(
        "SELECT object_id FROM directory_users WHERE tenant_id = $1 AND last_seen_run <> $2 \
         AND deletion_state <> 'hard_deleted' AND updated_at_ms < $3 ORDER BY object_id",
    )
    .bind(tenant_id)
    .bind(run_id)
    .bind(started_at_ms)
    .fetch_all(conn)
    .await
    .map_err(Error::internal("read unseen users"))
}

/// Marks every user that `run_id` (a completed full sync that started at `started_at_ms`) did
/// not see — neither in `/users` nor in the deleted items — as `concluded`, and returns how
/// many. `concluded` is [`DeletionState::HardDeleted`] only when the deleted items were read
/// completely; otherwise [`DeletionState::SoftDeleted`], which never overrides an earlier
/// hard deletion. Users written after the run started (a lookup of a brand-new user) are
/// kept: the listing may simply have passed them already.
pub async fn sweep_unseen(
    conn: &mut AnyConnection,
    tenant_id: &str,
    run_id: &str,
    started_at_ms: i64,
    now_ms: i64,
    concluded: DeletionState,
) -> Result<u64, Error> {
    let result = sqlx::query(
        "UPDATE directory_users SET deletion_state = $5, changed_run = $2, updated_at_ms = $4 \
         WHERE tenant_id = $1 AND last_seen_run <> $2 AND deletion_state <> 'hard_deleted' \
         AND deletion_state <> $5 AND updated_at_ms < $3",
    )
    .bind(tenant_id)
    .bind(run_id)
    .bind(started_at_ms)
    .bind(now_ms)
    .bind(concluded.as_str())
    .execute(conn)
    .await
    .map_err(Error::internal("sweep unseen users"))?;
    Ok(result.rows_affected())
}

/// Refreshes the planner's statistics of the mirror after a bulk change (a full round):
/// with statistics from when the table was small, the planner sorts a sequential scan of a
/// million rows for a listing page the name index answers in a millisecond. The imported
/// marks grow with the mirror: without their statistics a one-letter search of the not
/// imported took a second at 100k users on an empty registry (the console's bench).
pub async fn analyze(conn: &mut AnyConnection) -> Result<(), Error> {
    sqlx::query("ANALYZE directory_users")
        .execute(&mut *conn)
        .await
        .map_err(Error::internal("analyze mirror"))?;
    sqlx::query("ANALYZE directory_not_imported")
        .execute(conn)
        .await
        .map_err(Error::internal("analyze imported marks"))?;
    Ok(())
}

/// The same for group memberships, after a round changed many of them: streaming a big
/// group's members (a rule's reconcile) otherwise sorts every remaining member for each page.
pub async fn analyze_groups(conn: &mut AnyConnection) -> Result<(), Error> {
    sqlx::query("ANALYZE directory_group_members")
        .execute(conn)
        .await
        .map_err(Error::internal("analyze group members"))?;
    Ok(())
}

/// How many users of the tenant the directory lists (not deleted).
pub async fn present_count(conn: &mut AnyConnection, tenant_id: &str) -> Result<u64, Error> {
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM directory_users WHERE tenant_id = $1 AND deletion_state = 'present'",
    )
    .bind(tenant_id)
    .fetch_one(conn)
    .await
    .map_err(Error::internal("count mirrored users"))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

static BY_OBJECT_IDS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("id", "text")]);
        let probe = probe_join(
            backend,
            &rows,
            "directory_users",
            "u.tenant_id = $2 AND u.object_id = r.id",
        );
        format!("SELECT {USER_COLUMNS} FROM {probe}")
    })
});

/// The mirrored users among `object_ids` (lower-case), in one statement.
pub async fn users_by_object_ids(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    object_ids: &[String],
) -> Result<Vec<MirrorUser>, Error> {
    if object_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(BY_OBJECT_IDS.get(backend))
        .bind(id_rows(backend, object_ids)?)
        .bind(tenant_id)
        .fetch_all(conn)
        .await
        .map_err(Error::internal("look up users by object id"))?;
    users_from_rows(&rows)
}

static BY_UPNS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("id", "text")]);
        let probe = probe_join(
            backend,
            &rows,
            "directory_users",
            "u.tenant_id = $2 AND u.search_upn = r.id",
        );
        format!("SELECT {USER_COLUMNS} FROM {probe}")
    })
});

/// The mirrored users whose UPN is among `upns` (compared lower-case), in one statement.
pub async fn users_by_upns(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    upns: &[String],
) -> Result<Vec<MirrorUser>, Error> {
    if upns.is_empty() {
        return Ok(Vec::new());
    }
    let lowered: Vec<String> = upns.iter().map(|u| u.to_lowercase()).collect();
    let rows = sqlx::query(BY_UPNS.get(backend))
        .bind(id_rows(backend, &lowered)?)
        .bind(tenant_id)
        .fetch_all(conn)
        .await
        .map_err(Error::internal("look up users by UPN"))?;
    users_from_rows(&rows)
}

/// The position after which a listing page starts: (lower-cased display name, object id).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListCursor {
    pub name: String,
    pub object_id: String,
}

/// The smallest string greater than every string that starts with `prefix`, in byte (code
/// point) order: the prefix with its last character incremented. `None` when no such string
/// exists (an empty prefix, or one of only `char::MAX`).
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// One page of present users in display-name order, after `after`: optionally only those
/// whose display name, UPN or mail starts with the search term (case-insensitive), enabled,
/// of one account type, or members of one group.
///
/// The search is three prefix ranges over byte-ordered, lower-cased columns, each served by
/// its own index (Postgres ORs them as bitmaps); without a search the name index yields the
/// page in order directly. The statement holds only the conditions in use, so each shape
/// gets the plan that fits it. With `unmarked_only`, only users not marked imported
/// (`store::imported`): without a search the marks' partial index holds them in name order
/// and leads; a search's branches probe each match's mark.
pub async fn list_users(
    conn: &mut AnyConnection,
    tenant_id: &str,
    filter: &ListFilter,
    unmarked_only: bool,
    after: &ListCursor,
    limit: u32,
) -> Result<Vec<MirrorUser>, Error> {
    let search = filter.search.trim().to_lowercase();
    // Searching the unmarked of a mostly imported tenant: the few unmarked users are the
    // candidates, each matched against the search. Otherwise the search's indexes lead and
    // each match's mark is probed. Counted rather than left to the planner, whose statistics
    // lag a burst of marks: right after a million were marked it led with the search and
    // probed 50,000 marks for a one-letter prefix (1.9 s).
    let few_unmarked = unmarked_only
        && !search.is_empty()
        && imported::count_unmarked(&mut *conn, tenant_id, FEW_UNMARKED + 1).await? <= FEW_UNMARKED;
    let mut query = Statement::new(String::new());
    // The conditions every branch shares, with their placeholders.
    let tenant = query.param(Bind::Text(tenant_id.to_owned()));
    let after_name = query.param(Bind::Text(after.name.clone()));
    let after_id = query.param(Bind::Text(after.object_id.clone()));
    let after_cursor = format!("(u.search_name, u.object_id) > ({after_name}, {after_id})");
    let mut shared = format!("u.tenant_id = {tenant} AND u.deletion_state = 'present'");
    if filter.enabled_only {
        let enabled = query.param(Bind::Flag(true));
        shared.push_str(&format!(" AND u.account_enabled = {enabled}"));
    }
    if let Some(account_type) = filter.account_type {
        let kind = query.param(Bind::Text(account_type.as_str().to_owned()));
        shared.push_str(&format!(" AND u.account_type = {kind}"));
    }
    if let Some(group_id) = &filter.group_id {
        let group = query.param(Bind::Text(group_id.clone()));
        shared.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM directory_group_members m \
             WHERE m.tenant_id = u.tenant_id AND m.object_id = u.object_id AND m.group_id = {group})"
        ));
    } else if filter.in_synced_groups {
        shared.push_str(
            " AND EXISTS (SELECT 1 FROM directory_group_members m \
             WHERE m.tenant_id = u.tenant_id AND m.object_id = u.object_id)",
        );
    }
    let limit = query.param(Bind::Int(i64::from(limit)));
    let order = "ORDER BY search_name, object_id";

    // Searching the unmarked among many (`few_unmarked` covers the rest): each branch's
    // matches, in its index's order, joined to their marks by key.
    let unmarked = if unmarked_only {
        "JOIN directory_not_imported k ON k.tenant_id = u.tenant_id \
         AND k.object_id = u.object_id"
    } else {
        ""
    };
    let sql = if few_unmarked {
        let lo = query.param(Bind::Text(search.clone()));
        let hi = prefix_upper_bound(&search).map(|hi| query.param(Bind::Text(hi)));
        let matches: Vec<String> = ["search_name", "search_upn", "search_mail"]
            .iter()
            .map(|column| match &hi {
                Some(hi) => format!("(u.{column} >= {lo} AND u.{column} < {hi})"),
                None => format!("u.{column} >= {lo}"),
            })
            .collect();
        // Materialised and cross-joined, so both backends read the marks first.
        format!(
            "WITH k AS MATERIALIZED (SELECT tenant_id, object_id FROM directory_not_imported \
             WHERE tenant_id = {tenant}) \
             SELECT {USER_COLUMNS} FROM k CROSS JOIN directory_users u \
             WHERE u.tenant_id = k.tenant_id AND u.object_id = k.object_id AND {shared} \
             AND {after_cursor} AND ({}) \
             ORDER BY u.search_name, u.object_id LIMIT {limit}",
            matches.join(" OR ")
        )
    } else if search.is_empty() && unmarked_only {
        // The not imported lead, in their name index's order.
        format!(
            "SELECT {USER_COLUMNS} FROM directory_not_imported k \
             JOIN directory_users u ON u.tenant_id = k.tenant_id AND u.object_id = k.object_id \
             WHERE k.tenant_id = {tenant} \
             AND (k.search_name, k.object_id) > ({after_name}, {after_id}) AND {shared} \
             ORDER BY k.search_name, k.object_id LIMIT {limit}"
        )
    } else if search.is_empty() {
        format!(
            "SELECT {USER_COLUMNS} FROM directory_users u WHERE {shared} AND {after_cursor} {order} LIMIT {limit}"
        )
    } else {
        // One branch per searched column, each served in name order by its own index and cut
        // to a page before the union: walking the name index and filtering for a UPN prefix
        // can read most of the table before it fills a page (the planner cannot know where in
        // name order the matches are), and sorting a common prefix's matches takes longer
        // than a page may.
        let lo = query.param(Bind::Text(search.clone()));
        let hi = prefix_upper_bound(&search).map(|hi| query.param(Bind::Text(hi)));
        let search_len = search.chars().count();
        let group_len = search_len.min(3);
        let group = (search_len > group_len)
            .then(|| query.param(Bind::Text(search.chars().take(group_len).collect())));
        let branches: Vec<String> = ["search_name", "search_upn", "search_mail"]
            .iter()
            .map(|column| {
                let range = match &hi {
                    Some(hi) => format!("u.{column} >= {lo} AND u.{column} < {hi}"),
                    None => format!("u.{column} >= {lo}"),
                };
                let (matches, cursor) = if *column == "search_name" {
                    // A cursor before the range enters the name index at the range's start.
                    let cursor = if after.name < search {
                        "true".to_owned()
                    } else {
                        after_cursor.clone()
                    };
                    (range, cursor)
                } else {
                    // The column's one-, two- or three-letter prefix index yields its matches
                    // in name order; a longer search narrows a three-letter group.
                    let matches = match &group {
                        Some(group) => {
                            format!("substr(u.{column}, 1, {group_len}) = {group} AND {range}")
                        }
                        None => format!("substr(u.{column}, 1, {group_len}) = {lo}"),
                    };
                    (matches, after_cursor.clone())
                };
                format!(
                    "SELECT * FROM (SELECT {USER_COLUMNS}, u.search_name FROM directory_users u \
                     {unmarked} WHERE {shared} AND {cursor} AND {matches} \
                     ORDER BY u.search_name, u.object_id LIMIT {limit}) AS b"
                )
            })
            .collect();
        format!(
            "SELECT * FROM ({}) AS m {order} LIMIT {limit}",
            branches.join(" UNION ")
        )
    };
    query.push(&sql);
    let rows = query
        .fetch_all(conn)
        .await
        .map_err(Error::internal("list mirrored users"))?;
    users_from_rows(&rows)
}

/// Up to this many unmarked users, a search of the unmarked reads them all (see
/// [`list_users`]).
const FEW_UNMARKED: u64 = 2_000;

/// A value bound to a [`Statement`].
enum Bind {
    Text(String),
    Flag(bool),
    Int(i64),
}

/// A statement assembled from the conditions in use, numbering its placeholders as it goes.
struct Statement {
    sql: String,
    binds: Vec<Bind>,
}

impl Statement {
    fn new(sql: String) -> Self {
        Self {
            sql,
            binds: Vec::new(),
        }
    }

    fn push(&mut self, sql: &str) {
        self.sql.push_str(sql);
    }

    /// Registers a value and returns its placeholder without writing it.
    fn param(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }

    async fn fetch_all(self, conn: &mut AnyConnection) -> Result<Vec<AnyRow>, sqlx::Error> {
        let mut query = sqlx::query(AssertSqlSafe(self.sql));
        for value in self.binds {
            query = match value {
                Bind::Text(text) => query.bind(text),
                Bind::Flag(flag) => query.bind(flag),
                Bind::Int(int) => query.bind(int),
            };
        }
        query.fetch_all(conn).await
    }
}

/// Up to `limit` present users after `after_object_id`, in object id order (streaming).
pub async fn users_after(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    group_id: Option<&str>,
    in_synced_groups: bool,
    after_object_id: &str,
    limit: u32,
) -> Result<Vec<MirrorUser>, Error> {
    let rows = match group_id {
        None => {
            let scope = if in_synced_groups {
                " AND EXISTS (SELECT 1 FROM directory_group_members m \
                 WHERE m.tenant_id = u.tenant_id AND m.object_id = u.object_id)"
            } else {
                ""
            };
            sqlx::query(AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM directory_users u WHERE u.tenant_id = $1 \
                 AND u.deletion_state = 'present' AND u.object_id > $2{scope} \
                 ORDER BY u.object_id LIMIT $3"
            )))
            .bind(tenant_id)
            .bind(after_object_id)
            .bind(i64::from(limit))
            .fetch_all(conn)
            .await
        }
        // A group's members in the membership key's order, each user probed by its key: the
        // cost of a page does not grow with the group (walking the users and testing each for
        // membership made every page of a 50,000-member group read the whole group).
        Some(group_id) => {
            let probe = probe_join(
                backend,
                "directory_group_members m",
                "directory_users",
                "u.tenant_id = m.tenant_id AND u.object_id = m.object_id \
                 AND u.deletion_state = 'present'",
            );
            sqlx::query(AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM {probe} WHERE m.tenant_id = $1 AND m.group_id = $2 \
                 AND m.object_id > $3 ORDER BY m.object_id LIMIT $4"
            )))
            .bind(tenant_id)
            .bind(group_id)
            .bind(after_object_id)
            .bind(i64::from(limit))
            .fetch_all(conn)
            .await
        }
    }
    .map_err(Error::internal("stream mirrored users"))?;
    users_from_rows(&rows)
}

static MARK_REMOVED: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("id", "text"), ("state", "text")]);
        format!(
            "UPDATE directory_users SET deletion_state = r.state, changed_run = $3, updated_at_ms = $4 \
             FROM {rows} WHERE directory_users.tenant_id = $2 AND directory_users.object_id = r.id \
             AND directory_users.deletion_state <> r.state"
        )
    })
});

/// Marks users the directory reports removed (`@removed`): soft-deleted (restorable) or
/// hard-deleted. Returns how many changed; a replayed removal changes nothing, and a removal
/// of a user the mirror never held is ignored.
pub async fn mark_removed(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    removed: &[(String, DeletionState)],
    run_id: &str,
    now_ms: i64,
) -> Result<u64, Error> {
    if removed.is_empty() {
        return Ok(0);
    }
    let param = rows_text(
        backend,
        removed
            .iter()
            .map(|(id, state)| [id.as_str(), state.as_str()]),
    )
    .context("encode removals")?;
    let result = sqlx::query(MARK_REMOVED.get(backend))
        .bind(param)
        .bind(tenant_id)
        .bind(run_id)
        .bind(now_ms)
        .execute(conn)
        .await
        .map_err(Error::internal("mark removed users"))?;
    Ok(result.rows_affected())
}
