//! `userimport users show`: one registry user with every field D365's Users page shows, its
//! roles per company with where each grant came from, and how the directory sees it now.

use anyhow::Context as _;
use proto::directory::v1 as directory_pb;
use proto::registry::v1 as registry_pb;
use serde::Serialize;

use crate::commands::{Endpoints, failed};
use crate::output::{Format, yes_no};

/// A user as `users show` prints it.
#[derive(Debug, Serialize)]
pub struct UserDetails {
    pub user_id: String,
    pub name: String,
    pub alias: String,
    pub email: String,
    pub provider: String,
    pub company: String,
    pub account_type: &'static str,
    pub enabled: bool,
    pub object_id: String,
    pub tenant_id: String,
    pub created_at: String,
    pub created_by_import: String,
    pub updated_at: String,
    /// `present`, `soft-deleted`, `hard-deleted`, or `unknown` when the mirror has no word.
    pub directory_state: String,
    /// When the registry marked the user hard-deleted in the directory, if it did.
    pub deleted_in_directory_at: Option<String>,
    pub roles: Vec<RoleRow>,
}

/// One role a user holds.
#[derive(Debug, Serialize)]
pub struct RoleRow {
    pub role_id: String,
    /// `all` for a grant that covers every company.
    pub company: String,
    /// `manual` and/or `rule:<id>`.
    pub sources: Vec<String>,
}

/// What `key` names: an object id, a sign-in name (UPN, or a guest's mail), or a user id.
enum Key {
    Object(String),
    Alias(String),
    UserId(String),
}

fn key_of(raw: &str) -> Key {
    let raw = raw.trim();
    if let Some(object_id) = service_runtime::normalize_guid(raw) {
        Key::Object(object_id)
    } else if raw.contains('@') {
        Key::Alias(raw.to_owned())
    } else {
        Key::UserId(raw.to_owned())
    }
}

/// Finds the user `key` names (user id, UPN or mail, or object id) and reads it whole.
pub async fn user_show(endpoints: &Endpoints, key: &str) -> anyhow::Result<UserDetails> {
    let mut registry = endpoints.registry().await?;
    let mut directory = endpoints.directory().await?;
    let request_key = match key_of(key) {
        Key::UserId(user_id) => registry_pb::get_user_request::Key::UserId(user_id),
        Key::Object(object_id) => {
            // The registry keys users by (tenant, object id); the directory knows the tenant.
            let found = directory
                .get_users(endpoints.request(directory_pb::GetUsersRequest {
                    object_ids: vec![object_id.clone()],
                    user_principal_names: Vec::new(),
                }))
                .await
                .map_err(failed("looking the user up in the directory"))?
                .into_inner();
            let user =
                found.users.into_iter().next().with_context(|| {
                    format!("the directory has no user with object id {object_id}")
                })?;
            registry_pb::get_user_request::Key::Object(registry_pb::ObjectKey {
                tenant_id: user.tenant_id,
                object_id,
            })
        }
        Key::Alias(alias) => {
            // A member signs in with its UPN, a guest with its mail: the registry's alias.
            let page = registry
                .list_users(endpoints.request(registry_pb::ListUsersRequest {
                    page_size: 50,
                    search: alias.clone(),
                    ..Default::default()
                }))
                .await
                .map_err(failed("looking the user up in the registry"))?
                .into_inner();
            let user = page
                .users
                .into_iter()
                .find(|u| u.network_alias.eq_ignore_ascii_case(&alias))
                .with_context(|| format!("the registry has no user signing in as {alias}"))?;
            registry_pb::get_user_request::Key::UserId(user.user_id)
        }
    };
    let found = registry
        .get_user(endpoints.request(registry_pb::GetUserRequest {
            key: Some(request_key),
        }))
        .await
        .map_err(failed("reading the user"))?
        .into_inner();
    let user = found.user.context("the registry answered without a user")?;
    let directory_state = match directory
        .get_users(endpoints.request(directory_pb::GetUsersRequest {
            object_ids: vec![user.object_id.clone()],
            user_principal_names: Vec::new(),
        }))
        .await
    {
        Ok(response) => match response.into_inner().users.first() {
            Some(mirrored) => match mirrored.deletion_state() {
                directory_pb::DeletionState::SoftDeleted => "soft-deleted (restorable)",
                directory_pb::DeletionState::HardDeleted => "hard-deleted",
                _ if mirrored.account_enabled => "present, enabled",
                _ => "present, disabled",
            }
            .to_owned(),
            None => "not in the directory".to_owned(),
        },
        Err(status) => format!("unknown ({})", status.message()),
    };
    Ok(UserDetails {
        account_type: match user.account_type() {
            registry_pb::AccountType::Guest => "guest",
            _ => "member",
        },
        user_id: user.user_id,
        name: user.name,
        alias: user.network_alias,
        email: user.email,
        provider: user.network_domain,
        company: user.company,
        enabled: user.enabled,
        object_id: user.object_id,
        tenant_id: user.tenant_id,
        created_at: crate::admin::timestamp(user.created_at_ms),
        created_by_import: user.created_by_import,
        updated_at: crate::admin::timestamp(user.updated_at_ms),
        directory_state,
        deleted_in_directory_at: (user.deleted_in_directory_at_ms > 0)
            .then(|| crate::admin::timestamp(user.deleted_in_directory_at_ms)),
        roles: found
            .roles
            .into_iter()
            .map(|role| RoleRow {
                company: if role.company.is_empty() {
                    "all".to_owned()
                } else {
                    role.company
                },
                role_id: role.role_id,
                sources: role.sources,
            })
            .collect(),
    })
}

/// Prints the user: a field list and a roles table for people, the whole record as JSON, or
/// its roles as CSV rows with the user's id.
pub fn print_user(format: Format, user: &UserDetails) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            writeln!(out, "{}", serde_json::to_string_pretty(user)?)?;
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            writer.write_record(["user_id", "role_id", "company", "sources"])?;
            for role in &user.roles {
                writer.write_record([
                    user.user_id.as_str(),
                    &role.role_id,
                    &role.company,
                    &role.sources.join(" "),
                ])?;
            }
            writer.flush()?;
        }
        Format::Table => {
            let fields = [
                ("User ID", user.user_id.clone()),
                ("Name", user.name.clone()),
                ("Alias (sign-in)", user.alias.clone()),
                ("Email", user.email.clone()),
                ("Provider", user.provider.clone()),
                ("Company", user.company.clone()),
                ("Account type", user.account_type.to_owned()),
                ("Enabled", yes_no(user.enabled)),
                ("Object ID", user.object_id.clone()),
                ("Tenant", user.tenant_id.clone()),
                ("Created", user.created_at.clone()),
                ("Created by import", user.created_by_import.clone()),
                ("Updated", user.updated_at.clone()),
                ("In the directory", user.directory_state.clone()),
                (
                    "Marked deleted in directory",
                    user.deleted_in_directory_at
                        .clone()
                        .unwrap_or_else(|| "no".to_owned()),
                ),
            ];
            for (label, value) in fields {
                writeln!(out, "{label:<28} {value}")?;
            }
            if user.roles.is_empty() {
                writeln!(out, "{:<28} none", "Roles")?;
            } else {
                writeln!(out, "Roles")?;
                for role in &user.roles {
                    writeln!(
                        out,
                        "  {:<24} company {:<5} from {}",
                        role.role_id,
                        role.company,
                        role.sources.join(", ")
                    )?;
                }
            }
        }
    }
    Ok(())
}
