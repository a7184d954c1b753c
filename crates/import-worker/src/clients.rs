//! The edges to directory-sync and user-registry: gRPC calls with retries for the idempotent
//! ones, converting to and from the domain's types.

use std::time::Duration;

use proto::directory::v1 as directory_pb;
use proto::directory::v1::directory_service_client::DirectoryServiceClient;
use proto::registry::v1 as registry_pb;
use proto::registry::v1::registry_service_client::RegistryServiceClient;
use service_runtime::auth::{AuthedChannel, Outbound};
use service_runtime::grpc::{MAX_MESSAGE_BYTES, channel, retry};
use service_runtime::tls::ClientTls;

use crate::domain::{
    AccountType, DirectoryUser, Outcome, OutcomeKind, RegistryCandidate, RoleRule, RuleChange,
};
use crate::error::Error;

/// Attempts of an idempotent call to another service.
const ATTEMPTS: u32 = 4;
/// Timeout of one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// Names the person a registry write is made for, whom the registry records in its audit
/// trail (honoured only from service identities).
fn on_behalf_of<T>(actor: &str, mut request: tonic::Request<T>) -> tonic::Request<T> {
    if let Ok(value) = actor.parse() {
        request
            .metadata_mut()
            .insert(service_runtime::auth::ON_BEHALF_OF_HEADER, value);
    }
    request
}

/// directory-sync, as import-worker uses it.
#[derive(Debug, Clone)]
pub struct Directory {
    client: DirectoryServiceClient<AuthedChannel>,
}

impl Directory {
    pub fn connect_lazy(url: &str, tls: &ClientTls, outbound: Outbound) -> anyhow::Result<Self> {
        let client = DirectoryServiceClient::new(channel(url, tls, outbound)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self { client })
    }

    /// Looks users up by object id; returns those found and the ids the directory lacks.
    pub async fn get_users(
        &self,
        object_ids: &[String],
    ) -> Result<(Vec<DirectoryUser>, Vec<String>), Error> {
        let message = directory_pb::GetUsersRequest {
            object_ids: object_ids.to_vec(),
            user_principal_names: Vec::new(),
        };
        let response = retry(ATTEMPTS, || {
            let mut client = self.client.clone();
            let message = message.clone();
            async move { client.get_users(request(message)).await }
        })
        .await
        .map_err(Error::upstream("directory-sync"))?
        .into_inner();
        Ok((
            response.users.into_iter().map(directory_user).collect(),
            response.not_found,
        ))
    }
}

impl Directory {
    /// Streams the users in scope (every user, or a synced group's members) after
    /// `after_object_id`, in object id order, `batch_size` per message.
    pub async fn stream_users(
        &self,
        group_id: Option<&str>,
        after_object_id: &str,
        batch_size: u32,
    ) -> Result<tonic::Streaming<directory_pb::StreamUsersResponse>, Error> {
        let scope = group_id.map(|id| directory_pb::Scope {
            scope: Some(directory_pb::scope::Scope::GroupId(id.to_owned())),
        });
        let message = directory_pb::StreamUsersRequest {
            scope,
            batch_size,
            after_object_id: after_object_id.to_owned(),
        };
        // No overall timeout: a stream of a large tenant runs as long as its reader keeps up.
        let response = retry(ATTEMPTS, || {
            let mut client = self.client.clone();
            let message = message.clone();
            async move { client.stream_users(tonic::Request::new(message)).await }
        })
        .await
        .map_err(Error::upstream("directory-sync"))?;
        Ok(response.into_inner())
    }

    /// Fails unless directory-sync can scope to this group (it is synced).
    pub async fn check_group(&self, group_id: &str) -> Result<(), Error> {
        let message = directory_pb::ListUsersRequest {
            group_id: group_id.to_owned(),
            page_size: 1,
            not_imported_only: Some(false),
            ..Default::default()
        };
        retry(ATTEMPTS, || {
            let mut client = self.client.clone();
            let message = message.clone();
            async move { client.list_users(request(message)).await }
        })
        .await
        .map_err(Error::upstream("directory-sync"))?;
        Ok(())
    }
}

