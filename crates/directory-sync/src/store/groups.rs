//! Synced groups and their members.

use super::*;

/// A mirrored group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub group_id: String,
    pub display_name: String,
    pub member_count: u64,
}

/// Records a group and its member count.
pub async fn upsert_group(
    conn: &mut AnyConnection,
    tenant_id: &str,
    group: &GroupRow,
    now_ms: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO directory_groups (tenant_id, group_id, display_name, member_count, synced_at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, group_id) DO UPDATE SET \
         display_name = excluded.display_name, member_count = excluded.member_count, synced_at_ms = excluded.synced_at_ms",
    )
    .bind(tenant_id)
    .bind(&group.group_id)
    .bind(&group.display_name)
    .bind(i64::try_from(group.member_count).unwrap_or(i64::MAX))
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(Error::internal("upsert group"))?;
    Ok(())
}

static ADD_MEMBERS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("id", "text")]);
        format!(
            "INSERT INTO directory_group_members (tenant_id, group_id, object_id, seen_run) \
             SELECT $2, $3, r.id, $4 FROM {rows} WHERE true \
             ON CONFLICT (tenant_id, group_id, object_id) DO UPDATE SET seen_run = excluded.seen_run"
        )
    })
});

static MARK_JOINERS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("id", "text")]);
        format!(
            "UPDATE directory_users SET changed_run = $3 WHERE tenant_id = $2 \
             AND object_id IN (SELECT r.id FROM {rows}) \
             AND NOT EXISTS (SELECT 1 FROM directory_group_members m \
                 WHERE m.tenant_id = $2 AND m.object_id = directory_users.object_id)"
        )
    })
});

/// Records members of a group as seen by `run_id`, in one statement.
pub async fn add_group_members(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    group_id: &str,
    object_ids: &[String],
    run_id: &str,
) -> Result<(), Error> {
    if object_ids.is_empty() {
        return Ok(());
    }
    // Users in no synced group until now come into scope: their registry users are enabled
    // again by this run's provisioning.
    sqlx::query(MARK_JOINERS.get(backend))
        .bind(id_rows(backend, object_ids)?)
        .bind(tenant_id)
        .bind(run_id)
        .execute(&mut *conn)
        .await
        .map_err(Error::internal("mark users coming into scope"))?;
    sqlx::query(ADD_MEMBERS.get(backend))
        .bind(id_rows(backend, object_ids)?)
        .bind(tenant_id)
        .bind(group_id)
        .bind(run_id)
        .execute(conn)
        .await
        .map_err(Error::internal("add group members"))?;
    Ok(())
}

/// How many members the mirror holds for a group.
pub async fn group_member_count(
    conn: &mut AnyConnection,
    tenant_id: &str,
    group_id: &str,
) -> Result<u64, Error> {
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM directory_group_members WHERE tenant_id = $1 AND group_id = $2",
    )
    .bind(tenant_id)
    .bind(group_id)
    .fetch_one(conn)
    .await
    .map_err(Error::internal("count group members"))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Removes the members of a group that `run_id` (a complete read of it) did not see; returns
/// how many left.
pub async fn remove_unseen_members(
    conn: &mut AnyConnection,
    tenant_id: &str,
    group_id: &str,
    run_id: &str,
) -> Result<u64, Error> {
    // The leavers count as changed by this run: if no other synced group holds them, they
    // are out of scope and this run's provisioning disables their registry users.
    sqlx::query(
        "UPDATE directory_users SET changed_run = $3 WHERE tenant_id = $1 AND object_id IN \
         (SELECT object_id FROM directory_group_members WHERE tenant_id = $1 AND group_id = $2 \
          AND seen_run <> $3)",
    )
    .bind(tenant_id)
    .bind(group_id)
    .bind(run_id)
    .execute(&mut *conn)
    .await
    .map_err(Error::internal("mark users leaving a group"))?;
    let result = sqlx::query(
        "DELETE FROM directory_group_members WHERE tenant_id = $1 AND group_id = $2 AND seen_run <> $3",
    )
    .bind(tenant_id)
    .bind(group_id)
    .bind(run_id)
    .execute(conn)
    .await
    .map_err(Error::internal("remove group members"))?;
    Ok(result.rows_affected())
}

/// Mirrored groups whose name starts with `search` (case-insensitive), by name, after the
/// `(display name, group id)` cursor.
pub async fn list_groups(
    conn: &mut AnyConnection,
    tenant_id: &str,
    search: &str,
    after: &(String, String),
    limit: u32,
) -> Result<Vec<GroupRow>, Error> {
    let rows = sqlx::query(
        "SELECT group_id, display_name, member_count FROM directory_groups \
         WHERE tenant_id = $1 AND (display_name, group_id) > ($2, $3) \
         AND ($4 = '' OR lower(display_name) LIKE $5 ESCAPE '\\') \
         ORDER BY display_name, group_id LIMIT $6",
    )
    .bind(tenant_id)
    .bind(&after.0)
    .bind(&after.1)
    .bind(search.to_lowercase())
    .bind(format!(
        "{}%",
        service_runtime::storage::escape_like(&search.to_lowercase())
    ))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .map_err(Error::internal("list groups"))?;
    rows.iter()
        .map(|row| {
            Ok(GroupRow {
                group_id: row.try_get("group_id")?,
                display_name: row.try_get("display_name")?,
                member_count: u64::try_from(row.try_get::<i64, _>("member_count")?).unwrap_or(0),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::internal("read groups"))
}

/// True when the group is mirrored.
pub async fn group_exists(
    conn: &mut AnyConnection,
    tenant_id: &str,
    group_id: &str,
) -> Result<bool, Error> {
    let found =
        sqlx::query("SELECT 1 AS one FROM directory_groups WHERE tenant_id = $1 AND group_id = $2")
            .bind(tenant_id)
            .bind(group_id)
            .fetch_optional(conn)
            .await
            .map_err(Error::internal("look up group"))?;
    Ok(found.is_some())
}
