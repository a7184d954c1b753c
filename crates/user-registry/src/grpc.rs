//! The gRPC edge: converts protobuf messages to domain values and back, and maps errors once.

use proto::registry::v1 as pb;
use service_runtime::grpc::{decode_page_token, encode_page_token, page_size};
use tonic::{Request, Response, Status};

use crate::domain::user::{RawNewUser, parse_guid};
use crate::domain::{
    AccountType, Company, CompanyCode, ImportOutcome, NewUser, OutcomeKind, RegistryUser,
};
use crate::error::Error;
use crate::service::{ImportItem, Registry};
use crate::store::{ObjectKey, UserFilter};

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

fn unimplemented<T>(what: &'static str) -> Result<Response<T>, Status> {
    Err(Error::Unimplemented(what).into())
}

#[tonic::async_trait]
impl pb::registry_service_server::RegistryService for GrpcApi {
    #[tracing::instrument(skip_all, fields(import_id = %request.get_ref().import_id, users = request.get_ref().users.len()))]
    async fn import_users(
        &self,
        request: Request<pb::ImportUsersRequest>,
    ) -> Result<Response<pb::ImportUsersResponse>, Status> {
        let request = request.into_inner();
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
                &request.import_id,
                company,
                items,
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

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let user = match request.into_inner().key {
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
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user.into()),
            roles: Vec::new(),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let request = request.into_inner();
        if request.without_roles {
            return unimplemented("the without_roles filter");
        }
        let limit = page_size(
            "page_size",
            request.page_size,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        )?;
        let after: String = decode_page_token(&request.page_token)?;
        let filter = UserFilter {
            search: request.search.trim().to_owned(),
            company: match request.company.trim() {
                "" => None,
                code => Some(CompanyCode::parse(code)?),
            },
            enabled: request.enabled,
            account_type: account_type_from_pb(request.account_type),
            created_by_import: request.created_by_import,
        };
        let users = self.registry.list_users(&filter, &after, limit).await?;
        let next_page_token = match users.last() {
            Some(last) if users.len() == limit as usize => {
                encode_page_token(&crate::domain::user_id::user_key(&last.user_id))
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
        _: Request<pb::UpdateUsersRequest>,
    ) -> Result<Response<pb::UpdateUsersResponse>, Status> {
        unimplemented("UpdateUsers")
    }

    async fn rename_user(
        &self,
        _: Request<pb::RenameUserRequest>,
    ) -> Result<Response<pb::RenameUserResponse>, Status> {
        unimplemented("RenameUser")
    }

    async fn set_users_enabled(
        &self,
        _: Request<pb::SetUsersEnabledRequest>,
    ) -> Result<Response<pb::SetUsersEnabledResponse>, Status> {
        unimplemented("SetUsersEnabled")
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
        unimplemented("ListRoles")
    }

    async fn assign_roles(
        &self,
        _: Request<pb::AssignRolesRequest>,
    ) -> Result<Response<pb::AssignRolesResponse>, Status> {
        unimplemented("AssignRoles")
    }

    async fn revoke_roles(
        &self,
        _: Request<pb::RevokeRolesRequest>,
    ) -> Result<Response<pb::RevokeRolesResponse>, Status> {
        unimplemented("RevokeRoles")
    }

    async fn list_audit_events(
        &self,
        _: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        unimplemented("ListAuditEvents")
    }
}
