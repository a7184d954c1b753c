//! Grants made by group-to-role rules (issue 8). import-worker owns the rules and works out
//! who is in each rule's group; the registry keeps each rule's grants apart from everyone
//! else's (the `source` of a grant is `rule:<rule id>`), so a rule grants and revokes exactly
//! what it made and never an administrator's grant of the same role.

use std::collections::BTreeSet;

use crate::domain::Scope;
use crate::domain::audit::Action;
use crate::error::Error;
use crate::store::audit::NewEvent;
use crate::store::bindings::RegisteredRule;
use crate::store::roles::{Grant, rule_source};
use crate::store::{self, ObjectKey};

use super::{Caller, MAX_USERS_PER_CHANGE, RoleChange};

/// Users per streamed batch of a rule's grants.
pub const HOLDERS_PER_BATCH: usize = 1000;
/// Longest rule id.
const MAX_RULE_ID_LEN: usize = 64;

/// One call's grants and revokes for one rule.
#[derive(Debug, Clone)]
pub struct RuleGrants {
    pub rule_id: String,
    pub role_id: String,
    /// Empty: every company.
    pub company: String,
    pub tenant_id: String,
    pub grant: Vec<String>,
    pub revoke: Vec<String>,
}

/// A grant written or removed by a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleGrantChange {
    pub object_id: String,
    pub user_id: String,
    pub granted: bool,
}

fn check_rule_id(rule_id: &str) -> Result<(), Error> {
    let valid = !rule_id.is_empty()
        && rule_id.len() <= MAX_RULE_ID_LEN
        && rule_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "rule_id",
            format!("1 to {MAX_RULE_ID_LEN} letters, digits, '-' or '_'"),
        ))
    }
}

impl super::Registry {
    /// Writes and removes one rule's grants as made through `caller.request_id` (a sync run,
    /// job or request); only object ids the registry holds a user for are granted. With
    /// `dry_run`, answers what would change and writes nothing.
    pub async fn apply_rule_grants(
        &self,
        caller: &Caller,
        rule: &RuleGrants,
        dry_run: bool,
        now_ms: i64,
    ) -> Result<Vec<RuleGrantChange>, Error> {
        check_rule_id(&rule.rule_id)?;
        if rule.grant.len() + rule.revoke.len() > MAX_USERS_PER_CHANGE {
            return Err(Error::invalid(
                "grant_object_ids",
                format!(
                    "{} object ids in one call; the limit is {MAX_USERS_PER_CHANGE}",
                    rule.grant.len() + rule.revoke.len()
                ),
            ));
        }
        if rule.tenant_id.trim().is_empty() && !(rule.grant.is_empty() && rule.revoke.is_empty()) {
            return Err(Error::invalid("tenant_id", "must not be empty"));
        }
        let backend = self.db.backend();
        let mut tx = self
            .db
            .begin_write()
            .await
            .map_err(Error::internal("begin rule grants"))?;
        // The role and company are validated even when there is nothing to write, so a rule can
        // be checked before it is stored.
        let change = RoleChange {
            user_ids: Vec::new(),
            role_ids: vec![rule.role_id.clone()],
            company: rule.company.clone(),
        };
        let (roles, scope) = self.resolve_roles(&mut tx, &change).await?;
        let role = roles
            .into_iter()
            .next()
            .ok_or_else(|| Error::UnknownRole(rule.role_id.clone()))?;
        if let Scope::Company(code) = &scope
            && role.all_companies
        {
            return Err(Error::invalid(
                "company",
                format!(
                    "role {} covers every company; a rule grants it without a company (not {code})",
                    role.role_id
                ),
            ));
        }
        // Only a rule import-worker registered, with its role and company, may write grants;
        // a retired one may still revoke what it made. A dry run writes nothing, so a rule is
        // checked (and previewed) before it is stored and registered.
        let writes = !(rule.grant.is_empty() && rule.revoke.is_empty());
        if writes && !dry_run {
            let registered = store::bindings::rule(&mut tx, &rule.rule_id).await?;
            check_registered(
                registered.as_ref(),
                &rule.rule_id,
                &role.role_id,
                scope.as_str(),
                !rule.grant.is_empty(),
            )?;
        }
        let source = rule_source(&rule.rule_id);
        let tenant = rule.tenant_id.trim();
        let normalize = |ids: &[String]| -> BTreeSet<String> {
            ids.iter()
                .map(|id| id.trim().to_ascii_lowercase())
                .collect()
        };
        let (grant_ids, revoke_ids) = (normalize(&rule.grant), normalize(&rule.revoke));
        let keys: Vec<ObjectKey> = grant_ids
            .iter()
            .chain(&revoke_ids)
            .map(|object_id| ObjectKey {
                tenant_id: tenant.to_owned(),
                object_id: object_id.clone(),
            })
            .collect();
        let users = store::users_by_object(&mut tx, backend, &keys).await?;
        let user_id = |object_id: &str| -> String {
            users
                .get(&ObjectKey {
                    tenant_id: tenant.to_owned(),
                    object_id: object_id.to_owned(),
                })
                .map_or_else(String::new, |u| u.user_id.clone())
        };

        let grants: Vec<Grant> = grant_ids
            .iter()
            .filter(|id| !revoke_ids.contains(*id))
            .filter(|id| {
                users.contains_key(&ObjectKey {
                    tenant_id: tenant.to_owned(),
                    object_id: (*id).clone(),
                })
            })
            .map(|object_id| Grant {
                tenant_id: tenant.to_owned(),
                object_id: object_id.clone(),
                role_id: role.role_id.clone(),
                company: scope.as_str().to_owned(),
            })
            .collect();
        let granted =
            store::roles::grant(&mut tx, backend, &grants, now_ms, &caller.actor, &source).await?;
        let revoke: Vec<(String, String)> = revoke_ids
            .iter()
            .map(|id| (tenant.to_owned(), id.clone()))
            .collect();
        let revoked = store::roles::revoke_source(&mut tx, backend, &revoke, &source).await?;

        let mut changes = Vec::with_capacity(granted.len() + revoked.len());
        let mut events = Vec::with_capacity(granted.len() + revoked.len());
        for (grants, granted, action) in [
            (&granted, true, Action::RoleGrant),
            (&revoked, false, Action::RoleRevoke),
        ] {
            for g in grants {
                let user_id = user_id(&g.object_id);
                changes.push(RuleGrantChange {
                    object_id: g.object_id.clone(),
                    user_id: user_id.clone(),
                    granted,
                });
                let detail = serde_json::json!({
                    "role_id": g.role_id,
                    "company": (!g.company.is_empty()).then_some(&g.company),
                    "rule_id": rule.rule_id,
                });
                events.push(NewEvent {
                    action,
                    tenant_id: g.tenant_id.clone(),
                    object_id: g.object_id.clone(),
                    user_id,
                    detail: detail.to_string(),
                });
            }
        }
        if dry_run {
            // Nothing is written: the transaction ends without a commit.
            return Ok(changes);
        }
        store::audit::record(&mut tx, backend, caller.origin(now_ms), &events).await?;
        tx.commit()
            .await
            .map_err(Error::internal("commit rule grants"))?;
        Ok(changes)
    }

