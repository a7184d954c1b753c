//! SCIM resources as last written, and the bearer tokens Entra presents (issue 18).

use serde_json::{Map, Value};

use super::*;
use crate::domain::scim::{Kind, Lookup};

/// A SCIM resource as kept.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResource {
    pub id: String,
    pub external_id: Option<String>,
    /// The attributes as last written (no `id`, no `meta`; a Group without `members`).
    pub body: Map<String, Value>,
    pub version: i64,
    pub created_ms: i64,
    pub modified_ms: i64,
}

type ResourceRow = (String, Option<String>, String, i64, i64, i64);

const COLUMNS: &str = "id, external_id, body, version, created_ms, modified_ms";

fn from_row(
    (id, external_id, body, version, created_ms, modified_ms): ResourceRow,
) -> Result<StoredResource, Error> {
    let body = match serde_json::from_str(&body) {
        Ok(Value::Object(body)) => body,
        _ => {
            return Err(Error::Internal(anyhow::anyhow!(
                "SCIM resource {id} holds no JSON object"
            )));
        }
    };
    Ok(StoredResource {
        id,
        external_id,
        body,
        version,
        created_ms,
        modified_ms,
    })
}

/// The resource of this kind with this id.
pub async fn get(
    conn: &mut AnyConnection,
    tenant_id: &str,
    kind: Kind,
    id: &str,
) -> Result<Option<StoredResource>, Error> {
    find(conn, tenant_id, kind, &Lookup::Id(id.to_owned())).await
}

/// The resource an indexed equality names (at most one: each is unique or a key).
pub async fn find(
    conn: &mut AnyConnection,
    tenant_id: &str,
    kind: Kind,
    lookup: &Lookup,
) -> Result<Option<StoredResource>, Error> {
    let (column, value) = match lookup {
        Lookup::Id(id) => ("id", id.clone()),
        Lookup::ExternalId(id) => ("external_id", id.clone()),
        Lookup::UniqueName(name) => ("unique_name", name.to_lowercase()),
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM scim_resources WHERE tenant_id = $1 AND kind = $2 AND {column} = $3 \
         ORDER BY id LIMIT 1"
    );
    let row: Option<ResourceRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(kind.as_str())
        .bind(value)
        .fetch_optional(conn)
        .await
        .map_err(Error::internal("read a SCIM resource"))?;
    row.map(from_row).transpose()
}

/// Resources of a kind in id order, after `after` (`""`: from the start).
pub async fn page(
    conn: &mut AnyConnection,
    tenant_id: &str,
    kind: Kind,
    after: &str,
    limit: u32,
) -> Result<Vec<StoredResource>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM scim_resources WHERE tenant_id = $1 AND kind = $2 AND id > $3 \
         ORDER BY id LIMIT $4"
    );
    let rows: Vec<ResourceRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(kind.as_str())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await
        .map_err(Error::internal("list SCIM resources"))?;
    rows.into_iter().map(from_row).collect()
}

/// Resources of a kind in id order, from the `offset`-th (SCIM's `startIndex` paging).
pub async fn page_at(
    conn: &mut AnyConnection,
    tenant_id: &str,
    kind: Kind,
    offset: i64,
    limit: u32,
) -> Result<Vec<StoredResource>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM scim_resources WHERE tenant_id = $1 AND kind = $2 \
         ORDER BY id LIMIT $3 OFFSET $4"
    );
    let rows: Vec<ResourceRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(kind.as_str())
        .bind(i64::from(limit))
        .bind(offset.max(0))
        .fetch_all(conn)
        .await
        .map_err(Error::internal("list SCIM resources"))?;
    rows.into_iter().map(from_row).collect()
}

/// How many resources of a kind the tenant holds.
pub async fn count(conn: &mut AnyConnection, tenant_id: &str, kind: Kind) -> Result<u64, Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM scim_resources WHERE tenant_id = $1 AND kind = $2",
    )
    .bind(tenant_id)
    .bind(kind.as_str())
    .fetch_one(conn)
    .await
    .map_err(Error::internal("count SCIM resources"))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Writes a resource (insert or replace); `unique_name` is its userName/displayName.
