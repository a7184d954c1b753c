//! `users list` and `companies …`: the registry.

use super::*;

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
