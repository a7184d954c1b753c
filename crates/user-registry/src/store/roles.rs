//! Roles and grants. Grants are keyed by the directory identity, so a rename keeps them.

use std::sync::LazyLock;

use anyhow::Context as _;
use service_runtime::storage::{Backend, Dialects, RowsParam, flag, probe_join, rows_from};
use sqlx::{AnyConnection, Row as _};

use crate::domain::{Assignment, Role};
use crate::error::Error;

/// Every role of the catalog, by id.
pub async fn list(conn: &mut AnyConnection) -> Result<Vec<Role>, Error> {
    let rows =
        sqlx::query("SELECT role_id, name, description, all_companies FROM roles ORDER BY role_id")
            .fetch_all(conn)
            .await
            .map_err(Error::internal("list roles"))?;
    rows.iter()
        .map(|row| {
            Ok(Role {
                role_id: row.try_get("role_id")?,
                name: row.try_get("name")?,
                description: row.try_get("description")?,
                all_companies: flag(row, "all_companies")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::internal("read roles"))
}

/// A grant to write or remove: a user (by identity), a role and a scope (`''`: every company).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant {
    pub tenant_id: String,
    pub object_id: String,
    pub role_id: String,
    pub company: String,
}

fn grants_param(backend: Backend, grants: &[Grant]) -> Result<String, Error> {
    let mut param = RowsParam::new(backend);
    for g in grants {
        param
            .push(&[&g.tenant_id, &g.object_id, &g.role_id, &g.company])
            .context("encode grants")?;
    }
    Ok(param.into_text())
}

const GRANT_COLUMNS: &[(&str, &str)] = &[
    ("tenant_id", "text"),
    ("object_id", "text"),
    ("role_id", "text"),
    ("company", "text"),
];

fn grants_from(rows: &[sqlx::any::AnyRow]) -> Result<Vec<Grant>, Error> {
    rows.iter()
        .map(|row| {
            Ok(Grant {
                tenant_id: row.try_get("tenant_id")?,
                object_id: row.try_get("object_id")?,
                role_id: row.try_get("role_id")?,
                company: row.try_get("company")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::internal("read grants"))
}

static INSERT_GRANTS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, GRANT_COLUMNS);
        // `WHERE true` resolves SQLite's upsert parsing ambiguity.
        format!(
            "INSERT INTO role_assignments (tenant_id, object_id, role_id, company, granted_at_ms, granted_by, source) \
             SELECT r.tenant_id, r.object_id, r.role_id, r.company, $2, $3, $4 FROM {rows} WHERE true \
             ON CONFLICT DO NOTHING RETURNING tenant_id, object_id, role_id, company"
        )
    })
});

/// The source of an administrator's grants.
pub const MANUAL: &str = "";

/// The source of the grants a group-to-role rule makes.
pub fn rule_source(rule_id: &str) -> String {
    format!("rule:{rule_id}")
}

/// Writes the grants that `source` does not hold yet, in one statement; returns those it
/// wrote.
pub async fn grant(
    conn: &mut AnyConnection,
    backend: Backend,
    grants: &[Grant],
    at_ms: i64,
    by: &str,
    source: &str,
) -> Result<Vec<Grant>, Error> {
    if grants.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(INSERT_GRANTS.get(backend))
        .bind(grants_param(backend, grants)?)
        .bind(at_ms)
        .bind(by)
        .bind(source)
        .fetch_all(conn)
        .await
        .map_err(Error::internal("grant roles"))?;
    grants_from(&rows)
}

static DELETE_GRANTS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        // A wanted company of '' matches the role's grants in every company.
        let rows = rows_from(backend, GRANT_COLUMNS);
        format!(
            "DELETE FROM role_assignments WHERE (source = $2 OR $3 = '1') AND EXISTS (SELECT 1 FROM {rows} \
             WHERE r.tenant_id = role_assignments.tenant_id AND r.object_id = role_assignments.object_id \
             AND r.role_id = role_assignments.role_id \
             AND (r.company = '' OR r.company = role_assignments.company)) \
             RETURNING tenant_id, object_id, role_id, company"
        )
    })
});