/// Converts a directory-sync user to the domain's form.
pub fn directory_user(user: directory_pb::DirectoryUser) -> DirectoryUser {
    let account_type = match user.account_type() {
        directory_pb::AccountType::Guest => AccountType::Guest,
        _ => AccountType::Member,
    };
    let deleted = matches!(
        user.deletion_state(),
        directory_pb::DeletionState::SoftDeleted | directory_pb::DeletionState::HardDeleted
    );
    DirectoryUser {
        tenant_id: user.tenant_id,
        object_id: user.object_id,
        user_principal_name: user.user_principal_name,
        mail: user.mail,
        display_name: user.display_name,
        account_enabled: user.account_enabled,
        account_type,
        deleted,
    }
}

/// user-registry, as import-worker uses it.
#[derive(Debug, Clone)]
pub struct Registry {
    client: RegistryServiceClient<AuthedChannel>,
}

impl Registry {
    pub fn connect_lazy(url: &str, tls: &ClientTls, outbound: Outbound) -> anyhow::Result<Self> {
        let client = RegistryServiceClient::new(channel(url, tls, outbound)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self { client })
    }

    /// True when the registry knows the company (codes compare case-insensitively).
    pub async fn company_exists(&self, code: &str) -> Result<bool, Error> {
        let response = retry(ATTEMPTS, || {
            let mut client = self.client.clone();
            async move {
                client
                    .list_companies(request(registry_pb::ListCompaniesRequest {}))
                    .await
            }
        })
        .await
        .map_err(Error::upstream("user-registry"))?
        .into_inner();
        Ok(response
            .companies
            .iter()
            .any(|c| c.code.eq_ignore_ascii_case(code)))
    }

    /// Imports one batch (at most the registry's per-call limit) under `import_id`. The call
    /// is idempotent, so it is retried: a replay reports what the first attempt did.
    /// Imports on behalf of `actor` (the principal who started the import), whom the
    /// registry records in its audit trail. A `private` job's users and events are shown by
    /// the registry to `actor` only.
    pub async fn import_users(
        &self,
        actor: &str,
        import_id: &str,
        company: &str,
        private: bool,
        users: &[RegistryCandidate],
        dry_run: bool,
    ) -> Result<Vec<Outcome>, Error> {
        let message = registry_pb::ImportUsersRequest {
            import_id: import_id.to_owned(),
            company: company.to_owned(),
            users: users.iter().map(new_user).collect(),
            dry_run,
            private,
        };
        let response = retry(ATTEMPTS, || {
            let mut client = self.client.clone();
            let message = message.clone();
            let request = on_behalf_of(actor, request(message));
            async move { client.import_users(request).await }
        })
        .await
        .map_err(Error::upstream("user-registry"))?
        .into_inner();
        Ok(response.outcomes.into_iter().map(outcome).collect())
    }
}

/// One call's worth of a rule's grant changes.
#[derive(Debug, Clone)]
pub struct RuleGrantCall<'a> {
    pub rule: &'a RoleRule,
    pub tenant_id: &'a str,
    pub grant: Vec<String>,
    pub revoke: Vec<String>,
    pub via: &'a str,
    pub dry_run: bool,
}

impl Registry {
    /// Writes and removes grants of one rule (retried: a replay changes nothing more). Answers
    /// the changes made.
    pub async fn apply_rule_grants(
        &self,
        actor: &str,
        call: RuleGrantCall<'_>,
    ) -> Result<Vec<RuleChange>, Error> {
        let message = registry_pb::ApplyRuleGrantsRequest {
            rule_id: call.rule.rule_id.clone(),
            role_id: call.rule.role_id.clone(),
            company: call.rule.company.clone(),
            tenant_id: call.tenant_id.to_owned(),
            grant_object_ids: call.grant,
            revoke_object_ids: call.revoke,
            via: call.via.to_owned(),
            dry_run: call.dry_run,
        };
        let response = retry(ATTEMPTS, || {
            let mut client = self.client.clone();
            let message = message.clone();
            let request = on_behalf_of(actor, request(message));
            async move { client.apply_rule_grants(request).await }
        })
        .await
        .map_err(Error::upstream("user-registry"))?
        .into_inner();
        Ok(response
            .changes
            .into_iter()
            .map(|c| RuleChange {
                rule_id: call.rule.rule_id.clone(),
                role_id: call.rule.role_id.clone(),
                company: call.rule.company.clone(),
                object_id: c.object_id,
                user_id: c.user_id,
                granted: c.granted,
            })
            .collect())
    }

