//! The admin commands: each talks to the services over gRPC, exactly as against a deployment.

use anyhow::Context as _;
use proto::directory::v1 as directory_pb;
use proto::directory::v1::directory_service_client::DirectoryServiceClient;
use proto::importer::v1 as importer_pb;
use proto::importer::v1::importer_service_client::ImporterServiceClient;
use proto::registry::v1 as registry_pb;
use proto::registry::v1::registry_service_client::RegistryServiceClient;
use serde::Serialize;
use service_runtime::auth::AuthedChannel;

use crate::output::{Format, Record, note, print, yes_no};

mod jobs;

pub use jobs::*;

/// Where the services are, and how this CLI proves who it is.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub directory: String,
    pub registry: String,
    pub importer: String,
    /// Who the commands act for where the services run in insecure development mode (sent as
    /// `x-userimport-principal`; ignored by services that verify tokens).
    pub principal: String,
    /// The bearer token sent with every call.
    pub token: Option<secrecy::SecretString>,
    /// TLS towards the services (`https://` URLs).
    pub tls: service_runtime::tls::ClientTls,
}

impl Endpoints {
    /// A request for `message` (credentials are added to every call by the channel).
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        tonic::Request::new(message)
    }

    /// A connected channel to `url` with this CLI's credentials on every call.
    async fn channel(&self, url: &str, service: &str) -> anyhow::Result<AuthedChannel> {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
            .with_context(|| format!("invalid {service} URL {url}"))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(service_runtime::grpc::CALL_TIMEOUT);
        let endpoint = service_runtime::tls::configure_endpoint(endpoint, &self.tls)?;
        let channel = endpoint.connect().await.with_context(|| {
            format!("cannot reach {service} at {url} (is `userimport dev` running?)")
        })?;
        let source = match &self.token {
            Some(token) => service_runtime::auth::TokenSource::inline(token.clone()),
            None => service_runtime::auth::TokenSource::default(),
        };
        let outbound =
            service_runtime::auth::Outbound::new(&source)?.with_principal(&self.principal);
        Ok(tonic::service::interceptor::InterceptedService::new(
            channel, outbound,
        ))
    }

    pub(crate) async fn directory(&self) -> anyhow::Result<DirectoryServiceClient<AuthedChannel>> {
        Ok(DirectoryServiceClient::new(
            self.channel(&self.directory, "directory-sync").await?,
        ))
    }

    pub(crate) async fn registry(&self) -> anyhow::Result<RegistryServiceClient<AuthedChannel>> {
        Ok(RegistryServiceClient::new(
            self.channel(&self.registry, "user-registry").await?,
        ))
    }

    pub(crate) async fn importer(&self) -> anyhow::Result<ImporterServiceClient<AuthedChannel>> {
        Ok(ImporterServiceClient::new(
            self.channel(&self.importer, "import-worker").await?,
        ))
    }
}

/// Turns a failed call into an error that says what failed, with the service's message.
pub fn failed(what: &'static str) -> impl FnOnce(tonic::Status) -> anyhow::Error {
    move |status| {
        let hint = match status.code() {
            tonic::Code::Unauthenticated => {
                "\nhint: the CLI sends the token in --token-file / USERIMPORT_TOKEN_FILE, \
                 USERIMPORT_TOKEN, ./.userimport/admin.token, or the one the last \
                 `userimport dev` noted in your profile"
            }
            tonic::Code::PermissionDenied => {
                "\nhint: your token's roles do not allow this (readers may only read)"
            }
            _ => "",
        };
        anyhow::anyhow!(
            "{what} failed ({:?}): {}{hint}",
            status.code(),
            status.message()
        )
    }
}

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
        ]
    }
}

