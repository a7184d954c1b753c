//! The admin commands: each talks to the services over gRPC, exactly as against a deployment.

use anyhow::Context as _;
use proto::directory::v1 as directory_pb;
use proto::directory::v1::directory_service_client::DirectoryServiceClient;
use proto::importer::v1 as importer_pb;
use proto::importer::v1::importer_service_client::ImporterServiceClient;
use proto::registry::v1 as registry_pb;
use proto::registry::v1::registry_service_client::RegistryServiceClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::output::{Format, Record, note, print, yes_no};

/// Where the services are.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub directory: String,
    pub registry: String,
    pub importer: String,
}

impl Endpoints {
    async fn directory(&self) -> anyhow::Result<DirectoryServiceClient<Channel>> {
        DirectoryServiceClient::connect(self.directory.clone())
            .await
            .with_context(|| {
                format!(
                    "cannot reach directory-sync at {} (is `userimport dev` running?)",
                    self.directory
                )
            })
    }

    async fn registry(&self) -> anyhow::Result<RegistryServiceClient<Channel>> {
        RegistryServiceClient::connect(self.registry.clone())
            .await
            .with_context(|| {
                format!(
                    "cannot reach user-registry at {} (is `userimport dev` running?)",
                    self.registry
                )
            })
    }

    async fn importer(&self) -> anyhow::Result<ImporterServiceClient<Channel>> {
        ImporterServiceClient::connect(self.importer.clone())
            .await
            .with_context(|| {
                format!(
                    "cannot reach import-worker at {} (is `userimport dev` running?)",
                    self.importer
                )
            })
    }
}

/// Turns a failed call into an error that says what failed, with the service's message.
fn failed(what: &'static str) -> impl FnOnce(tonic::Status) -> anyhow::Error {
    move |status| anyhow::anyhow!("{what} failed ({:?}): {}", status.code(), status.message())
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
    /// Most users to show.
    #[arg(long, default_value_t = 50)]
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

/// Shows a sync round's counts.
pub async fn directory_sync(
    endpoints: &Endpoints,
    delta: bool,
) -> anyhow::Result<directory_pb::SyncRun> {
    let mut client = endpoints.directory().await?;
    let mode = if delta {
        directory_pb::SyncMode::Delta
    } else {
        directory_pb::SyncMode::Full
    };
    let request = directory_pb::SyncNowRequest { mode: mode.into() };
    let response = client
        .sync_now(request)
        .await
        .map_err(failed("the sync"))?
        .into_inner();
    response.run.context("the sync answered without a run")
}

pub fn describe_run(run: &directory_pb::SyncRun) -> String {
    let seconds = (run.finished_at_ms - run.started_at_ms) as f64 / 1000.0;
    let mut line = format!(
        "{} sync {}: {} users read ({} new, {} changed, {} removed, {} unreadable) in {seconds:.1} s",
        if run.mode() == directory_pb::SyncMode::Delta {
            "delta"
        } else {
            "full"
        },
        match run.status() {
            directory_pb::SyncRunStatus::Succeeded => "succeeded",
            directory_pb::SyncRunStatus::Failed => "FAILED",
            directory_pb::SyncRunStatus::Running => "running",
            _ => "ended",
        },
        run.users_seen,
        run.users_created,
        run.users_updated,
        run.users_removed,
        run.users_rejected,
    );
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

/// Imports users chosen by object id or user principal name into `company`.
pub async fn import(
    endpoints: &Endpoints,
    users: &[String],
    company: &str,
    request_id: Option<String>,
) -> anyhow::Result<importer_pb::ImportSelectedResponse> {
    anyhow::ensure!(
        !users.is_empty(),
        "name at least one user (object id or user principal name)"
    );
    // Object ids go as they are; anything else is a UPN the directory resolves first. The
    // order the administrator gave is kept, so outcomes line up with the command line.
    let upns: Vec<String> = users
        .iter()
        .filter(|u| service_runtime::normalize_guid(u).is_none())
        .cloned()
        .collect();
    let mut resolved = std::collections::HashMap::new();
    if !upns.is_empty() {
        let mut directory = endpoints.directory().await?;
        let request = directory_pb::GetUsersRequest {
            object_ids: Vec::new(),
            user_principal_names: upns.clone(),
        };
        let found = directory
            .get_users(request)
            .await
            .map_err(failed("looking up users"))?
            .into_inner();
        anyhow::ensure!(
            found.not_found.is_empty(),
            "the directory has no user {}",
            found.not_found.join(", ")
        );
        // GetUsers answers UPN lookups in request order.
        resolved.extend(
            upns.into_iter()
                .zip(found.users.into_iter().map(|u| u.object_id)),
        );
    }
    let object_ids: Vec<String> = users
        .iter()
        .map(|u| resolved.get(u).cloned().unwrap_or_else(|| u.clone()))
        .collect();
    let mut importer = endpoints.importer().await?;
    let request = importer_pb::ImportSelectedRequest {
        object_ids,
        company: company.to_owned(),
        dry_run: false,
        request_id: request_id.unwrap_or_default(),
    };
    Ok(importer
        .import_selected(request)
        .await
        .map_err(failed("the import"))?
        .into_inner())
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
    /// Most users to show.
    #[arg(long, default_value_t = 50)]
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
            ..Default::default()
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
pub fn print_import(
    format: Format,
    response: importer_pb::ImportSelectedResponse,
) -> anyhow::Result<()> {
    let counts = response.counts.unwrap_or_default();
    let rows: Vec<OutcomeRow> = response
        .outcomes
        .into_iter()
        .map(OutcomeRow::from)
        .collect();
    print(format, &rows)?;
    note(
        format,
        format!(
            "{} (request {})",
            describe_counts(&counts),
            response.request_id
        ),
    );
    Ok(())
}
