//! Commands that change users after import — roles, renames, enabling — and read the audit
//! trail. Each is one call to user-registry, which checks and records it.

use anyhow::Context as _;
use proto::registry::v1 as registry_pb;
use serde::Serialize;

use crate::commands::{Endpoints, UserRow, failed};
use crate::output::Record;

/// A role of the catalog as listed.
#[derive(Debug, Serialize)]
pub struct RoleRow {
    pub role_id: String,
    pub name: String,
    pub scope: String,
    pub description: String,
}

impl Record for RoleRow {
    const HEADERS: &'static [&'static str] = &["ROLE", "NAME", "GRANTED", "DESCRIPTION"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.role_id.clone(),
            self.name.clone(),
            self.scope.clone(),
            self.description.clone(),
        ]
    }
}

pub async fn roles_list(endpoints: &Endpoints) -> anyhow::Result<Vec<RoleRow>> {
    let mut client = endpoints.registry().await?;
    let roles = client
        .list_roles(endpoints.request(registry_pb::ListRolesRequest {}))
        .await
        .map_err(failed("listing roles"))?
        .into_inner()
        .roles;
    Ok(roles
        .into_iter()
        .map(|r| RoleRow {
            role_id: r.role_id,
            name: r.name,
            scope: if r.all_companies {
                "all companies"
            } else {
                "per company"
            }
            .to_owned(),
            description: r.description,
        })
        .collect())
}

/// Options of `users assign-roles` and `users revoke-roles`.
#[derive(Debug, Clone, clap::Args)]
pub struct RoleChangeArgs {
    /// User ids.
    #[arg(required = true)]
    pub users: Vec<String>,
    /// A role id (repeat for several; `userimport roles list` shows them).
    #[arg(long = "role", required = true)]
    pub roles: Vec<String>,
    /// Only in this company; without it, every company.
    #[arg(long)]
    pub company: Option<String>,
    /// Revoke only: also remove the grants group-to-role rules made (a rule that still holds
    /// the user grants the role again at its next reconcile).
    #[arg(long)]
    pub all_sources: bool,
}

/// Grants roles; answers how many grants are new.
pub async fn assign_roles(endpoints: &Endpoints, args: &RoleChangeArgs) -> anyhow::Result<u64> {
    let mut client = endpoints.registry().await?;
    let request = registry_pb::AssignRolesRequest {
        user_ids: args.users.clone(),
        role_ids: args.roles.clone(),
        company: args.company.clone().unwrap_or_default(),
    };
    Ok(client
        .assign_roles(endpoints.request(request))
        .await
        .map_err(failed("granting roles"))?
        .into_inner()
        .granted)
}

/// Revokes roles; answers how many grants were removed.
pub async fn revoke_roles(endpoints: &Endpoints, args: &RoleChangeArgs) -> anyhow::Result<u64> {
    let mut client = endpoints.registry().await?;
    let request = registry_pb::RevokeRolesRequest {
        user_ids: args.users.clone(),
        role_ids: args.roles.clone(),
        company: args.company.clone().unwrap_or_default(),
        all_sources: args.all_sources,
    };
    Ok(client
        .revoke_roles(endpoints.request(request))
        .await
        .map_err(failed("revoking roles"))?
        .into_inner()
        .revoked)
}

pub async fn rename(endpoints: &Endpoints, user_id: &str, new_id: &str) -> anyhow::Result<UserRow> {
    let mut client = endpoints.registry().await?;
    let request = registry_pb::RenameUserRequest {
        user_id: user_id.to_owned(),
        new_user_id: new_id.to_owned(),
    };
    let user = client
        .rename_user(endpoints.request(request))
        .await
        .map_err(failed("renaming the user"))?
        .into_inner()
        .user
        .context("the registry answered without the user")?;
    Ok(user.into())
}

pub async fn set_enabled(
    endpoints: &Endpoints,
    users: &[String],
    enabled: bool,
) -> anyhow::Result<Vec<UserRow>> {
    let mut client = endpoints.registry().await?;
    let request = registry_pb::SetUsersEnabledRequest {
        user_ids: users.to_vec(),
        enabled,
    };
    let what = if enabled {
        "enabling users"
    } else {
        "disabling users"
    };
    Ok(client
        .set_users_enabled(endpoints.request(request))
        .await
        .map_err(failed(what))?
        .into_inner()
        .users
        .into_iter()
        .map(UserRow::from)
        .collect())
}

/// Options of `audit list`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuditListArgs {
    /// Events of this user (under every id it has had).
    #[arg(long)]
    pub user: Option<String>,
    /// import, role.grant, role.revoke, rename, enable or disable.
    #[arg(long)]
    pub action: Option<String>,
    /// Events of this job, sync run or request.
    #[arg(long)]
    pub via: Option<String>,
    /// Most events to show, newest first; 0 (the default) shows 50 in a table and every one
    /// as JSON or CSV.
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
}

/// An audit event as listed.
#[derive(Debug, Serialize)]
pub struct AuditRow {
    pub event_id: String,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub user_id: String,
    pub via: String,
    pub detail: serde_json::Value,
    /// The service identity that acted for `actor` (empty when the actor called directly).
    pub service: String,
}

impl Record for AuditRow {
    const HEADERS: &'static [&'static str] = &[
        "EVENT", "AT", "ACTOR", "ACTION", "USER ID", "VIA", "DETAIL", "SERVICE",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.event_id.clone(),
            self.at.clone(),
            self.actor.clone(),
            self.action.clone(),
            self.user_id.clone(),
            self.via.clone(),
            self.detail.to_string(),
            self.service.clone(),
        ]
    }
}

/// RFC 3339 in UTC with milliseconds.
pub(crate) fn timestamp(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Lists audit events page by page, newest first, up to the limit.
pub async fn audit_list(
    endpoints: &Endpoints,
    args: &AuditListArgs,
) -> anyhow::Result<Vec<AuditRow>> {
    let mut client = endpoints.registry().await?;
    let mut rows = Vec::new();
    let mut token = String::new();
    while rows.len() < args.limit {
        let request = registry_pb::ListAuditEventsRequest {
            page_size: u32::try_from((args.limit - rows.len()).min(1000)).unwrap_or(1000),
            page_token: token,
            user_id: args.user.clone().unwrap_or_default(),
            action: args.action.clone().unwrap_or_default(),
            via: args.via.clone().unwrap_or_default(),
        };
        let page = client
            .list_audit_events(endpoints.request(request))
            .await
            .map_err(failed("listing audit events"))?
            .into_inner();
        rows.extend(page.events.into_iter().map(|e| AuditRow {
            event_id: e.event_id,
            at: timestamp(e.at_ms),
            actor: e.actor,
            action: e.action,
            user_id: e.user_id,
            via: e.via,
            detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::String(e.detail)),
            service: e.service,
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::timestamp;

    #[test]
    fn timestamps_print_as_utc_rfc_3339() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}
