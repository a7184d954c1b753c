//! What the registry holds to check its callers' claims (issue 14): each import id's binding to
//! its caller, person, company and privacy, and the group-to-role rules import-worker
//! registered.

use service_runtime::storage::{Backend, RowsParam, flag, flag_text, rows_from};
use sqlx::{AnyConnection, AssertSqlSafe, Row as _};

use crate::error::Error;

/// Who an import id belongs to and what it imports into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportBinding {
    pub import_id: String,
    /// The authenticated caller (a service identity, or an administrator calling directly).
    pub principal: String,
    /// The person the import is made for.
    pub actor: String,
    pub company: String,
    pub private: bool,
}

/// Binds `binding.import_id` when it is new, and answers the binding it has (this one, or
/// the one an earlier call made) and whether this call made it. Read first: every chunk of a
/// batch job after its first finds the binding, and a read waits on nobody, where the insert
/// waits for any chunk of the job that is still inserting it.
pub async fn bind_import(
    conn: &mut AnyConnection,
    binding: &ImportBinding,
    now_ms: i64,
) -> Result<(ImportBinding, bool), Error> {
    if let Some(bound) = read_binding(conn, &binding.import_id).await? {
        return Ok((bound, false));
    }
    let inserted = sqlx::query(
        "INSERT INTO imports (import_id, principal, actor, company, private, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5 = '1', $6) ON CONFLICT (import_id) DO NOTHING",
    )
    .bind(&binding.import_id)
    .bind(&binding.principal)
    .bind(&binding.actor)
    .bind(&binding.company)
    .bind(flag_text(binding.private))
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .map_err(Error::internal("bind an import id"))?;
    let bound = read_binding(conn, &binding.import_id)
        .await?
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("import id bound and not found")))?;
    Ok((bound, inserted.rows_affected() == 1))
}

async fn read_binding(
    conn: &mut AnyConnection,
    import_id: &str,
) -> Result<Option<ImportBinding>, Error> {
    let row = sqlx::query(
        "SELECT import_id, principal, actor, company, private FROM imports WHERE import_id = $1",
    )
    .bind(import_id)
    .fetch_optional(conn)
    .await
    .map_err(Error::internal("read an import id"))?;
    row.map(|row| {
        Ok::<_, sqlx::Error>(ImportBinding {
            import_id: row.try_get("import_id")?,
            principal: row.try_get("principal")?,
            actor: row.try_get("actor")?,
            company: row.try_get("company")?,
            private: flag(&row, "private")?,
        })
    })
    .transpose()
    .map_err(Error::internal("read an import id"))
}

/// Of `import_ids`, the private ones, each with the person it belongs to.
pub async fn private_imports(
    conn: &mut AnyConnection,
    backend: Backend,
    import_ids: &[&str],
) -> Result<Vec<(String, String)>, Error> {
    if import_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut param = RowsParam::new(backend);
    for id in import_ids {
        param
            .push(&[*id])
            .map_err(|e| Error::Internal(e.context("encode import ids")))?;
    }
    let rows = rows_from(backend, &[("import_id", "text")]);
    let sql = format!(
        "SELECT i.import_id, i.actor FROM imports i WHERE i.private = ($2 = '1') \
         AND i.import_id IN (SELECT r.import_id FROM {rows})"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(param.into_text())
        .bind(flag_text(true))
        .fetch_all(conn)
        .await
        .map_err(Error::internal("read private imports"))?;
    rows.iter()
        .map(|row| Ok((row.try_get("import_id")?, row.try_get("actor")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::internal("read private imports"))
}

/// A group-to-role rule as import-worker registered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredRule {
    pub rule_id: String,
    pub role_id: String,
    /// `''`: every company.
    pub company: String,
    pub retired: bool,
}

/// The registered rule `rule_id`, if any.
pub async fn rule(
    conn: &mut AnyConnection,
    rule_id: &str,
) -> Result<Option<RegisteredRule>, Error> {
    let row =
        sqlx::query("SELECT rule_id, role_id, company, retired FROM role_rules WHERE rule_id = $1")
            .bind(rule_id)
            .fetch_optional(conn)
            .await
            .map_err(Error::internal("read a registered rule"))?;
    row.map(|row| {
        Ok::<_, sqlx::Error>(RegisteredRule {
            rule_id: row.try_get("rule_id")?,
            role_id: row.try_get("role_id")?,
            company: row.try_get("company")?,
            retired: flag(&row, "retired")?,
        })
    })
    .transpose()
    .map_err(Error::internal("read a registered rule"))
}

/// Registers a rule, or brings a retired one back; a rule that exists keeps its role and
/// company (the caller compares).
pub async fn register_rule(
    conn: &mut AnyConnection,
    rule: &RegisteredRule,
    registered_by: &str,
    now_ms: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO role_rules (rule_id, role_id, company, retired, registered_by, registered_at_ms) \
         VALUES ($1, $2, $3, $4 = '1', $5, $6) \
         ON CONFLICT (rule_id) DO UPDATE SET retired = excluded.retired",
    )
    .bind(&rule.rule_id)
    .bind(&rule.role_id)
    .bind(&rule.company)
    .bind(flag_text(false))
    .bind(registered_by)
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(Error::internal("register a rule"))?;
    Ok(())
}

/// Marks a rule retired (nothing when it is not registered).
pub async fn retire_rule(conn: &mut AnyConnection, rule_id: &str) -> Result<(), Error> {
    sqlx::query("UPDATE role_rules SET retired = ($2 = '1') WHERE rule_id = $1")
        .bind(rule_id)
        .bind(flag_text(true))
        .execute(conn)
        .await
        .map_err(Error::internal("retire a rule"))?;
    Ok(())
}
