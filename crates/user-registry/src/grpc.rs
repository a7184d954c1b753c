//! The gRPC edge: converts protobuf messages to domain values and back, and maps errors once.

use proto::registry::v1 as pb;
use service_runtime::auth::{
    ADMIN, AccessRules, DIRECTORY_SYNC, IMPORT_WORKER, READ, READER, WRITE, acting_for, actor_of,
    principal_of,
};
use service_runtime::grpc::{
    MAX_FILTER_LEN, bounded, decode_page_token, encode_page_token, page_size,
};
use tonic::{Request, Response, Status};

use crate::domain::audit::AuditEvent;
use crate::domain::update::{UpdateKind, UserChange};
use crate::domain::user::{RawNewUser, parse_guid};
use crate::domain::{
    AccountType, Company, CompanyCode, ImportOutcome, NewUser, OutcomeKind, RegistryUser,
};
use crate::domain::{Assignment, Role};
use crate::error::Error;
use crate::service::{
    Caller, ChangeItem, ImportCaller, ImportItem, Registry, RoleChange, RuleGrants, Viewer,
};
use crate::store::{ObjectKey, UserFilter};

/// Who may call each RPC. A service identity gets exactly what its service calls here
/// (README's access table is tested against this): import-worker imports, reads companies
/// and keeps its rules' grants; directory-sync checks what is imported, follows the import
/// feed and applies a round's changes.
pub const ACCESS: AccessRules = &[
    (
        "/userimport.registry.v1.RegistryService/ImportUsers",
        &[ADMIN, IMPORT_WORKER],
    ),
    (
        "/userimport.registry.v1.RegistryService/CheckImported",
        &[ADMIN, READER, DIRECTORY_SYNC],
    ),
    (
        "/userimport.registry.v1.RegistryService/ListImportChanges",
        &[ADMIN, READER, DIRECTORY_SYNC],
    ),
    ("/userimport.registry.v1.RegistryService/GetUser", READ),
    ("/userimport.registry.v1.RegistryService/ListUsers", READ),
    (
        "/userimport.registry.v1.RegistryService/UpdateUsers",
        &[ADMIN, DIRECTORY_SYNC],
    ),
    ("/userimport.registry.v1.RegistryService/RenameUser", WRITE),
    (
        "/userimport.registry.v1.RegistryService/SetUsersEnabled",
        WRITE,
    ),
    (
        "/userimport.registry.v1.RegistryService/ListCompanies",
        &[ADMIN, READER, IMPORT_WORKER],
    ),
    (
        "/userimport.registry.v1.RegistryService/CreateCompany",
        WRITE,
    ),
    ("/userimport.registry.v1.RegistryService/ListRoles", READ),
    ("/userimport.registry.v1.RegistryService/AssignRoles", WRITE),
    ("/userimport.registry.v1.RegistryService/RevokeRoles", WRITE),
    (
        "/userimport.registry.v1.RegistryService/ListAuditEvents",
        READ,
    ),
    // Rules belong to import-worker: only it registers them and writes their grants (an
    // administrator grants with AssignRoles and revokes any source with RevokeRoles).
    (
        "/userimport.registry.v1.RegistryService/ApplyRuleGrants",
        &[IMPORT_WORKER],
    ),
    (
        "/userimport.registry.v1.RegistryService/StreamRuleGrants",
        &[ADMIN, READER, IMPORT_WORKER],
    ),
    (
        "/userimport.registry.v1.RegistryService/RegisterRoleRule",
        &[IMPORT_WORKER],
    ),
    (
        "/userimport.registry.v1.RegistryService/RetireRoleRule",
        &[IMPORT_WORKER],
    ),
];

/// A rule's grant holders, streamed.
pub type HolderStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::StreamRuleGrantsResponse, Status>> + Send>,
>;

/// Largest page of a listing.
pub const MAX_PAGE_SIZE: u32 = 1000;
const DEFAULT_PAGE_SIZE: u32 = 100;

/// Implements `userimport.registry.v1.RegistryService`.
pub struct GrpcApi {
    registry: Registry,
}

impl GrpcApi {
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }
}

fn account_type_from_pb(value: i32) -> Option<AccountType> {
    match pb::AccountType::try_from(value) {
        Ok(pb::AccountType::Member) => Some(AccountType::Member),
        Ok(pb::AccountType::Guest) => Some(AccountType::Guest),
        _ => None,
    }
}

