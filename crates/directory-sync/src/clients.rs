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

    /// A round's changes to registry users (or, `dry_run`, what they would be), retried for
    /// up to `patience`.
    pub async fn update_users(
        &self,
        request: &registry_pb::UpdateUsersRequest,
        patience: Duration,
    ) -> Result<registry_pb::UpdateUsersResponse, Error> {
        retrying("user-registry", patience, || {
            let mut client = self.client.clone();
            let request = request.clone();
            async move { client.update_users(request).await }
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| Error::RegistryUnavailable(status.message().to_owned()))
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

    /// A select import made by a round, retried for up to `patience`.
    pub async fn import_selected(
        &self,
        request: &importer_pb::ImportSelectedRequest,
        patience: Duration,
    ) -> Result<importer_pb::ImportSelectedResponse, Error> {
        retrying("import-worker", patience, || {
            let mut client = self.client.clone();
            let request = request.clone();
            async move { client.import_selected(request).await }
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| Error::ImporterUnavailable(format!("auto-import: {}", status.message())))
    }

    /// Has import-worker reconcile the group-to-role rules as made through `via` (a run id),
    /// retried for up to `patience`.
    pub async fn reconcile_role_rules(
        &self,
        via: &str,
        dry_run: bool,
        patience: Duration,
    ) -> Result<registry_pb::RuleChanges, Error> {
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
        Ok(response.into_inner().changes.unwrap_or_default())
    }
}