    /// Records a rule import-worker holds, so its grants are accepted; a registered rule id
    /// keeps its role and company for good (another is refused), and registering a retired
    /// rule again brings it back.
    pub async fn register_rule(
        &self,
        registered_by: &str,
        rule_id: &str,
        role_id: &str,
        company: &str,
        now_ms: i64,
    ) -> Result<(), Error> {
        check_rule_id(rule_id)?;
        let mut tx = self
            .db
            .begin_write()
            .await
            .map_err(Error::internal("begin register rule"))?;
        let change = RoleChange {
            user_ids: Vec::new(),
            role_ids: vec![role_id.to_owned()],
            company: company.to_owned(),
        };
        let (roles, scope) = self.resolve_roles(&mut tx, &change).await?;
        let role = roles
            .into_iter()
            .next()
            .ok_or_else(|| Error::UnknownRole(role_id.to_owned()))?;
        if let Some(found) = store::bindings::rule(&mut tx, rule_id).await?
            && (found.role_id != role.role_id || found.company != scope.as_str())
        {
            return Err(Error::RuleNotRegistered(format!(
                "rule {rule_id} is registered for role {} in {:?}; a rule id keeps its role and \
                 company",
                found.role_id, found.company
            )));
        }
        let wanted = RegisteredRule {
            rule_id: rule_id.to_owned(),
            role_id: role.role_id,
            company: scope.as_str().to_owned(),
            retired: false,
        };
        store::bindings::register_rule(&mut tx, &wanted, registered_by, now_ms).await?;
        tx.commit()
            .await
            .map_err(Error::internal("commit register rule"))?;
        Ok(())
    }

    /// Marks a rule retired: it may revoke its grants, never grant again.
    pub async fn retire_rule(&self, rule_id: &str) -> Result<(), Error> {
        check_rule_id(rule_id)?;
        let mut conn = self.conn().await?;
        store::bindings::retire_rule(&mut conn, rule_id).await
    }

    /// Sends the users holding a grant from `rule_id` to `batches`, [`HOLDERS_PER_BATCH`] at a
    /// time, until all are sent, the receiver is gone, or reading fails (sent last).
    pub async fn stream_rule_grant_holders(
        &self,
        rule_id: &str,
        batches: tokio::sync::mpsc::Sender<Result<Vec<(String, String)>, Error>>,
    ) {
        use futures::StreamExt as _;
        if let Err(error) = check_rule_id(rule_id) {
            let _ = batches.send(Err(error)).await;
            return;
        }
        let mut conn = match self.conn().await {
            Ok(conn) => conn,
            Err(error) => {
                let _ = batches.send(Err(error)).await;
                return;
            }
        };
        let source = rule_source(rule_id);
        let mut rows = std::pin::pin!(store::roles::holders(&mut conn, &source));
        let mut batch = Vec::with_capacity(HOLDERS_PER_BATCH);
        while let Some(row) = rows.next().await {
            match row {
                Ok(holder) => batch.push(holder),
                Err(error) => {
                    let _ = batches.send(Err(error)).await;
                    return;
                }
            }
            if batch.len() == HOLDERS_PER_BATCH
                && batches.send(Ok(std::mem::take(&mut batch))).await.is_err()
            {
                return;
            }
        }
        if !batch.is_empty() {
            let _ = batches.send(Ok(batch)).await;
        }
    }
}

/// Refuses rule grants unless the rule is registered with this role and company, and, to
/// grant, not retired.
fn check_registered(
    registered: Option<&RegisteredRule>,
    rule_id: &str,
    role_id: &str,
    company: &str,
    grants: bool,
) -> Result<(), Error> {
    let Some(found) = registered else {
        return Err(Error::RuleNotRegistered(format!(
            "rule {rule_id} was never registered by import-worker"
        )));
    };
    if found.role_id != role_id || found.company != company {
        return Err(Error::RuleNotRegistered(format!(
            "rule {rule_id} grants role {} in {:?}, not {role_id} in {company:?}",
            found.role_id, found.company
        )));
    }
    if grants && found.retired {
        return Err(Error::RuleNotRegistered(format!(
            "rule {rule_id} is retired; it may only revoke its grants"
        )));
    }
    Ok(())
}
