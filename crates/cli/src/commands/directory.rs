//! `directory …` and `sync …`: the mirror, its groups and its rounds.

use super::*;

/// A directory user as listed.
#[derive(Debug, Serialize)]
pub struct DirectoryRow {
    pub object_id: String,
    pub display_name: String,
    pub user_principal_name: String,
    pub mail: String,
    pub account_type: String,
    pub enabled: bool,
    pub imported: bool,
    /// `graph` (read by a sync round) or `scim` (pushed by Entra's provisioning).
    pub source: String,
}

impl Record for DirectoryRow {
    const HEADERS: &'static [&'static str] = &[
        "OBJECT ID",
        "DISPLAY NAME",
        "USER PRINCIPAL NAME",
        "MAIL",
        "TYPE",
        "ENABLED",
        "IMPORTED",
        "SOURCE",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.object_id.clone(),
            self.display_name.clone(),
            self.user_principal_name.clone(),
            self.mail.clone(),
            self.account_type.clone(),
            yes_no(self.enabled),
            yes_no(self.imported),
            self.source.clone(),
        ]
    }
}

impl From<directory_pb::DirectoryUser> for DirectoryRow {
    fn from(user: directory_pb::DirectoryUser) -> Self {
        let account_type = match user.account_type() {
            directory_pb::AccountType::Guest => "guest",
            _ => "member",
        };
        let source = match user.source() {
            directory_pb::UserSource::Scim => "scim",
            _ => "graph",
        };
        Self {
            account_type: account_type.to_owned(),
            object_id: user.object_id,
            display_name: user.display_name,
            user_principal_name: user.user_principal_name,
            mail: user.mail,
            enabled: user.account_enabled,
            imported: user.imported,
            source: source.to_owned(),
        }
    }
}

/// Options of `directory list`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DirectoryListArgs {
    /// Prefix of display name, user principal name or mail (case-insensitive).
    #[arg(long, short)]
    pub search: Option<String>,
    /// Also list users already in the registry.
    #[arg(long)]
    pub all: bool,
    /// Only enabled accounts.
    #[arg(long)]
    pub enabled_only: bool,
    /// Only guests.
    #[arg(long, conflicts_with = "members")]
    pub guests: bool,
    /// Only members.
    #[arg(long)]
    pub members: bool,
    /// Only the members of this synced group (object id).
    #[arg(long)]
    pub group: Option<String>,
    /// Most users to show; 0 (the default) shows 50 in a table and every one as JSON or CSV.
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
}

/// Lists directory users page by page, up to the limit.
pub async fn directory_list(
    endpoints: &Endpoints,
    args: &DirectoryListArgs,
) -> anyhow::Result<Vec<DirectoryRow>> {
    let mut client = endpoints.directory().await?;
    let account_type = if args.guests {
        directory_pb::AccountType::Guest
    } else if args.members {
        directory_pb::AccountType::Member
    } else {
        directory_pb::AccountType::Unspecified
    };
    let mut rows = Vec::new();
    let mut token = String::new();
    while rows.len() < args.limit {
        let page_size = u32::try_from((args.limit - rows.len()).min(1000)).unwrap_or(1000);
        let request = directory_pb::ListUsersRequest {
            search: args.search.clone().unwrap_or_default(),
            page_size,
            page_token: token,
            not_imported_only: Some(!args.all),
            group_id: args.group.clone().unwrap_or_default(),
            enabled_only: args.enabled_only,
            account_type: account_type.into(),
        };
        let page = client
            .list_users(request)
            .await
            .map_err(failed("listing the directory"))?
            .into_inner();
        rows.extend(page.users.into_iter().map(DirectoryRow::from));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(rows)
}

/// Runs a sync round on directory-sync and follows it quietly to its end; answers the ended
/// run (which may have failed: the run says why).
pub async fn directory_sync(
    endpoints: &Endpoints,
    delta: bool,
) -> anyhow::Result<directory_pb::SyncRun> {
    let started = crate::rounds::start(endpoints, delta, false).await?;
    crate::rounds::follow(endpoints, &started.run_id, crate::rounds::Display::Quiet)
        .await?
        .run
        .context("the round ended without its run")
}

/// Approves a sync run halted by the safety threshold: its changes are applied.
pub async fn sync_approve(
    endpoints: &Endpoints,
    run_id: &str,
) -> anyhow::Result<directory_pb::SyncRun> {
    let mut client = endpoints.directory().await?;
    let request = directory_pb::ApproveSyncRunRequest {
        run_id: run_id.to_owned(),
    };
    client
        .approve_sync_run(request)
        .await
        .map_err(failed("approving the run"))?
        .into_inner()
        .run
        .context("the answer has no run")
}

/// Rejects a halted sync run: its changes are dropped.
pub async fn sync_reject(
    endpoints: &Endpoints,
    run_id: &str,
    reason: &str,
) -> anyhow::Result<directory_pb::SyncRun> {
    let mut client = endpoints.directory().await?;
    let request = directory_pb::RejectSyncRunRequest {
        run_id: run_id.to_owned(),
        reason: reason.to_owned(),
    };
    client
        .reject_sync_run(request)
        .await
        .map_err(failed("rejecting the run"))?
        .into_inner()
        .run
        .context("the answer has no run")
}

/// How long a run took, in seconds: the server's `duration_ms` (never negative), or for a
/// server without it, the time between start and end, or so far while it runs.
fn run_seconds(run: &directory_pb::SyncRun) -> f64 {
    let ms = if run.duration_ms > 0 {
        run.duration_ms
    } else if run.status() == directory_pb::SyncRunStatus::Running {
        service_runtime::now_ms() - run.started_at_ms
    } else if run.finished_at_ms > 0 {
        run.finished_at_ms - run.started_at_ms
    } else {
        0
    };
    ms.max(0) as f64 / 1000.0
}

/// A sync round as `sync runs` lists it.
#[derive(Debug, Serialize)]
pub struct RunRow {
    pub run_id: String,
    pub started_at: String,
    /// What happened, as `sync status` says it.
    pub summary: String,
}

impl Record for RunRow {
    const HEADERS: &'static [&'static str] = &["RUN ID", "STARTED", "WHAT HAPPENED"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.run_id.clone(),
            self.started_at.clone(),
            self.summary.clone(),
        ]
    }
}