fn account_type_to_pb(value: AccountType) -> pb::AccountType {
    match value {
        AccountType::Member => pb::AccountType::Member,
        AccountType::Guest => pb::AccountType::Guest,
    }
}

impl From<pb::NewUser> for RawNewUser {
    fn from(user: pb::NewUser) -> Self {
        Self {
            account_type: account_type_from_pb(user.account_type),
            tenant_id: user.tenant_id,
            object_id: user.object_id,
            network_alias: user.network_alias,
            network_domain: user.network_domain,
            email: user.email,
            name: user.name,
            enabled: user.enabled,
        }
    }
}

impl From<RegistryUser> for pb::RegistryUser {
    fn from(user: RegistryUser) -> Self {
        Self {
            user_id: user.user_id,
            tenant_id: user.tenant_id,
            object_id: user.object_id,
            network_alias: user.network_alias,
            network_domain: user.network_domain,
            email: user.email,
            name: user.name,
            enabled: user.enabled,
            company: user.company,
            account_type: account_type_to_pb(user.account_type).into(),
            created_at_ms: user.created_at_ms,
            updated_at_ms: user.updated_at_ms,
            created_by_import: user.created_by_import,
            deleted_in_directory_at_ms: user.deleted_in_directory_at_ms,
        }
    }
}

impl From<ImportOutcome> for pb::ImportOutcome {
    fn from(outcome: ImportOutcome) -> Self {
        let kind = match outcome.kind {
            OutcomeKind::Created => pb::OutcomeKind::Created,
            OutcomeKind::AlreadyPresent => pb::OutcomeKind::AlreadyPresent,
            OutcomeKind::Skipped => pb::OutcomeKind::Skipped,
            OutcomeKind::Failed => pb::OutcomeKind::Failed,
        };
        Self {
            object_id: outcome.object_id,
            kind: kind.into(),
            user_id: outcome.user_id,
            reason: outcome.reason,
            note: outcome.note,
        }
    }
}

impl From<Company> for pb::Company {
    fn from(company: Company) -> Self {
        Self {
            code: company.code.to_string(),
            name: company.name,
        }
    }
}

impl From<Role> for pb::Role {
    fn from(role: Role) -> Self {
        Self {
            role_id: role.role_id,
            name: role.name,
            description: role.description,
            all_companies: role.all_companies,
        }
    }
}

impl From<Assignment> for pb::RoleAssignment {
    fn from(assignment: Assignment) -> Self {
        Self {
            role_id: assignment.role_id,
            company: assignment.company,
            sources: assignment.sources,
        }
    }
}

impl From<AuditEvent> for pb::AuditEvent {
    fn from(event: AuditEvent) -> Self {
        Self {
            event_id: event.event_id.to_string(),
            at_ms: event.at_ms,
            actor: event.actor,
            action: event.action,
            user_id: event.user_id,
            via: event.via,
            detail: event.detail,
            service: event.service,
        }
    }
}

/// Metadata key of the caller's request id, recorded as `via` of the changes a call makes.
const REQUEST_ID_HEADER: &str = "x-request-id";

/// Who makes a change and through which request: the caller's request id when it sends one
/// (so its retries are traceable as one request), else a fresh one.
fn caller<T>(request: &Request<T>) -> Caller {
    let request_id = request
        .metadata()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty() && value.len() <= 128)
        .map_or_else(
            || format!("request:{}", uuid::Uuid::new_v4()),
            |id| format!("request:{id}"),
        );
    let (actor, service) = acting_for(request);
    Caller {
        actor,
        service: service.unwrap_or_default(),
        request_id,
    }
}

/// Who reads, for what private imports may show.
fn viewer<T>(request: &Request<T>) -> Viewer {
    let principal = principal_of(request);
    Viewer {
        service: principal.is_service(),
        name: principal.name,
    }
}

