//! Group-to-role rules: what import-worker registered, and their removal.

use super::*;

const RULE_COLUMNS: &str =
    "rule_id, group_id, role_id, company, created_by, created_at_ms, removing";

fn rule_from_row(row: &AnyRow) -> Result<RoleRule, sqlx::Error> {
    Ok(RoleRule {
        rule_id: row.try_get("rule_id")?,
        group_id: row.try_get("group_id")?,
        role_id: row.try_get("role_id")?,
        company: row.try_get("company")?,
        created_by: row.try_get("created_by")?,
        created_at_ms: row.try_get("created_at_ms")?,
        removing: flag(row, "removing")?,
    })
}

/// Every rule, removals in progress included, by rule id.
pub async fn rules(conn: &mut AnyConnection) -> Result<Vec<RoleRule>, Error> {
    let sql = format!("SELECT {RULE_COLUMNS} FROM role_rules ORDER BY rule_id");
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(conn)
        .await
        .map_err(Error::internal("list rules"))?;
    rows.iter()
        .map(rule_from_row)
        .collect::<Result<_, _>>()
        .map_err(Error::internal("read rules"))
}

/// Stores a rule unless one with the same group, role and company exists; answers the rule
/// that is stored (the new one or the existing one).
pub async fn insert_rule(conn: &mut AnyConnection, rule: &RoleRule) -> Result<RoleRule, Error> {
    sqlx::query(
        "INSERT INTO role_rules (rule_id, group_id, role_id, company, created_by, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (group_id, role_id, company) DO NOTHING",
    )
    .bind(&rule.rule_id)
    .bind(&rule.group_id)
    .bind(&rule.role_id)
    .bind(&rule.company)
    .bind(&rule.created_by)
    .bind(rule.created_at_ms)
    .execute(&mut *conn)
    .await
    .map_err(Error::internal("insert rule"))?;
    let sql = format!(
        "SELECT {RULE_COLUMNS} FROM role_rules WHERE group_id = $1 AND role_id = $2 AND company = $3"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(&rule.group_id)
        .bind(&rule.role_id)
        .bind(&rule.company)
        .fetch_one(conn)
        .await
        .map_err(Error::internal("read rule"))?;
    rule_from_row(&row).map_err(Error::internal("read rule"))
}

/// The rule with this id.
pub async fn rule(conn: &mut AnyConnection, rule_id: &str) -> Result<Option<RoleRule>, Error> {
    let sql = format!("SELECT {RULE_COLUMNS} FROM role_rules WHERE rule_id = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(rule_id)
        .fetch_optional(conn)
        .await
        .map_err(Error::internal("read rule"))?;
    row.as_ref()
        .map(rule_from_row)
        .transpose()
        .map_err(Error::internal("read rule"))
}

/// Marks a rule as being removed: it grants nothing from now on.
pub async fn mark_rule_removing(conn: &mut AnyConnection, rule_id: &str) -> Result<(), Error> {
    sqlx::query("UPDATE role_rules SET removing = $2 WHERE rule_id = $1")
        .bind(rule_id)
        .bind(true)
        .execute(conn)
        .await
        .map_err(Error::internal("mark rule removing"))?;
    Ok(())
}

/// Deletes a rule (once every grant it made is revoked).
pub async fn delete_rule(conn: &mut AnyConnection, rule_id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM role_rules WHERE rule_id = $1")
        .bind(rule_id)
        .execute(conn)
        .await
        .map_err(Error::internal("delete rule"))?;
    Ok(())
}