impl From<directory_pb::DirectoryUser> for DirectoryRow {
    fn from(user: directory_pb::DirectoryUser) -> Self {
        let account_type = match user.account_type() {
            directory_pb::AccountType::Guest => "guest",
            _ => "member",
        };
        Self {
            account_type: account_type.to_owned(),
            object_id: user.object_id,
            display_name: user.display_name,
            user_principal_name: user.user_principal_name,
            mail: user.mail,
            enabled: user.account_enabled,
            imported: user.imported,
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

/// One user's outcome of an import.
#[derive(Debug, Serialize)]
pub struct OutcomeRow {
    pub object_id: String,
    pub outcome: String,
    pub user_id: String,
    pub reason: String,
}

impl Record for OutcomeRow {
    const HEADERS: &'static [&'static str] = &["OBJECT ID", "OUTCOME", "USER ID", "REASON"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.object_id.clone(),
            self.outcome.clone(),
            self.user_id.clone(),
            self.reason.clone(),
        ]
    }
}

impl From<registry_pb::ImportOutcome> for OutcomeRow {
    fn from(outcome: registry_pb::ImportOutcome) -> Self {
        let kind = match outcome.kind() {
            registry_pb::OutcomeKind::Created => "created",
            registry_pb::OutcomeKind::AlreadyPresent => "already present",
            registry_pb::OutcomeKind::Skipped => "skipped",
            registry_pb::OutcomeKind::Failed | registry_pb::OutcomeKind::Unspecified => "failed",
        };
        let reason = match (outcome.reason.is_empty(), outcome.note.is_empty()) {
            (_, true) => outcome.reason,
            (true, false) => outcome.note,
            (false, false) => format!("{}; {}", outcome.reason, outcome.note),
        };
        Self {
            object_id: outcome.object_id,
            outcome: kind.to_owned(),
            user_id: outcome.user_id,
            reason,
        }
    }
}

/// Imports users chosen by object id or user principal name into `company` (or, with
/// `dry_run`, reports what the import would do and writes nothing).
/// What `import` did: the import-worker's answer, and the names the directory did not know
/// (each reported as that user's outcome unless `--all-or-nothing`).
pub struct Imported {
    pub response: importer_pb::ImportSelectedResponse,
    /// The users as named, in the order given, each with its object id when resolved.
    pub named: Vec<(String, Option<String>)>,
}

/// Imports the named users: object ids as they are, user principal names and guests' mail
/// addresses resolved through the directory first.
pub async fn import(
    endpoints: &Endpoints,
    users: &[String],
    company: &str,
    request_id: Option<String>,
    dry_run: bool,
    all_or_nothing: bool,
) -> anyhow::Result<Imported> {
    anyhow::ensure!(
        !users.is_empty(),
        "name at least one user (object id, user principal name or mail)"
    );
    let named = resolve(endpoints, users).await?;
    let unknown: Vec<&str> = named
        .iter()
        .filter(|(_, id)| id.is_none())
        .map(|(name, _)| name.as_str())
        .collect();
    if all_or_nothing && !unknown.is_empty() {
        anyhow::bail!(
            "the directory has no user {}; nothing was imported",
            unknown.join(", ")
        );
    }
    let object_ids: Vec<String> = named.iter().filter_map(|(_, id)| id.clone()).collect();
    let response = if object_ids.is_empty() {
        importer_pb::ImportSelectedResponse::default()
    } else {
        let mut importer = endpoints.importer().await?;
        let request = importer_pb::ImportSelectedRequest {
            object_ids,
            company: company.to_owned(),
            dry_run,
            request_id: request_id.unwrap_or_default(),
            all_or_nothing,
        };
        importer
            .import_selected(endpoints.request(request))
            .await
            .map_err(failed("the import"))?
            .into_inner()
    };
    Ok(Imported { response, named })
}

/// Each name with the object id it stands for: a GUID as it is; else a user principal name
/// or, for guests, a mail address the mirror knows (case-insensitively); `None` when neither.
async fn resolve(
    endpoints: &Endpoints,
    users: &[String],
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let mut named: Vec<(String, Option<String>)> = users
        .iter()
        .map(|u| (u.trim().to_owned(), service_runtime::normalize_guid(u)))
        .collect();
    let names: Vec<String> = named
        .iter()
        .filter(|(_, id)| id.is_none())
        .map(|(name, _)| name.clone())
        .collect();
    if names.is_empty() {
        return Ok(named);
    }
    let mut directory = endpoints.directory().await?;
    let found = directory
        .get_users(endpoints.request(directory_pb::GetUsersRequest {
            object_ids: Vec::new(),
            user_principal_names: names,
        }))
        .await
        .map_err(failed("looking up users"))?
        .into_inner();
    for (name, id) in named.iter_mut().filter(|(_, id)| id.is_none()) {
        *id = found
            .users
            .iter()
            .find(|u| u.user_principal_name.eq_ignore_ascii_case(name))
            .map(|u| u.object_id.clone());
    }
    // A guest signs in with its mail, which is what an administrator knows it by.
    for (name, id) in named
        .iter_mut()
        .filter(|(name, id)| id.is_none() && name.contains('@'))
    {
        let page = directory
            .list_users(endpoints.request(directory_pb::ListUsersRequest {
                search: name.clone(),
                page_size: 20,
                not_imported_only: Some(false),
                ..Default::default()
            }))
            .await
            .map_err(failed("looking up users by mail"))?
            .into_inner();
        *id = page
            .users
            .iter()
            .find(|u| u.mail.eq_ignore_ascii_case(name))
            .map(|u| u.object_id.clone());
    }
    Ok(named)
}

pub fn describe_counts(counts: &importer_pb::OutcomeCounts) -> String {
    format!(
        "{} created, {} already present, {} skipped, {} failed",
        counts.created, counts.already_present, counts.skipped, counts.failed
    )
}

/// A registry user as listed.
#[derive(Debug, Serialize)]
pub struct UserRow {
    pub user_id: String,
    pub name: String,
    pub network_alias: String,
    pub network_domain: String,
    pub company: String,
    pub account_type: String,
    pub enabled: bool,
    pub object_id: String,
}

impl Record for UserRow {
    const HEADERS: &'static [&'static str] = &[
        "USER ID",
        "NAME",
        "ALIAS",
        "PROVIDER",
        "COMPANY",
        "TYPE",
        "ENABLED",
        "OBJECT ID",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.user_id.clone(),
            self.name.clone(),
            self.network_alias.clone(),
            self.network_domain.clone(),
            self.company.clone(),
            self.account_type.clone(),
            yes_no(self.enabled),
            self.object_id.clone(),
        ]
    }
}