    /// Registers `rule` with the registry, which then accepts its grants (and only its role
    /// in its company); idempotent.
    pub async fn register_rule(&self, rule: &RoleRule) -> Result<(), Error> {
        let message = registry_pb::RegisterRoleRuleRequest {
            rule_id: rule.rule_id.clone(),
            role_id: rule.role_id.clone(),
            company: rule.company.clone(),
        };
        retry(ATTEMPTS, || {
            let mut client = self.client.clone();
            let message = message.clone();
            async move { client.register_role_rule(request(message)).await }
        })
        .await
        .map_err(Error::upstream("user-registry"))?;
        Ok(())
    }

    /// Retires `rule_id` at the registry: it may revoke its grants, never grant again.
    pub async fn retire_rule(&self, rule_id: &str) -> Result<(), Error> {
        let message = registry_pb::RetireRoleRuleRequest {
            rule_id: rule_id.to_owned(),
        };
        retry(ATTEMPTS, || {
            let mut client = self.client.clone();
            let message = message.clone();
            async move { client.retire_role_rule(request(message)).await }
        })
        .await
        .map_err(Error::upstream("user-registry"))?;
        Ok(())
    }

    /// Every user holding a grant of `rule_id`, as (tenant, object id), read to the end (a
    /// failure part-way fails the whole).
    pub async fn rule_grant_holders(&self, rule_id: &str) -> Result<Vec<(String, String)>, Error> {
        let message = registry_pb::StreamRuleGrantsRequest {
            rule_id: rule_id.to_owned(),
        };
        let mut stream = retry(ATTEMPTS, || {
            let mut client = self.client.clone();
            let message = message.clone();
            // No overall timeout: the stream runs as long as its reader keeps up.
            async move {
                client
                    .stream_rule_grants(tonic::Request::new(message))
                    .await
            }
        })
        .await
        .map_err(Error::upstream("user-registry"))?
        .into_inner();
        let mut holders = Vec::new();
        while let Some(batch) = stream
            .message()
            .await
            .map_err(Error::upstream("user-registry"))?
        {
            holders.extend(
                batch
                    .holders
                    .into_iter()
                    .map(|h| (h.tenant_id, h.object_id)),
            );
        }
        Ok(holders)
    }
}

fn new_user(user: &RegistryCandidate) -> registry_pb::NewUser {
    let account_type = match user.account_type {
        AccountType::Member => registry_pb::AccountType::Member,
        AccountType::Guest => registry_pb::AccountType::Guest,
    };
    registry_pb::NewUser {
        tenant_id: user.tenant_id.clone(),
        object_id: user.object_id.clone(),
        network_alias: user.network_alias.clone(),
        network_domain: user.network_domain.clone(),
        email: user.email.clone(),
        name: user.name.clone(),
        enabled: user.enabled,
        account_type: account_type.into(),
    }
}

fn outcome(outcome: registry_pb::ImportOutcome) -> Outcome {
    let kind = match outcome.kind() {
        registry_pb::OutcomeKind::Created => OutcomeKind::Created,
        registry_pb::OutcomeKind::AlreadyPresent => OutcomeKind::AlreadyPresent,
        registry_pb::OutcomeKind::Skipped => OutcomeKind::Skipped,
        registry_pb::OutcomeKind::Failed | registry_pb::OutcomeKind::Unspecified => {
            OutcomeKind::Failed
        }
    };
    Outcome {
        object_id: outcome.object_id,
        kind,
        user_id: outcome.user_id,
        reason: outcome.reason,
        note: outcome.note,
    }
}

/// Converts an outcome to the registry's message (import-worker answers with that type).
pub fn outcome_to_pb(outcome: Outcome) -> registry_pb::ImportOutcome {
    let kind = match outcome.kind {
        OutcomeKind::Created => registry_pb::OutcomeKind::Created,
        OutcomeKind::AlreadyPresent => registry_pb::OutcomeKind::AlreadyPresent,
        OutcomeKind::Skipped => registry_pb::OutcomeKind::Skipped,
        OutcomeKind::Failed => registry_pb::OutcomeKind::Failed,
    };
    registry_pb::ImportOutcome {
        object_id: outcome.object_id,
        kind: kind.into(),
        user_id: outcome.user_id,
        reason: outcome.reason,
        note: outcome.note,
    }
}
