//! Directory changes applied to existing users (issue 8's delta sync): names, aliases after a
//! UPN rename, enabled state, the "deleted in directory" mark (set and cleared). A user's id never changes. Invalid changes fail alone; the rest
//! are written with their audit events in one transaction, or only reported (dry run).

use std::collections::HashSet;

use crate::domain::audit::Action;
use crate::domain::update::{UpdateKind, UpdateOutcome, UserChange};
use crate::error::Error;
use crate::store::audit::{NewEvent, Origin};
use crate::store::{self, ObjectKey, UpdateRow};

use super::Registry;

/// Most changes in one call.
pub const MAX_CHANGES_PER_CALL: usize = 1000;

/// A change as it arrived: valid, or failed with its object id and reason.
pub type ChangeItem = Result<UserChange, (String, Error)>;

impl Registry {
    /// Applies `changes` as made through `change_id` (a sync run or request) by `actor`; one
    /// outcome per change, in order. With `dry_run`, the outcomes say what would change and
    /// nothing is written. With `count_users`, also answers how many users the registry held.
    pub async fn update_users(
        &self,
        actor: &str,
        change_id: &str,
        changes: Vec<ChangeItem>,
        dry_run: bool,
        count_users: bool,
        now_ms: i64,
    ) -> Result<(Vec<UpdateOutcome>, u64), Error> {
        if change_id.trim().is_empty() {
            return Err(Error::invalid("change_id", "must not be empty"));
        }
        if changes.is_empty() || changes.len() > MAX_CHANGES_PER_CALL {
            return Err(Error::invalid(
                "changes",
                format!(
                    "{} changes; give 1 to {MAX_CHANGES_PER_CALL}",
                    changes.len()
                ),
            ));
        }
        let backend = self.db.backend();
        let mut tx = self
            .db
            .begin_write()
            .await
            .map_err(Error::internal("begin update"))?;
        let keys: Vec<ObjectKey> = changes
            .iter()
            .filter_map(|c| c.as_ref().ok())
            .map(|c| ObjectKey {
                tenant_id: c.tenant_id.clone(),
                object_id: c.object_id.clone(),
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut users = store::users_by_object(&mut tx, backend, &keys).await?;
        let total_users = if count_users {
            store::count_users(&mut tx).await?
        } else {
            0
        };

        let mut outcomes = Vec::with_capacity(changes.len());
        let mut events = Vec::new();
        // Later changes of the same user build on earlier ones; each user is written once.
        let mut touched: Vec<ObjectKey> = Vec::new();
        let mut deleted: HashSet<ObjectKey> = HashSet::new();
        for change in changes {
            let change = match change {
                Ok(change) => change,
                Err((object_id, error)) => {
                    outcomes.push(UpdateOutcome {
                        object_id,
                        kind: UpdateKind::Failed,
                        user_id: String::new(),
                        changed: Vec::new(),
                        reason: error.to_string(),
                        enabled: false,
                    });
                    continue;
                }
            };
            let key = ObjectKey {
                tenant_id: change.tenant_id.clone(),
                object_id: change.object_id.clone(),
            };
            let Some(user) = users.get_mut(&key) else {
                outcomes.push(UpdateOutcome {
                    object_id: change.object_id,
                    kind: UpdateKind::NotFound,
                    user_id: String::new(),
                    changed: Vec::new(),
                    reason: String::new(),
                    enabled: false,
                });
                continue;
            };
            let mut changed = Vec::new();
            if change.delete {
                if deleted.insert(key) {
                    events.push(NewEvent {
                        action: Action::Delete,
                        tenant_id: user.tenant_id.clone(),
                        object_id: user.object_id.clone(),
                        user_id: user.user_id.clone(),
                        detail: serde_json::json!({
                            "reason": "deleted in the directory",
                            "network_alias": user.network_alias,
                        })
                        .to_string(),
                    });
                }
                outcomes.push(UpdateOutcome {
                    object_id: user.object_id.clone(),
                    kind: UpdateKind::Deleted,
                    user_id: user.user_id.clone(),
                    changed: vec!["deleted"],
                    reason: String::new(),
                    enabled: false,
                });
                continue;
            }
            let mut detail = serde_json::Map::new();
            if let Some(name) = change.name.filter(|n| *n != user.name) {
                detail.insert(
                    "name".into(),
                    serde_json::json!({ "from": user.name, "to": name }),
                );
                user.name = name;
                changed.push("name");
            }
            if let Some(alias) = change.network_alias.filter(|a| *a != user.network_alias) {
                detail.insert(
                    "network_alias".into(),
                    serde_json::json!({ "from": user.network_alias, "to": alias }),
                );
                user.network_alias = alias;
                changed.push("network_alias");
            }
            match change.deleted_in_directory {
                Some(true) if user.deleted_in_directory_at_ms == 0 => {
                    detail.insert(
                        "deleted_in_directory".into(),
                        serde_json::json!({ "from": false, "to": true }),
                    );
                    user.deleted_in_directory_at_ms = now_ms;
                    changed.push("deleted_in_directory");
                }
                // Restored in the directory: the mark goes, and the audit trail says when it
                // was set.
                Some(false) if user.deleted_in_directory_at_ms != 0 => {
                    detail.insert(
                        "deleted_in_directory".into(),
                        serde_json::json!({
                            "from": true,
                            "to": false,
                            "marked_at_ms": user.deleted_in_directory_at_ms,
                        }),
                    );
                    user.deleted_in_directory_at_ms = 0;
                    changed.push("deleted_in_directory");
                }
                _ => {}
            }
            if !detail.is_empty() {
                events.push(NewEvent {
                    action: Action::Update,
                    tenant_id: user.tenant_id.clone(),
                    object_id: user.object_id.clone(),
                    user_id: user.user_id.clone(),
                    detail: serde_json::Value::Object(detail).to_string(),
                });
            }
            if let Some(enabled) = change.enabled.filter(|e| *e != user.enabled) {
                user.enabled = enabled;
                changed.push("enabled");
                events.push(NewEvent {
                    action: if enabled {
                        Action::Enable
                    } else {
                        Action::Disable
                    },
                    tenant_id: user.tenant_id.clone(),
                    object_id: user.object_id.clone(),
                    user_id: user.user_id.clone(),
                    detail: serde_json::json!({ "enabled": enabled }).to_string(),
                });
            }
            if !changed.is_empty() && !touched.contains(&key) {
                touched.push(key);
            }
            outcomes.push(UpdateOutcome {
                object_id: user.object_id.clone(),
                kind: if changed.is_empty() {
                    UpdateKind::Unchanged
                } else {
                    UpdateKind::Updated
                },
                user_id: user.user_id.clone(),
                changed,
                reason: String::new(),
                enabled: user.enabled,
            });
        }
        if dry_run {
            // Nothing is written: the transaction ends without a commit.
            return Ok((outcomes, total_users));
        }
        let rows: Vec<UpdateRow<'_>> = touched
            .iter()
            .filter(|key| !deleted.contains(key))
            .filter_map(|key| users.get(key))
            .map(|u| UpdateRow {
                tenant_id: &u.tenant_id,
                object_id: &u.object_id,
                name: &u.name,
                network_alias: &u.network_alias,
                enabled: u.enabled,
                deleted_at_ms: u.deleted_in_directory_at_ms,
            })
            .collect();
        store::apply_updates(&mut tx, backend, &rows, now_ms).await?;
        let deleted: Vec<ObjectKey> = deleted.into_iter().collect();
        store::delete_users(&mut tx, backend, &deleted).await?;
        let origin = Origin {
            actor,
            service: "",
            via: change_id,
            at_ms: now_ms,
        };
        store::audit::record(&mut tx, backend, origin, &events).await?;
        let removed: Vec<(&str, &str)> = deleted
            .iter()
            .map(|k| (k.tenant_id.as_str(), k.object_id.as_str()))
            .collect();
        store::feed::record_deletions(&mut tx, backend, &removed).await?;
        tx.commit()
            .await
            .map_err(Error::internal("commit update"))?;
        Ok((outcomes, total_users))
    }
}