/// The last `limit` sync rounds, newest first (a halted one's id is the one to approve).
pub async fn sync_runs(endpoints: &Endpoints, limit: usize) -> anyhow::Result<Vec<RunRow>> {
    let mut client = endpoints.directory().await?;
    let mut rows = Vec::new();
    let mut token = String::new();
    while rows.len() < limit {
        let request = directory_pb::ListSyncRunsRequest {
            page_size: u32::try_from((limit - rows.len()).min(100)).unwrap_or(100),
            page_token: token,
        };
        let page = client
            .list_sync_runs(endpoints.request(request))
            .await
            .map_err(failed("listing sync rounds"))?
            .into_inner();
        rows.extend(page.runs.iter().map(|run| RunRow {
            run_id: run.run_id.clone(),
            started_at: crate::admin::timestamp(run.started_at_ms),
            summary: describe_run(run),
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(rows)
}

pub fn describe_run(run: &directory_pb::SyncRun) -> String {
    let seconds = run_seconds(run);
    let mode = match (run.mode(), run.fell_back_from_delta) {
        (directory_pb::SyncMode::Delta, _) => "delta",
        (directory_pb::SyncMode::Scim, _) => "scim (pushed by Entra)",
        (_, true) => "full (fell back from delta)",
        _ => "full",
    };
    let status = match run.status() {
        directory_pb::SyncRunStatus::Succeeded => "succeeded",
        directory_pb::SyncRunStatus::Failed => "FAILED",
        directory_pb::SyncRunStatus::Running => "running",
        directory_pb::SyncRunStatus::AwaitingApproval => "HALTED, awaiting approval",
        directory_pb::SyncRunStatus::Rejected => "rejected",
        directory_pb::SyncRunStatus::Unspecified => "ended",
    };
    let time = if run.status() == directory_pb::SyncRunStatus::Running {
        format!("for {seconds:.1} s so far")
    } else {
        format!("in {seconds:.1} s")
    };
    let mut line = format!(
        "{mode} sync {status}: {} users read ({} new, {} changed, {} removed, {} unreadable) {time}",
        run.users_seen, run.users_created, run.users_updated, run.users_removed, run.users_rejected,
    );
    if !run.fallback_reason.is_empty() {
        line.push_str(&format!(" [fell back: {}]", run.fallback_reason));
    }
    if !run.error.is_empty() {
        line.push_str(&format!(": {}", run.error));
    }
    line
}

/// A synced group as listed.
#[derive(Debug, Serialize)]
pub struct GroupRow {
    pub object_id: String,
    pub display_name: String,
    pub members: u64,
}

impl Record for GroupRow {
    const HEADERS: &'static [&'static str] = &["OBJECT ID", "DISPLAY NAME", "USER MEMBERS"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.object_id.clone(),
            self.display_name.clone(),
            self.members.to_string(),
        ]
    }
}

/// The groups whose members are synced.
pub async fn directory_groups(
    endpoints: &Endpoints,
    search: Option<String>,
) -> anyhow::Result<Vec<GroupRow>> {
    let mut client = endpoints.directory().await?;
    let mut rows = Vec::new();
    let mut token = String::new();
    loop {
        let request = directory_pb::ListGroupsRequest {
            search: search.clone().unwrap_or_default(),
            page_size: 1000,
            page_token: token,
        };
        let page = client
            .list_groups(request)
            .await
            .map_err(failed("listing groups"))?
            .into_inner();
        rows.extend(page.groups.into_iter().map(|g| GroupRow {
            object_id: g.object_id,
            display_name: g.display_name,
            members: g.member_count,
        }));
        if page.next_page_token.is_empty() {
            return Ok(rows);
        }
        token = page.next_page_token;
    }
}

/// The sync state.
pub async fn directory_status(
    endpoints: &Endpoints,
) -> anyhow::Result<directory_pb::GetSyncStatusResponse> {
    let mut client = endpoints.directory().await?;
    Ok(client
        .get_sync_status(directory_pb::GetSyncStatusRequest {})
        .await
        .map_err(failed("reading the sync status"))?
        .into_inner())
}

/// A SCIM bearer token as listed (never its secret).
#[derive(Debug, Serialize)]
pub struct ScimTokenRow {
    pub token_id: String,
    pub name: String,
    pub created: String,
    pub created_by: String,
    pub last_used: String,
    pub state: String,
}

impl Record for ScimTokenRow {
    const HEADERS: &'static [&'static str] =
        &["TOKEN ID", "NAME", "CREATED", "BY", "LAST USED", "STATE"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.token_id.clone(),
            self.name.clone(),
            self.created.clone(),
            self.created_by.clone(),
            self.last_used.clone(),
            self.state.clone(),
        ]
    }
}