/// Removes the grants `source` holds (every source's, with `all_sources`), in one
/// statement; a grant given with company `''` removes the role in every company. Returns the
/// grants removed (one per source).
pub async fn revoke(
    conn: &mut AnyConnection,
    backend: Backend,
    grants: &[Grant],
    source: &str,
    all_sources: bool,
) -> Result<Vec<Grant>, Error> {
    if grants.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(DELETE_GRANTS.get(backend))
        .bind(grants_param(backend, grants)?)
        .bind(source)
        .bind(service_runtime::storage::flag_text(all_sources))
        .fetch_all(conn)
        .await
        .map_err(Error::internal("revoke roles"))?;
    grants_from(&rows)
}

/// The roles a user holds, by role and company, each with the sources that grant it.
pub async fn of_user(
    conn: &mut AnyConnection,
    tenant_id: &str,
    object_id: &str,
) -> Result<Vec<Assignment>, Error> {
    let rows = sqlx::query(
        "SELECT role_id, company, source FROM role_assignments \
         WHERE tenant_id = $1 AND object_id = $2 ORDER BY role_id, company, source",
    )
    .bind(tenant_id)
    .bind(object_id)
    .fetch_all(conn)
    .await
    .map_err(Error::internal("read a user's roles"))?;
    let mut assignments: Vec<Assignment> = Vec::new();
    for row in &rows {
        let (role_id, company, source): (String, String, String) = (|| {
            Ok::<_, sqlx::Error>((
                row.try_get("role_id")?,
                row.try_get("company")?,
                row.try_get("source")?,
            ))
        })()
        .map_err(Error::internal("read a user's roles"))?;
        let source = if source == MANUAL {
            "manual".to_owned()
        } else {
            source
        };
        match assignments.last_mut() {
            Some(last) if last.role_id == role_id && last.company == company => {
                last.sources.push(source);
            }
            _ => assignments.push(Assignment {
                role_id,
                company,
                sources: vec![source],
            }),
        }
    }
    Ok(assignments)
}

static DELETE_SOURCE_GRANTS: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("tenant_id", "text"), ("object_id", "text")]);
        format!(
            "DELETE FROM role_assignments WHERE source = $2 AND EXISTS (SELECT 1 FROM {rows} \
             WHERE r.tenant_id = role_assignments.tenant_id AND r.object_id = role_assignments.object_id) \
             RETURNING tenant_id, object_id, role_id, company"
        )
    })
});

/// Removes every grant `source` holds for these users, in one statement; returns them.
pub async fn revoke_source(
    conn: &mut AnyConnection,
    backend: Backend,
    users: &[(String, String)],
    source: &str,
) -> Result<Vec<Grant>, Error> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let mut param = RowsParam::new(backend);
    for (tenant_id, object_id) in users {
        param
            .push(&[tenant_id, object_id])
            .context("encode users")?;
    }
    let rows = sqlx::query(DELETE_SOURCE_GRANTS.get(backend))
        .bind(param.into_text())
        .bind(source)
        .fetch_all(conn)
        .await
        .map_err(Error::internal("revoke a rule's grants"))?;
    grants_from(&rows)
}

/// The users holding a grant from `source`, as one scan in no particular order: (tenant,
/// object id) is unique within a rule's source, as a rule grants one role in one scope.
pub fn holders<'c>(
    conn: &'c mut AnyConnection,
    source: &'c str,
) -> impl futures::Stream<Item = Result<(String, String), Error>> + Send + 'c {
    use futures::StreamExt as _;
    sqlx::query("SELECT tenant_id, object_id FROM role_assignments WHERE source = $1")
        .bind(source)
        .fetch(conn)
        .map(|row| {
            let row = row.map_err(Error::internal("list a rule's grants"))?;
            Ok((
                row.try_get("tenant_id")
                    .map_err(Error::internal("read a rule's grants"))?,
                row.try_get("object_id")
                    .map_err(Error::internal("read a rule's grants"))?,
            ))
        })
}

