//! After a sync round, the changes of users the registry holds flow to it (issue 8): the
//! display name, the alias after a UPN rename (members sign in with their UPN, guests with
//! their mail; the user id never changes), and the enabled state — disabled, soft-deleted and
//! hard-deleted users are disabled, restored users enabled again.
//!
//! Safety rail: the round's changes are first applied as a dry run to count the users they
//! would disable. More than `max_disable_count`, or more than `max_disable_share` of the
//! registry's users, and nothing is written: the run waits for approval. A round whose read
//! of the directory failed never gets here, so an outage disables nobody.

use std::collections::HashSet;

use proto::importer::v1 as importer_pb;
use proto::importer::v1::importer_service_client::ImporterServiceClient;
use proto::registry::v1 as registry_pb;
use proto::registry::v1::registry_service_client::RegistryServiceClient;

use crate::config::ProvisioningConfig;
use crate::domain::{AccountType, DeletionState, MirrorUser};
use crate::error::Error;
use crate::store;
use crate::sync::SyncContext;

/// Changes sent to the registry per call (its limit).
const PAGE: u32 = 1000;

/// What provisioning a round did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioned {
    /// Written: users updated in the registry, of which disabled.
    Applied { updated: u64, disabled: u64 },
    /// Nothing written: the round would disable too many users.
    Halted {
        would_disable: u64,
        total_users: u64,
    },
}

/// The registry change a mirror user's current state asks for; a user out of scope (in none
/// of the synced groups, when groups are configured) is disabled.
fn change_of(user: &MirrorUser, in_scope: bool) -> registry_pb::UserChange {
    let alias = match user.account_type {
        AccountType::Member => user.user_principal_name.clone(),
        AccountType::Guest => user.mail.clone(),
    };
    registry_pb::UserChange {
        tenant_id: user.tenant_id.clone(),
        object_id: user.object_id.clone(),
        name: (!user.display_name.is_empty()).then(|| user.display_name.clone()),
        network_alias: (!alias.is_empty()).then_some(alias),
        enabled: Some(
            user.account_enabled && user.deletion_state == DeletionState::Present && in_scope,
        ),
    }
}

/// One pass over the users `run_id` changed. A dry run sends every page and answers the
/// object ids whose registry user would change, with the users it would disable and the
/// registry's size; a real pass sends only the users in `only`.
async fn pass(
    ctx: &SyncContext,
    registry: &RegistryServiceClient<service_runtime::auth::AuthedChannel>,
    run_id: &str,
    only: Option<&HashSet<String>>,
) -> Result<(HashSet<String>, u64, u64), Error> {
    let dry_run = only.is_none();
    let (mut changing, mut disabled, mut total) = (HashSet::new(), 0, 0);
    let mut after = String::new();
    let mut first = true;
    loop {
        let page = {
            let mut conn = ctx.conn().await?;
            store::changed_in_run(
                &mut conn,
                &ctx.tenant_id,
                run_id,
                !ctx.groups.is_empty() && ctx.provisioning.disable_out_of_scope,
                &after,
                PAGE,
            )
            .await?
        };
        let Some(last) = page.last() else {
            break;
        };
        after = last.0.object_id.clone();
        let full_page = page.len() == PAGE as usize;
        let changes: Vec<registry_pb::UserChange> = page
            .iter()
            .filter(|(u, _)| only.is_none_or(|ids| ids.contains(&u.object_id)))
            .map(|(u, in_scope)| change_of(u, *in_scope))
            .collect();
        if !changes.is_empty() {
            let request = registry_pb::UpdateUsersRequest {
                change_id: run_id.to_owned(),
                changes,
                dry_run,
                count_users: dry_run && first,
            };
            first = false;
            let response = registry
                .clone()
                .update_users(request.clone())
                .await
                .map_err(|status| Error::RegistryUnavailable(status.message().to_owned()))?
                .into_inner();
            total = total.max(response.total_users);
            for (outcome, change) in response.outcomes.iter().zip(&request.changes) {
                if outcome.kind() != registry_pb::UpdateKind::Updated {
                    continue;
                }
                changing.insert(change.object_id.clone());
                if outcome.changed.iter().any(|c| c == "enabled") && change.enabled == Some(false) {
                    disabled += 1;
                }
            }
        }
        if !full_page {
            break;
        }
    }
    Ok((changing, disabled, total))
}

/// Imports the users `run_id` saw for the first time (members of the synced groups, when
/// groups are configured) through import-worker, into `company`. Each page is one select
/// import whose request id is derived from the run, so a retried round reports, rather than
/// repeats, what it did. Answers how many users were created.
pub async fn auto_import(
    ctx: &SyncContext,
    importer: &ImporterServiceClient<service_runtime::auth::AuthedChannel>,
    company: &str,
    run_id: &str,
) -> Result<u64, Error> {
    let mut created = 0;
    let mut after = String::new();
    for page_no in 0.. {
        let ids = {
            let mut conn = ctx.conn().await?;
            store::new_in_run(
                &mut conn,
                &ctx.tenant_id,
                run_id,
                !ctx.groups.is_empty(),
                &after,
                PAGE,
            )
            .await?
        };
        let Some(last) = ids.last() else {
            break;
        };
        after = last.clone();
        let full_page = ids.len() == PAGE as usize;
        let request = importer_pb::ImportSelectedRequest {
            object_ids: ids,
            company: company.to_owned(),
            dry_run: false,
            request_id: format!("sync-{run_id}-{page_no}"),
        };
        let response = importer
            .clone()
            .import_selected(request)
            .await
            .map_err(|status| {
                Error::RegistryUnavailable(format!("import-worker: {}", status.message()))
            })?
            .into_inner();
        created += response.counts.map_or(0, |c| c.created);
        if !full_page {
            break;
        }
    }
    if created > 0 {
        tracing::info!(run_id, created, company, "new directory users imported");
    }
    Ok(created)
}

/// Provisions the changes of `run_id` into the registry, unless they would disable too many
/// users and the run is not `approved`.
pub async fn provision(
    ctx: &SyncContext,
    registry: &RegistryServiceClient<service_runtime::auth::AuthedChannel>,
    config: &ProvisioningConfig,
    run_id: &str,
    approved: bool,
) -> Result<Provisioned, Error> {
    // The dry run finds the users whose registry entry changes; only they are sent again.
    let (changing, would_disable, total_users) = pass(ctx, registry, run_id, None).await?;
    if !approved {
        let by_share = (total_users as f64 * config.max_disable_share).floor() as u64;
        if would_disable > config.max_disable_count || would_disable > by_share {
            tracing::warn!(
                run_id,
                would_disable,
                total_users,
                max_count = config.max_disable_count,
                max_share = config.max_disable_share,
                "sync round halted: it would disable too many users; approve or reject it"
            );
            return Ok(Provisioned::Halted {
                would_disable,
                total_users,
            });
        }
    }
    if changing.is_empty() {
        return Ok(Provisioned::Applied {
            updated: 0,
            disabled: 0,
        });
    }
    let (updated, disabled, _) = pass(ctx, registry, run_id, Some(&changing)).await?;
    let updated = updated.len() as u64;
    tracing::info!(
        run_id,
        updated,
        disabled,
        "round's changes applied to the registry"
    );
    Ok(Provisioned::Applied { updated, disabled })
}
