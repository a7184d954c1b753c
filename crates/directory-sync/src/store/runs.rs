//! Sync runs: their records, progress and history.

use super::*;

const RUN_COLUMNS: &str = "run_id, mode, status, started_at_ms, finished_at_ms, users_seen, \
     users_created, users_updated, users_removed, users_rejected, error, pages_read, delta_fallback";

fn run_from_row(row: &AnyRow) -> Result<SyncRun, sqlx::Error> {
    let count = |column: &str| -> Result<u64, sqlx::Error> {
        Ok(u64::try_from(row.try_get::<i64, _>(column)?).unwrap_or(0))
    };
    Ok(SyncRun {
        run_id: row.try_get("run_id")?,
        mode: known(row, "mode", SyncMode::parse)?,
        status: known(row, "status", SyncRunStatus::parse)?,
        started_at_ms: row.try_get("started_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
        users_seen: count("users_seen")?,
        users_created: count("users_created")?,
        users_updated: count("users_updated")?,
        users_removed: count("users_removed")?,
        users_rejected: count("users_rejected")?,
        error: row.try_get("error")?,
        pages_read: count("pages_read")?,
        fell_back_from_delta: Some(row.try_get::<String, _>("delta_fallback")?)
            .filter(|reason| !reason.is_empty()),
    })
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Records a run as it stands at `now_ms` (insert or replace by run id). The mode is rewritten
/// too: a delta round that fell back is recorded as the full round it became.
pub async fn save_run(
    conn: &mut AnyConnection,
    tenant_id: &str,
    run: &SyncRun,
    now_ms: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO sync_runs (run_id, tenant_id, mode, status, started_at_ms, finished_at_ms, \
         users_seen, users_created, users_updated, users_removed, users_rejected, error, \
         pages_read, delta_fallback, recorded_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (run_id) DO UPDATE SET mode = excluded.mode, status = excluded.status, \
         finished_at_ms = excluded.finished_at_ms, users_seen = excluded.users_seen, \
         users_created = excluded.users_created, users_updated = excluded.users_updated, \
         users_removed = excluded.users_removed, users_rejected = excluded.users_rejected, \
         error = excluded.error, pages_read = excluded.pages_read, \
         delta_fallback = excluded.delta_fallback, recorded_at_ms = excluded.recorded_at_ms",
    )
    .bind(&run.run_id)
    .bind(tenant_id)
    .bind(run.mode.as_str())
    .bind(run.status.as_str())
    .bind(run.started_at_ms)
    .bind(run.finished_at_ms)
    .bind(as_i64(run.users_seen))
    .bind(as_i64(run.users_created))
    .bind(as_i64(run.users_updated))
    .bind(as_i64(run.users_removed))
    .bind(as_i64(run.users_rejected))
    .bind(&run.error)
    .bind(as_i64(run.pages_read))
    .bind(run.fell_back_from_delta.as_deref().unwrap_or_default())
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(Error::internal("save sync run"))?;
    Ok(())
}

/// Closes as failed every run of the tenant still recorded as running: at start-up, those were
/// left by a process that died (one process runs the tenant's rounds). Each ends when its
/// record was last written, its last sign of life. Answers their ids.
pub async fn close_abandoned_runs(
    conn: &mut AnyConnection,
    tenant_id: &str,
    reason: &str,
) -> Result<Vec<String>, Error> {
    let rows = sqlx::query(
        "UPDATE sync_runs SET status = 'failed', error = $2, \
         finished_at_ms = CASE WHEN recorded_at_ms > started_at_ms THEN recorded_at_ms \
         ELSE started_at_ms END \
         WHERE tenant_id = $1 AND status = 'running' RETURNING run_id",
    )
    .bind(tenant_id)
    .bind(reason)
    .fetch_all(conn)
    .await
    .map_err(Error::internal("close abandoned sync runs"))?;
    rows.iter()
        .map(|row| row.try_get("run_id"))
        .collect::<Result<_, _>>()
        .map_err(Error::internal("close abandoned sync runs"))
}

/// The most recent runs first, after the `(started_at_ms, run_id)` cursor when given.
pub async fn list_runs(
    conn: &mut AnyConnection,
    tenant_id: &str,
    before: Option<(i64, String)>,
    limit: u32,
) -> Result<Vec<SyncRun>, Error> {
    let (before_ms, before_id) = before.unwrap_or((i64::MAX, String::new()));
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM sync_runs WHERE tenant_id = $1 \
         AND (started_at_ms < $2 OR (started_at_ms = $2 AND run_id < $3)) \
         ORDER BY started_at_ms DESC, run_id DESC LIMIT $4"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(before_ms)
        .bind(before_id)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await
        .map_err(Error::internal("list sync runs"))?;
    rows.iter()
        .map(run_from_row)
        .collect::<Result<_, _>>()
        .map_err(Error::internal("read sync runs"))
}

/// The latest run that ended (succeeded or failed) or is running.
pub async fn last_run(conn: &mut AnyConnection, tenant_id: &str) -> Result<Option<SyncRun>, Error> {
    Ok(list_runs(conn, tenant_id, None, 1)
        .await?
        .into_iter()
        .next())
}

/// Counts every present user in no synced group as changed by `run_id`, so a full round's
/// provisioning applies the out-of-scope policy to users imported before they left scope (or
/// before `sync.groups` was set), not only to this round's leavers. Returns how many.
pub async fn mark_out_of_scope(
    conn: &mut AnyConnection,
    tenant_id: &str,
    run_id: &str,
) -> Result<u64, Error> {
    let marked = sqlx::query(
        "UPDATE directory_users SET changed_run = $2 WHERE tenant_id = $1 \
         AND deletion_state = 'present' AND changed_run <> $2 AND NOT EXISTS \
         (SELECT 1 FROM directory_group_members m \
          WHERE m.tenant_id = directory_users.tenant_id AND m.object_id = directory_users.object_id)",
    )
    .bind(tenant_id)
    .bind(run_id)
    .execute(conn)
    .await
    .map_err(Error::internal("mark users out of scope"))?;
    Ok(marked.rows_affected())
}

/// Users changed by `run_id` (content, deletion state, or group scope), after `after` in
/// object id order, each with whether it is in scope: with `in_groups`, a member of a synced
/// group; otherwise every user is.
pub async fn changed_in_run(
    conn: &mut AnyConnection,
    tenant_id: &str,
    run_id: &str,
    in_groups: bool,
    after: &str,
    limit: u32,
) -> Result<Vec<(MirrorUser, bool)>, Error> {
    let sql = format!(
        "SELECT {USER_COLUMNS}, CASE WHEN $5 = 0 OR EXISTS (SELECT 1 FROM directory_group_members m \
         WHERE m.tenant_id = u.tenant_id AND m.object_id = u.object_id) THEN 1 ELSE 0 END AS in_scope \
         FROM directory_users u WHERE u.tenant_id = $1 AND u.changed_run = $2 \
         AND u.object_id > $3 ORDER BY u.object_id LIMIT $4"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(run_id)
        .bind(after)
        .bind(i64::from(limit))
        .bind(i64::from(in_groups))
        .fetch_all(conn)
        .await
        .map_err(Error::internal("read a run's changes"))?;
    rows.iter()
        .map(|row| {
            let in_scope: i64 = row.try_get("in_scope")?;
            Ok((user_from_row(row)?, in_scope != 0))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::internal("read a run's changes"))
}

/// Object ids of present users `run_id` saw for the first time, after `after`; with
/// `in_groups`, only members of the synced groups.
pub async fn new_in_run(
    conn: &mut AnyConnection,
    tenant_id: &str,
    run_id: &str,
    in_groups: bool,
    after: &str,
    limit: u32,
) -> Result<Vec<String>, Error> {
    let rows = sqlx::query(
        "SELECT u.object_id FROM directory_users u WHERE u.tenant_id = $1 AND u.first_seen_run = $2 \
         AND u.deletion_state = 'present' AND u.object_id > $3 \
         AND ($4 = 0 OR EXISTS (SELECT 1 FROM directory_group_members m \
              WHERE m.tenant_id = u.tenant_id AND m.object_id = u.object_id)) \
         ORDER BY u.object_id LIMIT $5",
    )
    .bind(tenant_id)
    .bind(run_id)
    .bind(after)
    .bind(i64::from(in_groups))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .map_err(Error::internal("read a run's new users"))?;
    rows.iter()
        .map(|row| row.try_get("object_id"))
        .collect::<Result<_, _>>()
        .map_err(Error::internal("read a run's new users"))
}

/// One run of this tenant.
pub async fn run(
    conn: &mut AnyConnection,
    tenant_id: &str,
    run_id: &str,
) -> Result<Option<SyncRun>, Error> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM sync_runs WHERE tenant_id = $1 AND run_id = $2");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(run_id)
        .fetch_optional(conn)
        .await
        .map_err(Error::internal("read a sync run"))?;
    row.as_ref()
        .map(run_from_row)
        .transpose()
        .map_err(Error::internal("read a sync run"))
}

/// True when a full sync of this tenant has ever succeeded.
pub async fn has_completed_full_sync(
    conn: &mut AnyConnection,
    tenant_id: &str,
) -> Result<bool, Error> {
    let found = sqlx::query(
        "SELECT 1 AS one FROM sync_runs WHERE tenant_id = $1 AND mode = 'full' AND status = 'succeeded' LIMIT 1",
    )
    .bind(tenant_id)
    .fetch_optional(conn)
    .await
    .map_err(Error::internal("look up full syncs"))?;
    Ok(found.is_some())
}
