//! The edges to user-registry and import-worker: every call directory-sync makes to another
//! service, with its timeout, and for a round's writes, retries. Services start in any order,
//! so a round (the first one runs at start-up) retries a peer that is not answering yet, with
//! the shared retry policy (exponential backoff, full jitter, the peer's `RetryInfo` as a
//! floor), for a bounded time; every call a round makes carries its run id, so a retried one
//! reports rather than repeats.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use proto::importer::v1 as importer_pb;
use proto::importer::v1::importer_service_client::ImporterServiceClient;
use proto::registry::v1 as registry_pb;
use proto::registry::v1::registry_service_client::RegistryServiceClient;
use service_runtime::auth::{AuthedChannel, Outbound};
use service_runtime::grpc::{MAX_MESSAGE_BYTES, channel};
use service_runtime::retry::RetryPolicy;
use service_runtime::tls::ClientTls;

use crate::domain::{
    ImportKind, ImportOutcome, RuleChange, RuleChanges, UpdateKind, UpdateOutcome, UserChange,
};
use crate::error::Error;
use crate::store::imported::{FeedPosition, ImportChange};

/// Timeout of one call to the registry from a listing (the listing's caller waits).
const LISTING_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between two attempts of a round's call.
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// Calls `call` until it succeeds, fails with a status that retrying cannot help
/// (`service_runtime::error::is_retryable`), or `patience` has passed; answers the last
/// outcome. Only for idempotent calls. `service` names the peer in the logs.
async fn retrying<T, F, Fut>(
    service: &'static str,
    patience: Duration,
    call: F,
) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let policy = RetryPolicy {
        max_delay: MAX_PAUSE,
        ..RetryPolicy::patient(patience)
    };
    let retried = policy.run(
        call,
        service_runtime::error::is_retryable,
        service_runtime::error::retry_delay,
    );
    tracing::Instrument::instrument(retried, tracing::info_span!("peer", service)).await
}

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// user-registry, as directory-sync uses it.
#[derive(Clone)]
pub struct Registry {
    client: RegistryServiceClient<AuthedChannel>,
}

impl Registry {
    pub fn connect_lazy(url: &str, tls: &ClientTls, outbound: Outbound) -> anyhow::Result<Self> {
        let client = RegistryServiceClient::new(channel(url, tls, outbound)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self { client })
    }

    /// Which of these users of `tenant_id` the registry holds.
    pub async fn check_imported(
        &self,
        tenant_id: &str,
        object_ids: &[String],
    ) -> Result<HashSet<String>, Error> {
        let request = with_timeout(
            registry_pb::CheckImportedRequest {
                tenant_id: tenant_id.to_owned(),
                object_ids: object_ids.to_vec(),
            },
            LISTING_TIMEOUT,
        );
        let response = self
            .client
            .clone()
            .check_imported(request)
            .await
            .map_err(|status| Error::RegistryUnavailable(status.message().to_owned()))?;
        Ok(response
            .into_inner()
            .imported_object_ids
            .into_iter()
            .collect())
    }

    /// The registry's import feed after `after`: who became imported or was deleted, in
    /// commit order, at most `page_size`.
    pub async fn list_import_changes(
        &self,
        tenant_id: &str,
        after: &FeedPosition,
        page_size: u32,
    ) -> Result<Vec<ImportChange>, Error> {
        let request = with_timeout(
            registry_pb::ListImportChangesRequest {
                tenant_id: tenant_id.to_owned(),
                after_seq: u64::try_from(after.seq).unwrap_or(0),
                after_object_id: after.object_id.clone(),
                page_size,
            },
            LISTING_TIMEOUT,
        );
        Ok(self
            .client
            .clone()
            .list_import_changes(request)
            .await
            .map_err(|status| Error::RegistryUnavailable(status.message().to_owned()))?
            .into_inner()
            .changes
            .into_iter()
            .map(|c| ImportChange {
                seq: i64::try_from(c.seq).unwrap_or(i64::MAX),
                object_id: c.object_id,
                imported: c.imported,
            })
            .collect())
    }