static USERS_BY_KEY: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("key", "text")]);
        format!(
            "SELECT u.user_key, u.tenant_id, u.object_id, u.user_id, u.enabled FROM {}",
            probe_join(backend, &rows, "users", "u.user_key = r.key")
        )
    })
});

/// A user found by user id.
#[derive(Debug, Clone)]
pub struct UserRef {
    pub user_key: String,
    pub tenant_id: String,
    pub object_id: String,
    pub user_id: String,
    pub enabled: bool,
}

/// The users with these user keys, in one statement (missing keys are simply absent).
pub async fn users_by_key(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &[String],
) -> Result<Vec<UserRef>, Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut param = RowsParam::new(backend);
    for key in keys {
        param.push(&[key]).context("encode user ids")?;
    }
    let rows = sqlx::query(USERS_BY_KEY.get(backend))
        .bind(param.into_text())
        .fetch_all(conn)
        .await
        .map_err(Error::internal("look users up"))?;
    rows.iter()
        .map(|row| {
            Ok(UserRef {
                user_key: row.try_get("user_key")?,
                tenant_id: row.try_get("tenant_id")?,
                object_id: row.try_get("object_id")?,
                user_id: row.try_get("user_id")?,
                enabled: flag(row, "enabled")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::internal("read users"))
}

static SET_ENABLED: LazyLock<Dialects> = LazyLock::new(|| {
    Dialects::new(|backend| {
        let rows = rows_from(backend, &[("tenant_id", "text"), ("object_id", "text")]);
        let enabled = match backend {
            Backend::Postgres => "$2::boolean",
            Backend::Sqlite => "$2",
        };
        // SQLite's correlated EXISTS scanned every user (see `delete_by_identity`).
        let matching = match backend {
            Backend::Postgres => format!(
                "EXISTS (SELECT 1 FROM {rows} \
                 WHERE r.tenant_id = users.tenant_id AND r.object_id = users.object_id)"
            ),
            Backend::Sqlite => {
                format!("(tenant_id, object_id) IN (SELECT r.tenant_id, r.object_id FROM {rows})")
            }
        };
        format!(
            "UPDATE users SET enabled = {enabled}, updated_at_ms = $3 \
             WHERE enabled <> {enabled} AND {matching} \
             RETURNING tenant_id, object_id, user_id"
        )
    })
});

/// Sets `enabled` on the given users that differ, in one statement; returns (tenant, object,
/// user id) of those changed.
pub async fn set_enabled(
    conn: &mut AnyConnection,
    backend: Backend,
    users: &[UserRef],
    enabled: bool,
    now_ms: i64,
) -> Result<Vec<(String, String, String)>, Error> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let mut param = RowsParam::new(backend);
    for u in users {
        param
            .push(&[&u.tenant_id, &u.object_id])
            .context("encode users")?;
    }
    let flag_value: i64 = i64::from(enabled);
    let query = sqlx::query(SET_ENABLED.get(backend)).bind(param.into_text());
    let query = match backend {
        Backend::Postgres => query.bind(enabled),
        Backend::Sqlite => query.bind(flag_value),
    };
    let rows = query
        .bind(now_ms)
        .fetch_all(conn)
        .await
        .map_err(Error::internal("set users enabled"))?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("tenant_id")?,
                row.try_get("object_id")?,
                row.try_get("user_id")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::internal("read changed users"))
}

/// Changes a user's id. Returns false when another user holds the new id (case-insensitive).
pub async fn rename(
    conn: &mut AnyConnection,
    tenant_id: &str,
    object_id: &str,
    new_user_id: &str,
    new_key: &str,
    now_ms: i64,
) -> Result<bool, Error> {
    let result = sqlx::query(
        "UPDATE users SET user_id = $3, user_key = $4, updated_at_ms = $5 \
         WHERE tenant_id = $1 AND object_id = $2",
    )
    .bind(tenant_id)
    .bind(object_id)
    .bind(new_user_id)
    .bind(new_key)
    .bind(now_ms)
    .execute(conn)
    .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if service_runtime::storage::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(Error::internal("rename user")(e)),
    }
}