pub async fn put(
    conn: &mut AnyConnection,
    tenant_id: &str,
    kind: Kind,
    resource: &StoredResource,
    unique_name: &str,
) -> Result<(), Error> {
    let body = Value::Object(resource.body.clone()).to_string();
    sqlx::query(
        "INSERT INTO scim_resources (tenant_id, kind, id, external_id, unique_name, body, version, \
         created_ms, modified_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (tenant_id, kind, id) DO UPDATE SET external_id = excluded.external_id, \
         unique_name = excluded.unique_name, body = excluded.body, version = excluded.version, \
         modified_ms = excluded.modified_ms",
    )
    .bind(tenant_id)
    .bind(kind.as_str())
    .bind(&resource.id)
    .bind(&resource.external_id)
    .bind(unique_name.to_lowercase())
    .bind(body)
    .bind(resource.version)
    .bind(resource.created_ms)
    .bind(resource.modified_ms)
    .execute(conn)
    .await
    .map_err(Error::internal("write a SCIM resource"))?;
    Ok(())
}

/// Deletes a resource; false when there was none.
pub async fn delete(
    conn: &mut AnyConnection,
    tenant_id: &str,
    kind: Kind,
    id: &str,
) -> Result<bool, Error> {
    let result =
        sqlx::query("DELETE FROM scim_resources WHERE tenant_id = $1 AND kind = $2 AND id = $3")
            .bind(tenant_id)
            .bind(kind.as_str())
            .bind(id)
            .execute(conn)
            .await
            .map_err(Error::internal("delete a SCIM resource"))?;
    Ok(result.rows_affected() > 0)
}

/// Removes members from a group. Users left in no group count as changed by `run_id`, as a
/// round's leavers do (`remove_unseen_members`).
pub async fn remove_group_members(
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
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE directory_users SET changed_run = $3 WHERE tenant_id = $2 \
         AND object_id IN (SELECT r.id FROM {})",
        rows_from(backend, &[("id", "text")])
    )))
    .bind(id_rows(backend, object_ids)?)
    .bind(tenant_id)
    .bind(run_id)
    .execute(&mut *conn)
    .await
    .map_err(Error::internal("mark users leaving a group"))?;
    sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM directory_group_members WHERE tenant_id = $2 AND group_id = $3 \
         AND object_id IN (SELECT r.id FROM {})",
        rows_from(backend, &[("id", "text")])
    )))
    .bind(id_rows(backend, object_ids)?)
    .bind(tenant_id)
    .bind(group_id)
    .execute(conn)
    .await
    .map_err(Error::internal("remove group members"))?;
    Ok(())
}

/// The object ids of a group's members, in order, after `after`.
pub async fn group_member_ids(
    conn: &mut AnyConnection,
    tenant_id: &str,
    group_id: &str,
    after: &str,
    limit: u32,
) -> Result<Vec<String>, Error> {
    sqlx::query_scalar(
        "SELECT object_id FROM directory_group_members WHERE tenant_id = $1 AND group_id = $2 \
         AND object_id > $3 ORDER BY object_id LIMIT $4",
    )
    .bind(tenant_id)
    .bind(group_id)
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .map_err(Error::internal("read group members"))
}

/// Forgets a group: its row and its members (whose users count as changed by `run_id`).
pub async fn delete_group(
    conn: &mut AnyConnection,
    tenant_id: &str,
    group_id: &str,
    run_id: &str,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE directory_users SET changed_run = $3 WHERE tenant_id = $1 AND object_id IN \
         (SELECT object_id FROM directory_group_members WHERE tenant_id = $1 AND group_id = $2)",
    )
    .bind(tenant_id)
    .bind(group_id)
    .bind(run_id)
    .execute(&mut *conn)
    .await
    .map_err(Error::internal("mark users leaving a group"))?;
    for table in ["directory_group_members", "directory_groups"] {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE tenant_id = $1 AND group_id = $2"
        )))
        .bind(tenant_id)
        .bind(group_id)
        .execute(&mut *conn)
        .await
        .map_err(Error::internal("delete a group"))?;
    }
    Ok(())
}

/// A SCIM bearer token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub token_id: String,
    pub name: String,
    pub created_ms: i64,
    pub created_by: String,
    pub last_used_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

type TokenTuple = (String, String, i64, String, Option<i64>, Option<i64>);

/// Stores a new token's digest.
pub async fn create_token(
    conn: &mut AnyConnection,
    tenant_id: &str,
    token: &TokenRow,
    digest: &str,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO scim_tokens (token_id, tenant_id, name, digest, created_ms, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&token.token_id)
    .bind(tenant_id)
    .bind(&token.name)
    .bind(digest)
    .bind(token.created_ms)
    .bind(&token.created_by)
    .execute(conn)
    .await
    .map_err(Error::internal("store a SCIM token"))?;
    Ok(())
}