fn scim_token_row(token: directory_pb::ScimToken) -> ScimTokenRow {
    let when = |ms: i64| {
        if ms > 0 {
            crate::admin::timestamp(ms)
        } else {
            String::new()
        }
    };
    ScimTokenRow {
        state: if token.revoked_at_ms > 0 {
            format!("revoked {}", when(token.revoked_at_ms))
        } else {
            "live".to_owned()
        },
        created: when(token.created_at_ms),
        last_used: if token.last_used_at_ms > 0 {
            when(token.last_used_at_ms)
        } else {
            "never".to_owned()
        },
        token_id: token.token_id,
        name: token.name,
        created_by: token.created_by,
    }
}

/// Makes a SCIM bearer token: its row and the secret (shown once).
pub async fn scim_token_create(
    endpoints: &Endpoints,
    name: &str,
) -> anyhow::Result<(ScimTokenRow, String)> {
    let mut client = endpoints.directory().await?;
    let request = directory_pb::CreateScimTokenRequest {
        name: name.to_owned(),
    };
    let answer = client
        .create_scim_token(request)
        .await
        .map_err(failed("creating a SCIM token"))?
        .into_inner();
    let token = answer.token.context("the answer has no token")?;
    Ok((scim_token_row(token), answer.secret))
}

/// The SCIM bearer tokens, newest first.
pub async fn scim_token_list(endpoints: &Endpoints) -> anyhow::Result<Vec<ScimTokenRow>> {
    let mut client = endpoints.directory().await?;
    let answer = client
        .list_scim_tokens(directory_pb::ListScimTokensRequest {})
        .await
        .map_err(failed("listing SCIM tokens"))?
        .into_inner();
    Ok(answer.tokens.into_iter().map(scim_token_row).collect())
}

/// Revokes a SCIM bearer token.
pub async fn scim_token_revoke(
    endpoints: &Endpoints,
    token_id: &str,
) -> anyhow::Result<ScimTokenRow> {
    let mut client = endpoints.directory().await?;
    let request = directory_pb::RevokeScimTokenRequest {
        token_id: token_id.to_owned(),
    };
    let answer = client
        .revoke_scim_token(request)
        .await
        .map_err(failed("revoking a SCIM token"))?
        .into_inner();
    Ok(scim_token_row(
        answer.token.context("the answer has no token")?,
    ))
}