impl From<registry_pb::RegistryUser> for UserRow {
    fn from(user: registry_pb::RegistryUser) -> Self {
        let account_type = match user.account_type() {
            registry_pb::AccountType::Guest => "guest",
            _ => "member",
        };
        Self {
            account_type: account_type.to_owned(),
            user_id: user.user_id,
            name: user.name,
            network_alias: user.network_alias,
            network_domain: user.network_domain,
            company: user.company,
            enabled: user.enabled,
            object_id: user.object_id,
        }
    }
}

/// Options of `users list`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UsersListArgs {
    /// Prefix of user id, name or alias (case-insensitive).
    #[arg(long, short)]
    pub search: Option<String>,
    /// Only users of this default company.
    #[arg(long)]
    pub company: Option<String>,
    /// Only users holding no role (newly imported ones wait here for their roles).
    #[arg(long)]
    pub without_roles: bool,
    /// Only enabled users.
    #[arg(long, conflicts_with = "disabled")]
    pub enabled: bool,
    /// Only disabled users.
    #[arg(long)]
    pub disabled: bool,
    /// Only members or only guests.
    #[arg(long, value_parser = ["member", "guest"])]
    pub account_type: Option<String>,
    /// Only users created by this import (a job id or an import request id).
    #[arg(long)]
    pub imported_by: Option<String>,
    /// Most users to show; 0 (the default) shows 50 in a table and every one as JSON or CSV.
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
}

