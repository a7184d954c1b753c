//! `userimport dev tenant …`: changes the emulated tenant of a running `userimport dev`, as an
//! administrator would in the Entra admin center, so that sync rounds have something to keep
//! in step (renames, disables, deletions and restores, group moves, new users).

use anyhow::Context as _;
use serde_json::json;

/// What to change in the emulated tenant. Users are named by object id or UPN.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TenantCommand {
    /// Adds a user (a member; --guest for a guest, who signs in with --mail).
    Add {
        /// Its userPrincipalName, e.g. jane.doe@contoso.com.
        upn: String,
        /// Display name.
        #[arg(long)]
        name: String,
        #[arg(long)]
        mail: Option<String>,
        #[arg(long)]
        guest: bool,
        /// Added with its account disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Changes a user's display name and/or userPrincipalName.
    Rename {
        user: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        upn: Option<String>,
    },
    /// Disables a user's account (or with --members-of every user in a group, as a mistaken
    /// HR bulk edit would: enough of them trips a round's safety halt).
    Disable(Accounts),
    /// Enables a user's account (or with --members-of every user in a group).
    Enable(Accounts),
    /// Deletes a user softly: it goes to the deleted items, restorable for 30 days.
    Delete { user: String },
    /// Restores a soft-deleted user.
    Restore { user: String },
    /// Deletes a user for good (hard deletion).
    Purge { user: String },
    /// Adds a user to a group (object id) as a direct member.
    Join { user: String, group: String },
    /// Removes a user from a group's direct members.
    Leave { user: String, group: String },
}

/// The accounts to enable or disable: one user, or every member of a group.
#[derive(Debug, Clone, clap::Args)]
pub struct Accounts {
    #[arg(required_unless_present = "members_of")]
    user: Option<String>,
    /// Every user in this group (object id), nested groups' members included.
    #[arg(long, conflicts_with = "user")]
    members_of: Option<String>,
}

/// Carries out `command` against the emulator at `base` (its root URL); answers a line to
/// show.
pub async fn change(base: &str, command: &TenantCommand) -> anyhow::Result<String> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let base = base.trim_end_matches('/');
    let user_url =
        |user: &str, action: &str| format!("{base}/_emulator/users/{}/{action}", urlencode(user));
    let (request, done) = match command {
        TenantCommand::Add {
            upn,
            name,
            mail,
            guest,
            disabled,
        } => (
            client.post(format!("{base}/_emulator/users")).json(&json!({
                "user_principal_name": upn,
                "display_name": name,
                "mail": mail,
                "guest": guest,
                "account_enabled": !disabled,
            })),
            format!("added {upn}"),
        ),
        TenantCommand::Rename { user, name, upn } => {
            anyhow::ensure!(
                name.is_some() || upn.is_some(),
                "say what changes: --name and/or --upn"
            );
            (
                client
                    .patch(format!("{base}/_emulator/users/{}", urlencode(user)))
                    .json(&json!({ "display_name": name, "user_principal_name": upn })),
                format!("renamed {user}"),
            )
        }
        TenantCommand::Disable(accounts) | TenantCommand::Enable(accounts) => {
            let enable = matches!(command, TenantCommand::Enable(_));
            let done = if enable { "enabled" } else { "disabled" };
            match (&accounts.user, &accounts.members_of) {
                (_, Some(group)) => (
                    client
                        .patch(format!(
                            "{base}/_emulator/groups/{}/members",
                            urlencode(group)
                        ))
                        .json(&json!({ "account_enabled": enable })),
                    format!("{done} every user in group {group}"),
                ),
                (Some(user), None) => (
                    client
                        .patch(format!("{base}/_emulator/users/{}", urlencode(user)))
                        .json(&json!({ "account_enabled": enable })),
                    format!("{done} {user}"),
                ),
                (None, None) => anyhow::bail!("name a user, or a group with --members-of"),
            }
        }
        TenantCommand::Delete { user } => (
            client.post(user_url(user, "delete")),
            format!("deleted {user} (restorable)"),
        ),
        TenantCommand::Restore { user } => (
            client.post(user_url(user, "restore")),
            format!("restored {user}"),
        ),
        TenantCommand::Purge { user } => (
            client.post(user_url(user, "purge")),
            format!("purged {user} (for good)"),
        ),
        TenantCommand::Join { user, group } => (
            client.put(format!(
                "{base}/_emulator/groups/{}/members/{}",
                urlencode(group),
                urlencode(user)
            )),
            format!("{user} joined {group}"),
        ),
        TenantCommand::Leave { user, group } => (
            client.delete(format!(
                "{base}/_emulator/groups/{}/members/{}",
                urlencode(group),
                urlencode(user)
            )),
            format!("{user} left {group}"),
        ),
    };
    let response = request.send().await.with_context(|| {
        format!("cannot reach the emulated tenant at {base} (is `userimport dev` running?)")
    })?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "the emulated tenant refused: {body}");
    let count = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|answer| answer["users"].as_u64())
        .map(|users| format!(" ({users} users)"))
        .unwrap_or_default();
    Ok(format!(
        "{done}{count}; the next sync round sees it (`userimport sync now --delta`)"
    ))
}

/// Percent-encodes a path segment (a UPN may hold `#` in a guest's `#EXT#`).
fn urlencode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
