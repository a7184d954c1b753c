//! Changes an administrator makes after import: role grants and revokes, renames, enabling
//! and disabling; and the audit trail that records them. Every change and its audit events
//! are one transaction. A call is validated whole before anything is written: one unknown
//! user or role refuses the call, naming it.

use std::collections::{BTreeSet, HashMap};

use crate::domain::audit::{Action, AuditEvent};
use crate::domain::user_id::{MAX_USER_ID_LEN, parse_user_id, user_key};
use crate::domain::{Assignment, CompanyCode, RegistryUser, Role, RoleId, Scope};
use crate::error::Error;
use crate::store::audit::{EventFilter, NewEvent, Origin, UserMatch};
use crate::store::roles::{Grant, UserRef};
use crate::store::{self, ObjectKey};

use super::Registry;

/// Most users named by one grant, revoke, enable or disable call.
pub const MAX_USERS_PER_CHANGE: usize = 1000;
/// Most roles named by one grant or revoke call.
pub const MAX_ROLES_PER_CALL: usize = 50;

/// Who asks for a change and through which request (recorded in the audit trail).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The person the change is for.
    pub actor: String,
    /// The service identity acting for `actor` (`''` when the actor called directly).
    pub service: String,
    pub request_id: String,
}

/// Who reads: private imports' users and events are shown to their person and to service
/// identities only.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub name: String,
    pub service: bool,
}

impl Viewer {
    /// May this viewer see what an import made for `actor`?
    pub fn sees(&self, actor: &str) -> bool {
        self.service || self.name == actor
    }
}

impl Caller {
    pub(super) fn origin(&self, at_ms: i64) -> Origin<'_> {
        Origin {
            actor: &self.actor,
            service: &self.service,
            via: &self.request_id,
            at_ms,
        }
    }
}

/// A grant or revoke: users, roles, and optionally one company.
#[derive(Debug, Clone)]
pub struct RoleChange {
    pub user_ids: Vec<String>,
    pub role_ids: Vec<String>,
    /// Empty: every company.
    pub company: String,
}

fn named(items: &[String]) -> String {
    service_runtime::error::quote_some(items)
}

fn check_count(field: &'static str, count: usize, max: usize) -> Result<(), Error> {
    if count == 0 {
        return Err(Error::invalid(field, "name at least one"));
    }
    if count > max {
        return Err(Error::invalid(
            field,
            format!("{count} in one call; the limit is {max}"),
        ));
    }
    Ok(())
}

fn grant_detail(grant: &Grant) -> String {
    serde_json::json!({
        "role_id": grant.role_id,
        "company": if grant.company.is_empty() { None } else { Some(&grant.company) },
    })
    .to_string()
}

impl Registry {
    pub async fn list_roles(&self) -> Result<Vec<Role>, Error> {
        let mut conn = self.conn().await?;
        store::roles::list(&mut conn).await
    }

    /// The roles a user holds.
    pub async fn user_roles(&self, user: &RegistryUser) -> Result<Vec<Assignment>, Error> {
        let mut conn = self.conn().await?;
        store::roles::of_user(&mut conn, &user.tenant_id, &user.object_id).await
    }