    /// A round's changes to registry users (or, `dry_run`, what they would be), made as
    /// `change_id` (the run), retried for up to `patience`: one outcome per change, in order,
    /// and with `count_users` the registry's size.
    pub async fn update_users(
        &self,
        change_id: &str,
        changes: &[UserChange],
        dry_run: bool,
        count_users: bool,
        patience: Duration,
    ) -> Result<(Vec<UpdateOutcome>, u64), Error> {
        let request = registry_pb::UpdateUsersRequest {
            change_id: change_id.to_owned(),
            changes: changes.iter().map(change_to_pb).collect(),
            dry_run,
            count_users,
        };
        let response = retrying("user-registry", patience, || {
            let mut client = self.client.clone();
            let request = request.clone();
            async move { client.update_users(request).await }
        })
        .await
        .map_err(|status| Error::RegistryUnavailable(status.message().to_owned()))?
        .into_inner();
        let outcomes = response
            .outcomes
            .into_iter()
            .map(|o| UpdateOutcome {
                kind: match o.kind() {
                    registry_pb::UpdateKind::Updated => UpdateKind::Updated,
                    registry_pb::UpdateKind::Unchanged => UpdateKind::Unchanged,
                    registry_pb::UpdateKind::NotFound => UpdateKind::NotFound,
                    registry_pb::UpdateKind::Deleted => UpdateKind::Deleted,
                    registry_pb::UpdateKind::Failed | registry_pb::UpdateKind::Unspecified => {
                        UpdateKind::Failed
                    }
                },
                object_id: o.object_id,
                user_id: o.user_id,
                changed: o.changed,
                reason: o.reason,
                enabled: o.enabled,
            })
            .collect();
        Ok((outcomes, response.total_users))
    }
}

fn change_to_pb(change: &UserChange) -> registry_pb::UserChange {
    registry_pb::UserChange {
        tenant_id: change.tenant_id.clone(),
        object_id: change.object_id.clone(),
        name: change.name.clone(),
        network_alias: change.network_alias.clone(),
        enabled: change.enabled,
        deleted_in_directory: change.deleted_in_directory,
        delete: change.delete,
    }
}

/// import-worker, as directory-sync uses it (auto-import and group-to-role rules).
#[derive(Clone)]
pub struct Importer {
    client: ImporterServiceClient<AuthedChannel>,
}

impl Importer {
    pub fn connect_lazy(url: &str, tls: &ClientTls, outbound: Outbound) -> anyhow::Result<Self> {
        let client = ImporterServiceClient::new(channel(url, tls, outbound)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self { client })
    }

    /// A select import made by a round (`request_id` derived from it, so a retry reports
    /// rather than repeats), retried for up to `patience`: one outcome per user.
    pub async fn import_selected(
        &self,
        object_ids: Vec<String>,
        company: &str,
        dry_run: bool,
        request_id: String,
        patience: Duration,
    ) -> Result<Vec<ImportOutcome>, Error> {
        let request = importer_pb::ImportSelectedRequest {
            object_ids,
            company: company.to_owned(),
            dry_run,
            request_id,
            // A user gone from the mirror since the page was read is that user's outcome.
            all_or_nothing: false,
        };
        let response = retrying("import-worker", patience, || {
            let mut client = self.client.clone();
            let request = request.clone();
            async move { client.import_selected(request).await }
        })
        .await
        .map_err(|status| Error::ImporterUnavailable(format!("auto-import: {}", status.message())))?
        .into_inner();
        Ok(response
            .outcomes
            .into_iter()
            .map(|o| ImportOutcome {
                kind: match o.kind() {
                    registry_pb::OutcomeKind::Created => ImportKind::Created,
                    registry_pb::OutcomeKind::AlreadyPresent => ImportKind::AlreadyPresent,
                    registry_pb::OutcomeKind::Skipped => ImportKind::Skipped,
                    registry_pb::OutcomeKind::Failed | registry_pb::OutcomeKind::Unspecified => {
                        ImportKind::Failed
                    }
                },
                object_id: o.object_id,
                user_id: o.user_id,
                reason: o.reason,
                note: o.note,
            })
            .collect())
    }

    /// Has import-worker reconcile the group-to-role rules as made through `via` (a run id),
    /// retried for up to `patience`.
    pub async fn reconcile_role_rules(
        &self,
        via: &str,
        dry_run: bool,
        patience: Duration,
    ) -> Result<RuleChanges, Error> {
        let request = importer_pb::ReconcileRoleRulesRequest {
            via: via.to_owned(),
            dry_run,
        };
        let response = retrying("import-worker", patience, || {
            let mut client = self.client.clone();
            let request = request.clone();
            async move { client.reconcile_role_rules(request).await }
        })
        .await
        .map_err(|status| {
            Error::ImporterUnavailable(format!("role rules: {}", status.message()))
        })?;
        let changes = response.into_inner().changes.unwrap_or_default();
        Ok(RuleChanges {
            granted: changes.granted,
            revoked: changes.revoked,
            truncated: changes.truncated,
            changes: changes
                .changes
                .into_iter()
                .map(|c| RuleChange {
                    rule_id: c.rule_id,
                    role_id: c.role_id,
                    company: c.company,
                    object_id: c.object_id,
                    user_id: c.user_id,
                    granted: c.granted,
                })
                .collect(),
        })
    }
}