/// The tenant's tokens, newest first.
pub async fn list_tokens(
    conn: &mut AnyConnection,
    tenant_id: &str,
) -> Result<Vec<TokenRow>, Error> {
    let rows: Vec<TokenTuple> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {TOKEN_COLUMNS} FROM scim_tokens WHERE tenant_id = $1 \
         ORDER BY created_ms DESC, token_id"
    )))
    .bind(tenant_id)
    .fetch_all(conn)
    .await
    .map_err(Error::internal("list SCIM tokens"))?;
    Ok(rows.into_iter().map(token_from_row).collect())
}

/// One of the tenant's tokens.
pub async fn token(
    conn: &mut AnyConnection,
    tenant_id: &str,
    token_id: &str,
) -> Result<Option<TokenRow>, Error> {
    let row: Option<TokenTuple> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {TOKEN_COLUMNS} FROM scim_tokens WHERE tenant_id = $1 AND token_id = $2"
    )))
    .bind(tenant_id)
    .bind(token_id)
    .fetch_optional(conn)
    .await
    .map_err(Error::internal("read a SCIM token"))?;
    Ok(row.map(token_from_row))
}

const TOKEN_COLUMNS: &str = "token_id, name, created_ms, created_by, last_used_ms, revoked_ms";

fn token_from_row(
    (token_id, name, created_ms, created_by, last_used_ms, revoked_ms): TokenTuple,
) -> TokenRow {
    TokenRow {
        token_id,
        name,
        created_ms,
        created_by,
        last_used_ms,
        revoked_ms,
    }
}

/// Revokes a token; false when the tenant has no such live token.
pub async fn revoke_token(
    conn: &mut AnyConnection,
    tenant_id: &str,
    token_id: &str,
    now_ms: i64,
) -> Result<bool, Error> {
    let result = sqlx::query(
        "UPDATE scim_tokens SET revoked_ms = $3 WHERE tenant_id = $1 AND token_id = $2 AND revoked_ms IS NULL",
    )
    .bind(tenant_id)
    .bind(token_id)
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(Error::internal("revoke a SCIM token"))?;
    Ok(result.rows_affected() > 0)
}

/// The live token with this digest (its id), noting its use at most once a minute.
pub async fn authenticate(
    conn: &mut AnyConnection,
    tenant_id: &str,
    digest: &str,
    now_ms: i64,
) -> Result<Option<String>, Error> {
    let found: Option<(String, Option<i64>)> = sqlx::query_as(
        "SELECT token_id, last_used_ms FROM scim_tokens WHERE digest = $1 AND tenant_id = $2 \
         AND revoked_ms IS NULL",
    )
    .bind(digest)
    .bind(tenant_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(Error::internal("check a SCIM token"))?;
    let Some((token_id, last_used)) = found else {
        return Ok(None);
    };
    if last_used.is_none_or(|at| now_ms - at > 60_000) {
        sqlx::query("UPDATE scim_tokens SET last_used_ms = $2 WHERE token_id = $1")
            .bind(&token_id)
            .bind(now_ms)
            .execute(conn)
            .await
            .map_err(Error::internal("note a SCIM token's use"))?;
    }
    Ok(Some(token_id))
}

/// Moves the users changed by a SCIM run into run `to` (those it first mirrored stay new in
/// `to`, for auto-import): those of run `from`, or (`None`) those
/// of every SCIM run never recorded (the open run of a process that stopped). Answers how many.
pub async fn carry_over_changes(
    conn: &mut AnyConnection,
    tenant_id: &str,
    from: Option<&str>,
    to: &str,
) -> Result<u64, Error> {
    let result = match from {
        Some(from) => {
            sqlx::query(
                "UPDATE directory_users SET changed_run = $3, first_seen_run = CASE \
                 WHEN first_seen_run = $2 THEN $3 ELSE first_seen_run END \
                 WHERE tenant_id = $1 AND changed_run = $2",
            )
            .bind(tenant_id)
            .bind(from)
            .bind(to)
            .execute(conn)
            .await
        }
        None => {
            sqlx::query(
                "UPDATE directory_users SET changed_run = $2, first_seen_run = CASE \
                 WHEN first_seen_run = changed_run THEN $2 ELSE first_seen_run END \
                 WHERE tenant_id = $1 AND changed_run LIKE 'scim-%' AND changed_run <> $2 \
                 AND NOT EXISTS (SELECT 1 FROM sync_runs r WHERE r.run_id = directory_users.changed_run)",
            )
            .bind(tenant_id)
            .bind(to)
            .execute(conn)
            .await
        }
    }
    .map_err(Error::internal("move SCIM changes to the open run"))?;
    Ok(result.rows_affected())
}