    /// Resolves user ids (case-insensitive, duplicates folded) to users, or fails naming every
    /// id that is unknown.
    async fn resolve_users(
        &self,
        conn: &mut sqlx::AnyConnection,
        user_ids: &[String],
    ) -> Result<Vec<UserRef>, Error> {
        check_count("user_ids", user_ids.len(), MAX_USERS_PER_CHANGE)?;
        if user_ids.iter().any(|id| id.trim().is_empty()) {
            return Err(Error::invalid("user_ids", "a user id must not be empty"));
        }
        if let Some(long) = user_ids
            .iter()
            .find(|id| id.trim().chars().count() > MAX_USER_ID_LEN)
        {
            return Err(Error::invalid(
                "user_ids",
                format!(
                    "{:?}… is longer than a user id can be ({MAX_USER_ID_LEN} characters)",
                    long.chars().take(20).collect::<String>()
                ),
            ));
        }
        let keys: Vec<String> = user_ids
            .iter()
            .map(|id| user_key(id.trim()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let found = store::roles::users_by_key(conn, self.db.backend(), &keys).await?;
        let known: BTreeSet<&str> = found.iter().map(|u| u.user_key.as_str()).collect();
        let missing: Vec<String> = user_ids
            .iter()
            .map(|id| id.trim().to_owned())
            .filter(|id| !known.contains(user_key(id).as_str()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            return Err(Error::UserNotFound(named(&missing)));
        }
        Ok(found)
    }

    /// Parses the roles and company of a grant or revoke and checks they exist: the roles as
    /// they are in the catalog, and the scope.
    pub(super) async fn resolve_roles(
        &self,
        conn: &mut sqlx::AnyConnection,
        change: &RoleChange,
    ) -> Result<(Vec<Role>, Scope), Error> {
        check_count("role_ids", change.role_ids.len(), MAX_ROLES_PER_CALL)?;
        let wanted: BTreeSet<RoleId> = change
            .role_ids
            .iter()
            .map(|id| RoleId::parse(id))
            .collect::<Result<_, _>>()?;
        let scope = match change.company.trim() {
            "" => Scope::AllCompanies,
            code => {
                let code = CompanyCode::parse(code)?;
                if !store::lock_company(conn, self.db.backend(), &code).await? {
                    return Err(Error::UnknownCompany(code.to_string()));
                }
                Scope::Company(code)
            }
        };
        let catalog: HashMap<String, Role> = store::roles::list(conn)
            .await?
            .into_iter()
            .map(|r| (r.role_id.clone(), r))
            .collect();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|id| !catalog.contains_key(id.as_str()))
            .map(ToString::to_string)
            .collect();
        if !missing.is_empty() {
            return Err(Error::UnknownRole(named(&missing)));
        }
        let roles: Vec<Role> = wanted
            .iter()
            .filter_map(|id| catalog.get(id.as_str()).cloned())
            .collect();
        Ok((roles, scope))
    }

    /// Grants roles to users, for every company or one; grants that exist are left alone.
    /// Returns how many grants are new.
    pub async fn assign_roles(
        &self,
        caller: &Caller,
        change: &RoleChange,
        now_ms: i64,
    ) -> Result<u64, Error> {
        let backend = self.db.backend();
        let mut tx = self
            .db
            .begin_write()
            .await
            .map_err(Error::internal("begin grant"))?;
        let (roles, scope) = self.resolve_roles(&mut tx, change).await?;
        if let Scope::Company(code) = &scope
            && let Some(role) = roles.iter().find(|r| r.all_companies)
        {
            return Err(Error::invalid(
                "company",
                format!(
                    "role {} covers every company; grant it without a company (not {code})",
                    role.role_id
                ),
            ));
        }
        let users = self.resolve_users(&mut tx, &change.user_ids).await?;
        let grants = every_grant(&users, &roles, &scope);
        let granted = store::roles::grant(
            &mut tx,
            backend,
            &grants,
            now_ms,
            &caller.actor,
            store::roles::MANUAL,
        )
        .await?;
        let events = grant_events(Action::RoleGrant, &granted, &users);
        store::audit::record(&mut tx, backend, caller.origin(now_ms), &events).await?;
        tx.commit().await.map_err(Error::internal("commit grant"))?;
        Ok(granted.len() as u64)
    }

    /// Revokes roles from users: in one company, or with no company in every company; an
    /// administrator's grants, or with `all_sources` every grant whatever made it (a rule's
    /// too). Revoking what is not granted changes nothing. Returns how many grants were
    /// removed.
    pub async fn revoke_roles(
        &self,
        caller: &Caller,
        change: &RoleChange,
        all_sources: bool,
        now_ms: i64,
    ) -> Result<u64, Error> {
        let backend = self.db.backend();
        let mut tx = self
            .db
            .begin_write()
            .await
            .map_err(Error::internal("begin revoke"))?;
        let (roles, scope) = self.resolve_roles(&mut tx, change).await?;
        let users = self.resolve_users(&mut tx, &change.user_ids).await?;
        let wanted = every_grant(&users, &roles, &scope);
        let revoked =
            store::roles::revoke(&mut tx, backend, &wanted, store::roles::MANUAL, all_sources)
                .await?;
        // A role held from several sources is one event: the user lost it once.
        let lost: Vec<Grant> = revoked
            .iter()
            .cloned()
            .collect::<BTreeSet<Grant>>()
            .into_iter()
            .collect();
        let events = grant_events(Action::RoleRevoke, &lost, &users);
        store::audit::record(&mut tx, backend, caller.origin(now_ms), &events).await?;
        tx.commit()
            .await
            .map_err(Error::internal("commit revoke"))?;
        Ok(revoked.len() as u64)
    }

    /// Changes a user's id; its object id, roles and history stay. Renaming to the id it has
    /// changes nothing; a new id held by another user (case-insensitive) is refused.
    pub async fn rename_user(
        &self,
        caller: &Caller,
        user_id: &str,
        new_user_id: &str,
        now_ms: i64,
    ) -> Result<RegistryUser, Error> {
        let new_user_id =
            parse_user_id(new_user_id).map_err(|reason| Error::invalid("new_user_id", reason))?;
        if user_id.trim().is_empty() || user_id.trim().chars().count() > MAX_USER_ID_LEN {
            return Err(Error::invalid(
                "user_id",
                format!("must be 1 to {MAX_USER_ID_LEN} characters"),
            ));
        }
        let backend = self.db.backend();
        let mut tx = self
            .db
            .begin_write()
            .await
            .map_err(Error::internal("begin rename"))?;
        let user = store::user_by_user_id(&mut tx, user_id.trim())
            .await?
            .ok_or_else(|| Error::UserNotFound(user_id.trim().to_owned()))?;
        if user.user_id == new_user_id {
            return Ok(user);
        }
        let new_key = user_key(&new_user_id);
        if new_key != user_key(&user.user_id)
            && store::user_by_user_id(&mut tx, &new_user_id)
                .await?
                .is_some()
        {
            return Err(Error::UserIdTaken(new_user_id));
        }
        if !store::roles::rename(
            &mut tx,
            &user.tenant_id,
            &user.object_id,
            &new_user_id,
            &new_key,
            now_ms,
        )
        .await?
        {
            return Err(Error::UserIdTaken(new_user_id));
        }
        let event = NewEvent {
            action: Action::Rename,
            tenant_id: user.tenant_id.clone(),
            object_id: user.object_id.clone(),
            user_id: new_user_id.clone(),
            detail: serde_json::json!({ "from": user.user_id, "to": new_user_id }).to_string(),
        };
        store::audit::record(&mut tx, backend, caller.origin(now_ms), &[event]).await?;
        let renamed = store::user_by_object(&mut tx, &ObjectKey::of_user(&user))
            .await?
            .ok_or_else(|| Error::UserNotFound(new_user_id.clone()))?;
        tx.commit()
            .await
            .map_err(Error::internal("commit rename"))?;
        Ok(renamed)
    }

    /// Enables or disables users; those already in that state are left alone (and not
    /// audited). Returns every named user as it is afterwards.
    pub async fn set_users_enabled(
        &self,
        caller: &Caller,
        user_ids: &[String],
        enabled: bool,
        now_ms: i64,
    ) -> Result<Vec<RegistryUser>, Error> {
        let backend = self.db.backend();
        let mut tx = self
            .db
            .begin_write()
            .await
            .map_err(Error::internal("begin enable"))?;
        let users = self.resolve_users(&mut tx, user_ids).await?;
        let changed = store::roles::set_enabled(&mut tx, backend, &users, enabled, now_ms).await?;
        let action = if enabled {
            Action::Enable
        } else {
            Action::Disable
        };
        let events: Vec<NewEvent> = changed
            .into_iter()
            .map(|(tenant_id, object_id, user_id)| NewEvent {
                action,
                tenant_id,
                object_id,
                user_id,
                detail: serde_json::json!({ "enabled": enabled }).to_string(),
            })
            .collect();
        store::audit::record(&mut tx, backend, caller.origin(now_ms), &events).await?;
        // The users as they are now, read back in one statement.
        let keys: Vec<ObjectKey> = users
            .iter()
            .map(|u| ObjectKey {
                tenant_id: u.tenant_id.clone(),
                object_id: u.object_id.clone(),
            })
            .collect();
        let mut result: Vec<RegistryUser> = store::users_by_object(&mut tx, backend, &keys)
            .await?
            .into_values()
            .collect();
        tx.commit()
            .await
            .map_err(Error::internal("commit enable"))?;
        result.sort_by_key(|u| user_key(&u.user_id));
        Ok(result)
    }

    /// One page of audit events, newest first. A user filter finds the user's events under
    /// every id it has had when the user exists, else the events written with that id.
    pub async fn list_audit_events(
        &self,
        viewer: &Viewer,
        user_id: &str,
        action: &str,
        via: &str,
        before: i64,
        limit: u32,
    ) -> Result<(Vec<AuditEvent>, Option<i64>), Error> {
        let action = match action.trim() {
            "" => None,
            raw => Some(Action::parse(raw).ok_or_else(|| {
                let known: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
                Error::invalid(
                    "action",
                    format!(
                        "{} is not one of {}",
                        service_runtime::error::quote(raw),
                        known.join(", ")
                    ),
                )
            })?),
        };
        let mut conn = self.conn().await?;
        let user = match user_id.trim() {
            "" => None,
            id => Some(match store::user_by_user_id(&mut conn, id).await? {
                Some(user) => UserMatch::Object {
                    tenant_id: user.tenant_id,
                    object_id: user.object_id,
                },
                None => UserMatch::UserId(id.to_owned()),
            }),
        };
        let filter = EventFilter {
            user,
            action,
            via: via.trim().to_owned(),
        };
        let mut events = store::audit::list(&mut conn, &filter, before, limit).await?;
        // The next page starts after the last event read, shown or not.
        let next = match events.last() {
            Some(last) if events.len() == limit as usize => Some(last.event_id),
            _ => None,
        };
        let vias: Vec<&str> = {
            let mut vias: Vec<&str> = events.iter().map(|e| e.via.as_str()).collect();
            vias.sort_unstable();
            vias.dedup();
            vias
        };
        let hidden: HashMap<String, String> =
            store::bindings::private_imports(&mut conn, self.db.backend(), &vias)
                .await?
                .into_iter()
                .filter(|(_, actor)| !viewer.sees(actor))
                .collect();
        events.retain(|e| !hidden.contains_key(&e.via));
        Ok((events, next))
    }
}

/// Each role of `roles` for each user of `users`, in `scope`.
fn every_grant(users: &[UserRef], roles: &[Role], scope: &Scope) -> Vec<Grant> {
    users
        .iter()
        .flat_map(|u| {
            roles.iter().map(|r| Grant {
                tenant_id: u.tenant_id.clone(),
                object_id: u.object_id.clone(),
                role_id: r.role_id.clone(),
                company: scope.as_str().to_owned(),
            })
        })
        .collect()
}

/// One audit event per grant written or removed.
fn grant_events(action: Action, grants: &[Grant], users: &[UserRef]) -> Vec<NewEvent> {
    let ids: HashMap<(&str, &str), &str> = users
        .iter()
        .map(|u| {
            (
                (u.tenant_id.as_str(), u.object_id.as_str()),
                u.user_id.as_str(),
            )
        })
        .collect();
    grants
        .iter()
        .map(|g| NewEvent {
            action,
            tenant_id: g.tenant_id.clone(),
            object_id: g.object_id.clone(),
            user_id: ids
                .get(&(g.tenant_id.as_str(), g.object_id.as_str()))
                .map_or_else(String::new, |id| (*id).to_owned()),
            detail: grant_detail(g),
        })
        .collect()
}

impl ObjectKey {
    fn of_user(user: &RegistryUser) -> Self {
        Self {
            tenant_id: user.tenant_id.clone(),
            object_id: user.object_id.clone(),
        }
    }
}