#[tonic::async_trait]
impl pb::registry_service_server::RegistryService for GrpcApi {
    #[tracing::instrument(skip_all, fields(import_id = %request.get_ref().import_id, users = request.get_ref().users.len()))]
    async fn import_users(
        &self,
        request: Request<pb::ImportUsersRequest>,
    ) -> Result<Response<pb::ImportUsersResponse>, Status> {
        let (actor, service) = acting_for(&request);
        let principal = principal_of(&request).name;
        let request = request.into_inner();
        bounded("import_id", &request.import_id, MAX_FILTER_LEN)?;
        let caller = ImportCaller {
            principal,
            actor,
            service: service.unwrap_or_default(),
            private: request.private,
        };
        let company = CompanyCode::parse(&request.company)?;
        let items: Vec<ImportItem> = request
            .users
            .into_iter()
            .map(|user| {
                let object_id = user.object_id.clone();
                NewUser::parse(user.into()).map_err(|e| (object_id, e))
            })
            .collect();
        let outcomes = self
            .registry
            .import_users(
                &caller,
                &request.import_id,
                company,
                items,
                request.dry_run,
                service_runtime::now_ms(),
            )
            .await?;
        Ok(Response::new(pb::ImportUsersResponse {
            outcomes: outcomes.into_iter().map(Into::into).collect(),
        }))
    }

    async fn check_imported(
        &self,
        request: Request<pb::CheckImportedRequest>,
    ) -> Result<Response<pb::CheckImportedResponse>, Status> {
        let request = request.into_inner();
        let tenant_id = parse_guid("tenant_id", &request.tenant_id)?;
        let object_ids: Vec<String> = request
            .object_ids
            .iter()
            .map(|id| id.trim().to_ascii_lowercase())
            .collect();
        let imported = self
            .registry
            .check_imported(&tenant_id, &object_ids)
            .await?;
        Ok(Response::new(pb::CheckImportedResponse {
            imported_object_ids: imported,
        }))
    }