/// Lists registry users page by page, up to the limit.
pub async fn users_list(
    endpoints: &Endpoints,
    args: &UsersListArgs,
) -> anyhow::Result<Vec<UserRow>> {
    let mut client = endpoints.registry().await?;
    let mut rows = Vec::new();
    let mut token = String::new();
    while rows.len() < args.limit {
        let request = registry_pb::ListUsersRequest {
            page_size: u32::try_from((args.limit - rows.len()).min(1000)).unwrap_or(1000),
            page_token: token,
            search: args.search.clone().unwrap_or_default(),
            company: args.company.clone().unwrap_or_default(),
            enabled: match (args.enabled, args.disabled) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            account_type: match args.account_type.as_deref() {
                Some("member") => registry_pb::AccountType::Member.into(),
                Some("guest") => registry_pb::AccountType::Guest.into(),
                _ => registry_pb::AccountType::Unspecified.into(),
            },
            without_roles: args.without_roles,
            created_by_import: args.imported_by.clone().unwrap_or_default(),
        };
        let page = client
            .list_users(request)
            .await
            .map_err(failed("listing users"))?
            .into_inner();
        rows.extend(page.users.into_iter().map(UserRow::from));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(rows)
}

/// A company as listed.
#[derive(Debug, Serialize)]
pub struct CompanyRow {
    pub code: String,
    pub name: String,
}

impl Record for CompanyRow {
    const HEADERS: &'static [&'static str] = &["CODE", "NAME"];

    fn cells(&self) -> Vec<String> {
        vec![self.code.clone(), self.name.clone()]
    }
}

pub async fn companies_list(endpoints: &Endpoints) -> anyhow::Result<Vec<CompanyRow>> {
    let mut client = endpoints.registry().await?;
    let response = client
        .list_companies(registry_pb::ListCompaniesRequest {})
        .await
        .map_err(failed("listing companies"))?;
    Ok(response
        .into_inner()
        .companies
        .into_iter()
        .map(|c| CompanyRow {
            code: c.code,
            name: c.name,
        })
        .collect())
}

pub async fn companies_create(
    endpoints: &Endpoints,
    code: &str,
    name: &str,
) -> anyhow::Result<CompanyRow> {
    let mut client = endpoints.registry().await?;
    let request = registry_pb::CreateCompanyRequest {
        company: Some(registry_pb::Company {
            code: code.to_owned(),
            name: name.to_owned(),
        }),
    };
    let company = client
        .create_company(request)
        .await
        .map_err(failed("creating the company"))?
        .into_inner()
        .company;
    let company = company.context("the registry answered without the company")?;
    Ok(CompanyRow {
        code: company.code,
        name: company.name,
    })
}

/// Prints an import's outcomes and its summary line.
pub fn print_import(format: Format, imported: Imported) -> anyhow::Result<()> {
    let Imported { response, named } = imported;
    let mut counts = response.counts.unwrap_or_default();
    let mut by_id: std::collections::HashMap<String, OutcomeRow> = response
        .outcomes
        .into_iter()
        .map(|o| (o.object_id.clone(), OutcomeRow::from(o)))
        .collect();
    // In the order named; a name the directory did not know is that user's outcome.
    let mut rows = Vec::with_capacity(named.len());
    for (name, id) in named {
        match id {
            Some(id) => rows.extend(by_id.remove(&id)),
            None => {
                counts.skipped += 1;
                rows.push(OutcomeRow {
                    object_id: String::new(),
                    outcome: "skipped".to_owned(),
                    user_id: String::new(),
                    reason: format!(
                        "not in the directory: no user signs in as, or has the mail, {name}"
                    ),
                });
            }
        }
    }
    print(format, &rows)?;
    let request = if response.request_id.is_empty() {
        String::new()
    } else {
        format!(" (request {})", response.request_id)
    };
    note(format, format!("{}{request}", describe_counts(&counts)));
    Ok(())
}