    async fn list_import_changes(
        &self,
        request: Request<pb::ListImportChangesRequest>,
    ) -> Result<Response<pb::ListImportChangesResponse>, Status> {
        let request = request.into_inner();
        let tenant_id = parse_guid("tenant_id", &request.tenant_id)?;
        let after_seq = i64::try_from(request.after_seq)
            .map_err(|_| Error::invalid("after_seq", "beyond the feed's numbers"))?;
        let changes = self
            .registry
            .import_changes(
                &tenant_id,
                after_seq,
                &request.after_object_id,
                request.page_size,
            )
            .await?;
        Ok(Response::new(pb::ListImportChangesResponse {
            changes: changes
                .into_iter()
                .map(|c| pb::ImportChange {
                    seq: u64::try_from(c.seq).unwrap_or(0),
                    object_id: c.object_id,
                    imported: c.imported,
                })
                .collect(),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let viewer = viewer(&request);
        let mut user = match request.into_inner().key {
            Some(pb::get_user_request::Key::UserId(user_id)) => {
                self.registry.user_by_user_id(&user_id).await?
            }
            Some(pb::get_user_request::Key::Object(key)) => {
                let key = ObjectKey {
                    tenant_id: parse_guid("object.tenant_id", &key.tenant_id)?,
                    object_id: parse_guid("object.object_id", &key.object_id)?,
                };
                self.registry.user_by_object(&key).await?
            }
            None => return Err(Error::invalid("key", "give a user_id or an object key").into()),
        };
        self.registry
            .hide_private_imports(&viewer, std::slice::from_mut(&mut user))
            .await?;
        let roles = self.registry.user_roles(&user).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user.into()),
            roles: roles.into_iter().map(Into::into).collect(),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let viewer = viewer(&request);
        let request = request.into_inner();
        // What the page token is bound to: every filter of the request.
        let query = pb::ListUsersRequest {
            page_token: String::new(),
            page_size: 0,
            ..request.clone()
        };
        let limit = page_size(
            "page_size",
            request.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        )?;
        let after: String = decode_page_token(&query, &request.page_token)?;
        bounded("search", &request.search, MAX_FILTER_LEN)?;
        bounded(
            "created_by_import",
            &request.created_by_import,
            MAX_FILTER_LEN,
        )?;
        let filter = UserFilter {
            search: request.search.trim().to_owned(),
            company: match request.company.trim() {
                "" => None,
                code => Some(CompanyCode::parse(code)?),
            },
            enabled: request.enabled,
            account_type: account_type_from_pb(request.account_type),
            created_by_import: request.created_by_import.trim().to_owned(),
            without_roles: request.without_roles,
        };
        let users = self
            .registry
            .list_users(&viewer, &filter, &after, limit)
            .await?;
        let next_page_token = match users.last() {
            Some(last) if users.len() == limit as usize => {
                encode_page_token(&query, &crate::domain::user_id::user_key(&last.user_id))
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn update_users(
        &self,
        request: Request<pb::UpdateUsersRequest>,
    ) -> Result<Response<pb::UpdateUsersResponse>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        bounded("change_id", &request.change_id, MAX_FILTER_LEN)?;
        let changes: Vec<ChangeItem> = request
            .changes
            .iter()
            .map(|c| {
                UserChange::parse(
                    &c.tenant_id,
                    &c.object_id,
                    c.name.as_deref(),
                    c.network_alias.as_deref(),
                    c.enabled,
                )
                .map(|change| UserChange {
                    deleted_in_directory: c.deleted_in_directory,
                    delete: c.delete,
                    ..change
                })
                .map_err(|e| (c.object_id.clone(), e))
            })
            .collect();
        let (outcomes, total_users) = self
            .registry
            .update_users(
                &actor,
                request.change_id.trim(),
                changes,
                request.dry_run,
                request.count_users,
                service_runtime::now_ms(),
            )
            .await?;
        Ok(Response::new(pb::UpdateUsersResponse {
            outcomes: outcomes
                .into_iter()
                .map(|o| pb::UserUpdateOutcome {
                    object_id: o.object_id,
                    kind: match o.kind {
                        UpdateKind::Updated => pb::UpdateKind::Updated,
                        UpdateKind::Unchanged => pb::UpdateKind::Unchanged,
                        UpdateKind::NotFound => pb::UpdateKind::NotFound,
                        UpdateKind::Failed => pb::UpdateKind::Failed,
                        UpdateKind::Deleted => pb::UpdateKind::Deleted,
                    }
                    .into(),
                    user_id: o.user_id,
                    changed: o.changed.into_iter().map(str::to_owned).collect(),
                    reason: o.reason,
                    enabled: o.enabled,
                })
                .collect(),
            total_users,
        }))
    }

    async fn rename_user(
        &self,
        request: Request<pb::RenameUserRequest>,
    ) -> Result<Response<pb::RenameUserResponse>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let user = self
            .registry
            .rename_user(
                &caller,
                &request.user_id,
                &request.new_user_id,
                service_runtime::now_ms(),
            )
            .await?;
        Ok(Response::new(pb::RenameUserResponse {
            user: Some(user.into()),
        }))
    }

    async fn set_users_enabled(
        &self,
        request: Request<pb::SetUsersEnabledRequest>,
    ) -> Result<Response<pb::SetUsersEnabledResponse>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let users = self
            .registry
            .set_users_enabled(
                &caller,
                &request.user_ids,
                request.enabled,
                service_runtime::now_ms(),
            )
            .await?;
        Ok(Response::new(pb::SetUsersEnabledResponse {
            users: users.into_iter().map(Into::into).collect(),
        }))
    }

    async fn list_companies(
        &self,
        _: Request<pb::ListCompaniesRequest>,
    ) -> Result<Response<pb::ListCompaniesResponse>, Status> {
        let companies = self.registry.list_companies().await?;
        Ok(Response::new(pb::ListCompaniesResponse {
            companies: companies.into_iter().map(Into::into).collect(),
        }))
    }

    async fn create_company(
        &self,
        request: Request<pb::CreateCompanyRequest>,
    ) -> Result<Response<pb::CreateCompanyResponse>, Status> {
        let company = request
            .into_inner()
            .company
            .ok_or_else(|| Error::invalid("company", "is required"))?;
        let company = Company::parse(&company.code, &company.name)?;
        self.registry
            .create_company(&company, service_runtime::now_ms())
            .await?;
        Ok(Response::new(pb::CreateCompanyResponse {
            company: Some(company.into()),
        }))
    }

    async fn list_roles(
        &self,
        _: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        let roles = self.registry.list_roles().await?;
        Ok(Response::new(pb::ListRolesResponse {
            roles: roles.into_iter().map(Into::into).collect(),
        }))
    }

    async fn assign_roles(
        &self,
        request: Request<pb::AssignRolesRequest>,
    ) -> Result<Response<pb::AssignRolesResponse>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let change = RoleChange {
            user_ids: request.user_ids,
            role_ids: request.role_ids,
            company: request.company,
        };
        let granted = self
            .registry
            .assign_roles(&caller, &change, service_runtime::now_ms())
            .await?;
        Ok(Response::new(pb::AssignRolesResponse { granted }))
    }

    async fn revoke_roles(
        &self,
        request: Request<pb::RevokeRolesRequest>,
    ) -> Result<Response<pb::RevokeRolesResponse>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let change = RoleChange {
            user_ids: request.user_ids,
            role_ids: request.role_ids,
            company: request.company,
        };
        let revoked = self
            .registry
            .revoke_roles(
                &caller,
                &change,
                request.all_sources,
                service_runtime::now_ms(),
            )
            .await?;
        Ok(Response::new(pb::RevokeRolesResponse { revoked }))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let viewer = viewer(&request);
        let request = request.into_inner();
        // What the page token is bound to: every filter of the request.
        let query = pb::ListAuditEventsRequest {
            page_token: String::new(),
            page_size: 0,
            ..request.clone()
        };
        let limit = page_size(
            "page_size",
            request.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        )?;
        let before: i64 = decode_page_token(&query, &request.page_token)?;
        bounded("user_id", &request.user_id, MAX_FILTER_LEN)?;
        bounded("action", &request.action, MAX_FILTER_LEN)?;
        bounded("via", &request.via, MAX_FILTER_LEN)?;
        let (events, next) = self
            .registry
            .list_audit_events(
                &viewer,
                &request.user_id,
                &request.action,
                &request.via,
                before,
                limit,
            )
            .await?;
        let next_page_token = next
            .map(|id| encode_page_token(&query, &id))
            .unwrap_or_default();
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(rule_id = %request.get_ref().rule_id, via = %request.get_ref().via))]
    async fn apply_rule_grants(
        &self,
        request: Request<pb::ApplyRuleGrantsRequest>,
    ) -> Result<Response<pb::ApplyRuleGrantsResponse>, Status> {
        let mut caller = caller(&request);
        let request = request.into_inner();
        bounded("via", &request.via, MAX_FILTER_LEN)?;
        bounded("tenant_id", &request.tenant_id, MAX_FILTER_LEN)?;
        if !request.via.trim().is_empty() {
            caller.request_id = request.via.trim().to_owned();
        }
        let rule = RuleGrants {
            rule_id: request.rule_id,
            role_id: request.role_id,
            company: request.company,
            tenant_id: request.tenant_id,
            grant: request.grant_object_ids,
            revoke: request.revoke_object_ids,
        };
        let changes = self
            .registry
            .apply_rule_grants(&caller, &rule, request.dry_run, service_runtime::now_ms())
            .await?;
        Ok(Response::new(pb::ApplyRuleGrantsResponse {
            changes: changes
                .into_iter()
                .map(|c| pb::RuleGrantChange {
                    object_id: c.object_id,
                    user_id: c.user_id,
                    granted: c.granted,
                })
                .collect(),
        }))
    }

    async fn register_role_rule(
        &self,
        request: Request<pb::RegisterRoleRuleRequest>,
    ) -> Result<Response<pb::RegisterRoleRuleResponse>, Status> {
        let principal = principal_of(&request).name;
        let request = request.into_inner();
        self.registry
            .register_rule(
                &principal,
                &request.rule_id,
                &request.role_id,
                &request.company,
                service_runtime::now_ms(),
            )
            .await?;
        Ok(Response::new(pb::RegisterRoleRuleResponse {}))
    }

    async fn retire_role_rule(
        &self,
        request: Request<pb::RetireRoleRuleRequest>,
    ) -> Result<Response<pb::RetireRoleRuleResponse>, Status> {
        self.registry
            .retire_rule(&request.into_inner().rule_id)
            .await?;
        Ok(Response::new(pb::RetireRoleRuleResponse {}))
    }

    type StreamRuleGrantsStream = HolderStream;

    async fn stream_rule_grants(
        &self,
        request: Request<pb::StreamRuleGrantsRequest>,
    ) -> Result<Response<Self::StreamRuleGrantsStream>, Status> {
        let rule_id = request.into_inner().rule_id;
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let registry = self.registry.clone();
        tokio::spawn(async move { registry.stream_rule_grant_holders(&rule_id, sender).await });
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            let batch = receiver.recv().await?;
            let message = batch
                .map_err(Status::from)
                .map(|holders| pb::StreamRuleGrantsResponse {
                    holders: holders
                        .into_iter()
                        .map(|(tenant_id, object_id)| pb::RuleGrantHolder {
                            tenant_id,
                            object_id,
                        })
                        .collect(),
                });
            Some((message, receiver))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
